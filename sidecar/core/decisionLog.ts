/**
 * The bounded history of the arbiter's decisions: a ring buffer that numbers each event (`seq`, strictly
 * increasing, never reused) so that a client that reconnects can ask for what it missed (`sinceSeq`).
 */

import type { DecisionEvent, Millis } from './types';

export type NewDecision = Omit<DecisionEvent, 'seq' | 'at'> & { at?: Millis };

export interface DecisionQuery {
  /** Only the decisions about this job. */
  jobId?: string;
  /** Only decisions with a `seq` above this one. */
  sinceSeq?: number;
  /** At most this many, the newest ones. */
  limit?: number;
}

export class DecisionLog {
  private readonly ring: (DecisionEvent | undefined)[];
  /** Index of the slot the next event goes into. */
  private next = 0;
  private count = 0;
  private seq = 0;

  constructor(
    readonly capacity = 1000,
    private readonly now: () => Millis = Date.now,
  ) {
    if (!Number.isInteger(capacity) || capacity < 1) {
      throw new RangeError(`The decision history needs room for at least one event, not ${capacity}.`);
    }
    this.ring = new Array(capacity);
  }

  /** Numbers and stores one decision; returns it as stored. The oldest is dropped when the history is full. */
  add(decision: NewDecision): DecisionEvent {
    const event: DecisionEvent = { ...decision, seq: ++this.seq, at: decision.at ?? this.now() };
    this.ring[this.next] = event;
    this.next = (this.next + 1) % this.capacity;
    this.count = Math.min(this.count + 1, this.capacity);
    return event;
  }

  /** The `seq` of the newest decision (0 before the first). */
  get lastSeq(): number {
    return this.seq;
  }

  get size(): number {
    return this.count;
  }

  /** Decisions oldest first, filtered by the query. */
  list(query: DecisionQuery = {}): DecisionEvent[] {
    const out: DecisionEvent[] = [];
    const since = query.sinceSeq ?? 0;
    // Walk newest to oldest so that `sinceSeq` and `limit` can stop early.
    for (let i = 0; i < this.count; i++) {
      const event = this.ring[(this.next - 1 - i + this.capacity) % this.capacity]!;
      if (event.seq <= since) break;
      if (query.jobId !== undefined && event.jobId !== query.jobId) continue;
      out.push(event);
      if (query.limit !== undefined && out.length >= query.limit) break;
    }
    return out.reverse();
  }

  /** The newest `n` decisions, oldest first. */
  recent(n: number): DecisionEvent[] {
    return this.list({ limit: n });
  }

  clear(): void {
    this.ring.fill(undefined);
    this.next = 0;
    this.count = 0;
  }
}
