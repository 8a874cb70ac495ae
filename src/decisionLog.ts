/**
 * The decisions the panel lists: the snapshot's recent history merged with live `vramRelay/decision` events,
 * without duplicates and bounded. A sidecar restart starts its numbering again, so identity is seq + time.
 */

import type { DecisionEvent } from '../sidecar/core/types';

export class DecisionLog {
  private events: DecisionEvent[] = [];
  private readonly seen = new Set<string>();

  constructor(private readonly max = 500) {}

  /** Adds events; returns those that were new, in time order. */
  add(events: readonly DecisionEvent[]): DecisionEvent[] {
    const fresh: DecisionEvent[] = [];
    for (const event of events) {
      const key = `${event.seq}@${event.at}`;
      if (this.seen.has(key)) continue;
      this.seen.add(key);
      fresh.push(event);
    }
    if (fresh.length === 0) return fresh;
    this.events.push(...fresh);
    this.events.sort((a, b) => a.at - b.at || a.seq - b.seq);
    if (this.events.length > this.max) {
      for (const dropped of this.events.splice(0, this.events.length - this.max)) this.seen.delete(`${dropped.seq}@${dropped.at}`);
    }
    return fresh.sort((a, b) => a.at - b.at || a.seq - b.seq);
  }

  all(): DecisionEvent[] {
    return [...this.events];
  }
}
