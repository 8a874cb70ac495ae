/**
 * What every policy run shares: the world, the trace's arrivals delivered at their times, one record per job, and
 * the end of the run (every job ended, or the simulation stalled / ran past its limit: what is left is lost).
 */

import { World } from './world';
import { sharedPromptTokens, type Arrival, type ImageArrival, type LlmArrival, type Trace } from './trace';
import type { SdBuild } from './truth';
import type { RunOutcome } from './virtualClock';
import type { Bytes, Millis } from '../../sidecar/core/types';

export type PolicyId = 'relay' | 'bothResident' | 'unloadPerImage' | 'staticReservation' | 'keepAlive' | 'oracle';

/**
 * `blank`: the user got a gray image. `lost`: the job never ended. `superseded`: a completion the editor cancelled
 * because the user asked the next one (typed on) before it was answered.
 */
export type JobOutcome = 'done' | 'failed' | 'blank' | 'lost' | 'superseded';

export interface JobRecord {
  id: string;
  kind: 'llm' | 'image';
  at: Millis;
  endedAt?: Millis;
  outcome: JobOutcome;
  /** LLM requests: compute time with every layer on the GPU and the GPU to itself (what is not waiting). */
  idealMs?: Millis;
  /** An inline completion (the editor cancels it when the next one is asked). */
  completion?: boolean;
  message?: string;
}

export interface PolicyRun {
  policy: PolicyId;
  budget: Bytes;
  records: JobRecord[];
  /** Weight loads of the LLM onto the GPU after the start. */
  llmReloads: number;
  peakUsed: Bytes;
  /** Image runs repeated with a safer plan (VRAM Relay's recovery). */
  retries: number;
  outcome: RunOutcome;
  /** Virtual ms of the last job's end. */
  makespanMs: Millis;
  /** Timers the simulation fired (its size). */
  events: number;
  notes: string[];
}

/** Extra virtual time allowed after the last arrival before what is left counts as lost. */
const DRAIN_LIMIT_MS = 6 * 3600_000;

export class Session {
  readonly world: World;
  private readonly records = new Map<string, JobRecord>();
  private open: number;
  private readonly aborts = new Map<string, AbortController>();
  /** The last completion delivered: the editor cancels it when the next one is asked. */
  private lastCompletion: string | null = null;
  readonly notes: string[] = [];

  constructor(
    readonly trace: Trace,
    sdBuild: SdBuild = 'current',
  ) {
    this.world = new World(trace, sdBuild);
    this.open = trace.jobs.length;
    // Ideal: every layer on the GPU, the GPU to itself, and the context holding the request before's prompt.
    let before: LlmArrival | null = null;
    const ideal = (job: LlmArrival) => {
      const ms = this.world.llm.requestMs(job, this.world.llm.meta.blockCount + 1, sharedPromptTokens(before, job));
      before = job;
      return ms;
    };
    for (const job of trace.jobs) {
      this.records.set(job.id, { id: job.id, kind: job.kind, at: job.at, outcome: 'lost', ...(job.kind === 'llm' ? { idealMs: ideal(job), ...(job.task === 'completion' ? { completion: true } : {}) } : {}) });
    }
  }

  /**
   * Calls `onArrival` with each job at its arrival time. As VS Code does with inline completions, a completion not
   * yet answered is cancelled when the next one is asked (the user typed on or moved): it ends `superseded` and its
   * signal aborts, whatever the policy.
   */
  deliver(onArrival: (job: Arrival) => void): void {
    void (async () => {
      for (const job of this.trace.jobs) {
        const wait = job.at - this.world.clock.now();
        if (wait > 0) await this.world.clock.sleep(wait);
        if (job.kind === 'llm' && job.task === 'completion') {
          if (this.lastCompletion) this.supersede(this.lastCompletion);
          this.lastCompletion = job.id;
        }
        onArrival(job);
      }
    })();
  }

  /** Aborts when the job is cancelled (a superseded completion); policies pass it to what serves the job. */
  signal(id: string): AbortSignal {
    return this.abortFor(id).signal;
  }

  private abortFor(id: string): AbortController {
    let controller = this.aborts.get(id);
    if (!controller) this.aborts.set(id, (controller = new AbortController()));
    return controller;
  }

  /** A queue for LLM requests that drops those the editor cancelled while they waited in it. */
  requestQueue(): WaitQueue<LlmArrival> {
    return new WaitQueue<LlmArrival>((job) => this.isOpen(job.id));
  }

  /** Whether the job still waits for an answer (it has not ended, nor been cancelled). */
  isOpen(id: string): boolean {
    const record = this.records.get(id);
    return record !== undefined && record.endedAt === undefined;
  }

  private supersede(id: string): void {
    if (!this.isOpen(id)) return;
    this.end(id, 'superseded');
    this.abortFor(id).abort(new Error('superseded by the next completion'));
  }

  /** Records how a job ended (the first word counts). */
  end(id: string, outcome: Exclude<JobOutcome, 'lost'>, message?: string): void {
    const record = this.records.get(id);
    if (!record || record.endedAt !== undefined) return;
    record.endedAt = this.world.clock.now();
    record.outcome = outcome;
    if (message !== undefined) record.message = message;
    this.open--;
  }

  get pending(): number {
    return this.open;
  }

  /** Runs the simulation until every job has ended (or it cannot go on) and gathers the figures. */
  async finish(policy: PolicyId, extra: { llmReloads: () => number; retries?: () => number }): Promise<PolicyRun> {
    const lastArrival = this.trace.jobs.at(-1)?.at ?? 0;
    const outcome = await this.world.clock.run(() => this.open === 0, lastArrival + DRAIN_LIMIT_MS);
    const records = [...this.records.values()];
    if (outcome !== 'done') this.notes.push(`simulation ${outcome} with ${this.open} job(s) not ended: counted as lost`);
    return {
      policy,
      budget: this.trace.budget,
      records,
      llmReloads: extra.llmReloads(),
      peakUsed: this.world.peakUsed,
      retries: extra.retries?.() ?? 0,
      outcome,
      makespanMs: Math.max(0, ...records.map((r) => r.endedAt ?? 0)),
      events: this.world.clock.events,
      notes: this.notes,
    };
  }
}

/** A first-in first-out queue whose `take` waits for an item. Items no longer `live` are dropped unseen. */
export class WaitQueue<T> {
  private items: T[] = [];
  private readonly takers: ((item: T) => void)[] = [];

  constructor(private readonly live: (item: T) => boolean = () => true) {}

  push(item: T): void {
    const taker = this.takers.shift();
    if (taker) taker(item);
    else this.items.push(item);
  }

  take(): Promise<T> {
    this.prune();
    const item = this.items.shift();
    if (item !== undefined) return Promise.resolve(item);
    return new Promise((resolve) => this.takers.push(resolve));
  }

  get length(): number {
    this.prune();
    return this.items.length;
  }

  peek(): T | undefined {
    this.prune();
    return this.items[0];
  }

  private prune(): void {
    this.items = this.items.filter(this.live);
  }
}

/**
 * One GPU user at a time, LLM requests first: the lock of policies that never let the LLM and an image job share
 * the device.
 */
export class GpuLock {
  private held = false;
  private readonly waiting: { llm: boolean; grant: () => void }[] = [];

  acquire(llm: boolean): Promise<() => void> {
    return new Promise((resolve) => {
      const grant = () => {
        this.held = true;
        resolve(() => this.release());
      };
      if (!this.held) return grant();
      // LLM requests go before queued image jobs; each kind first come, first served.
      const index = llm ? this.waiting.findIndex((w) => !w.llm) : -1;
      if (index >= 0) this.waiting.splice(index, 0, { llm, grant });
      else this.waiting.push({ llm, grant });
    });
  }

  private release(): void {
    this.held = false;
    this.waiting.shift()?.grant();
  }
}

/** Waits for a predicate over shared state; whoever changes that state calls `notify`. */
export class Condition {
  private waiters: { predicate: () => boolean; resolve: () => void }[] = [];

  wait(predicate: () => boolean): Promise<void> {
    if (predicate()) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ predicate, resolve }));
  }

  notify(): void {
    const ready = this.waiters.filter((w) => w.predicate());
    this.waiters = this.waiters.filter((w) => !ready.includes(w));
    for (const w of ready) w.resolve();
  }
}

export function isImage(job: Arrival): job is ImageArrival {
  return job.kind === 'image';
}
