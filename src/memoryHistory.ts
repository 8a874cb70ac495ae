/**
 * The last minutes of memory use per device, sampled from snapshots, for the budget panel's timeline. Kept by
 * the extension so a panel opened late still shows the recent past.
 */

import type { MemorySample } from '../media/panelMessages';
import type { SidecarSnapshot } from '../sidecar/protocol';

export type { DeviceSample, MemorySample } from '../media/panelMessages';

export const HISTORY_WINDOW_MS = 10 * 60_000;

export function sampleOf(snapshot: SidecarSnapshot): MemorySample {
  return {
    at: snapshot.at,
    devices: snapshot.devices.map((d) => ({
      id: d.id,
      total: d.total,
      used: d.used,
      ours: (snapshot.breakdown[d.id] ?? [])
        .filter((p) => p.kind === 'llm' || p.kind === 'image' || p.kind === 'compute')
        .reduce((sum, p) => sum + p.bytes, 0),
    })),
  };
}

export class MemoryHistory {
  private samples: MemorySample[] = [];

  constructor(
    private readonly windowMs = HISTORY_WINDOW_MS,
    private readonly maxSamples = 1200,
  ) {}

  add(snapshot: SidecarSnapshot): MemorySample {
    const sample = sampleOf(snapshot);
    const last = this.samples[this.samples.length - 1];
    if (last && sample.at <= last.at) this.samples[this.samples.length - 1] = sample;
    else this.samples.push(sample);
    const cutoff = sample.at - this.windowMs;
    let drop = 0;
    while (drop < this.samples.length && this.samples[drop].at < cutoff) drop++;
    if (this.samples.length - drop > this.maxSamples) drop = this.samples.length - this.maxSamples;
    if (drop > 0) this.samples = this.samples.slice(drop);
    return sample;
  }

  all(): MemorySample[] {
    return [...this.samples];
  }

  clear(): void {
    this.samples = [];
  }
}
