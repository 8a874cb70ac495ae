/**
 * The arbiter's waiting line: interactive before normal before batch, first come first served within a priority.
 * A sorted array: queues hold tens to hundreds of jobs, where a binary-search insert beats any heap.
 */

import type { JobPriority } from './types';

export const PRIORITY_RANK: Record<JobPriority, number> = { interactive: 0, normal: 1, batch: 2 };

interface Entry<T> {
  item: T;
  rank: number;
  seq: number;
}

export class JobQueue<T extends { id: string; priority: JobPriority }> {
  private entries: Entry<T>[] = [];
  private seq = 0;

  get length(): number {
    return this.entries.length;
  }

  /**
   * Queues `item` behind every job of the same or a higher priority and returns its place number. A job that
   * goes back into the queue passes its old number (`seq`) to keep its place.
   */
  push(item: T, seq?: number): number {
    const entry: Entry<T> = { item, rank: PRIORITY_RANK[item.priority], seq: seq ?? ++this.seq };
    let lo = 0;
    let hi = this.entries.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const e = this.entries[mid];
      if (e.rank < entry.rank || (e.rank === entry.rank && e.seq < entry.seq)) lo = mid + 1;
      else hi = mid;
    }
    this.entries.splice(lo, 0, entry);
    return entry.seq;
  }

  /** Removes the job with this id; returns it, or undefined when it is not queued. */
  remove(id: string): T | undefined {
    const index = this.entries.findIndex((e) => e.item.id === id);
    if (index < 0) return undefined;
    return this.entries.splice(index, 1)[0].item;
  }

  has(id: string): boolean {
    return this.entries.some((e) => e.item.id === id);
  }

  /** The first job, in queue order, that `accept` takes. */
  find(accept: (item: T) => boolean): T | undefined {
    for (const e of this.entries) if (accept(e.item)) return e.item;
    return undefined;
  }

  some(accept: (item: T) => boolean): boolean {
    return this.find(accept) !== undefined;
  }

  /** Jobs in queue order. */
  toArray(): T[] {
    return this.entries.map((e) => e.item);
  }

  [Symbol.iterator](): Iterator<T> {
    return this.toArray()[Symbol.iterator]();
  }
}
