/**
 * A discrete-event clock for the workload simulation: `sleep` registers a timer and nothing else; the driver
 * (`run`) lets every pending promise callback and immediate run, then moves virtual time to the earliest timer and
 * fires it. An hour of simulated work takes a fraction of a second, and the outcome depends on the seed only.
 *
 * Unlike the self-pumping clock of the arbiter tests (test/unit/arbiterHarness.ts), time here moves only inside
 * `run`, which also tells a finished simulation from a stalled one (no timer left, work still pending).
 */

import type { Clock } from '../../sidecar/core/ports';
import type { Millis } from '../../sidecar/core/types';

interface Timer {
  due: Millis;
  seq: number;
  fire: () => void;
}

export type RunOutcome = 'done' | 'stalled' | 'timeLimit';

export class DiscreteEventClock implements Clock {
  private t: Millis;
  private seq = 0;
  /** Sorted by due time, then by registration order. */
  private timers: Timer[] = [];
  private fired = 0;

  constructor(start: Millis = 0) {
    this.t = start;
  }

  now(): Millis {
    return this.t;
  }

  sleep(ms: Millis, signal?: AbortSignal): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason ?? new Error('aborted'));
      const timer: Timer = {
        due: this.t + Math.max(0, Number.isFinite(ms) ? ms : 0),
        seq: ++this.seq,
        fire: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        },
      };
      const onAbort = () => {
        const index = this.timers.indexOf(timer);
        if (index >= 0) this.timers.splice(index, 1);
        reject(signal?.reason ?? new Error('aborted'));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.insert(timer);
    });
  }

  /** Timers waiting to fire. */
  get pending(): number {
    return this.timers.length;
  }

  /** Timers fired so far (a measure of the simulation's work). */
  get events(): number {
    return this.fired;
  }

  /**
   * Runs the simulation until `done()` holds after the world has settled, no timer is left (`stalled`), or the next
   * timer is beyond `until` (`timeLimit`).
   */
  async run(done: () => boolean, until: Millis = Infinity): Promise<RunOutcome> {
    for (;;) {
      await settle();
      if (done()) return 'done';
      const next = this.timers[0];
      if (!next) return 'stalled';
      if (next.due > until) return 'timeLimit';
      this.timers.shift();
      this.t = Math.max(this.t, next.due);
      this.fired++;
      next.fire();
    }
  }

  private insert(timer: Timer): void {
    // Binary search for the first timer due later (equal due times keep their order).
    let lo = 0;
    let hi = this.timers.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.timers[mid].due <= timer.due) lo = mid + 1;
      else hi = mid;
    }
    this.timers.splice(lo, 0, timer);
  }
}

/**
 * Lets everything that is ready run: promise callbacks run before the next immediate, and a second round catches
 * work that the first scheduled with setImmediate.
 */
export async function settle(rounds = 2): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}
