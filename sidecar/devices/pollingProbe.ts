/**
 * watch() for probes that can only be asked (rocm-smi, systeminformation): one sample per interval, never two
 * at once, so a slow tool delays readings instead of piling up processes.
 */

import type { DeviceKind, DeviceProbe, DeviceSnapshot, Millis } from '../core/types';

export abstract class PollingProbe implements DeviceProbe {
  abstract readonly kind: DeviceKind;
  private readonly stops = new Set<() => void>();

  abstract sample(): Promise<DeviceSnapshot[]>;

  /** The sample used while watching; a probe may use a cheaper source than sample() here. */
  protected watchSample(): Promise<DeviceSnapshot[]> {
    return this.sample();
  }

  /** The shortest interval this probe polls at, whatever is asked (a tool that costs a process per call). */
  protected minIntervalMs(): Millis {
    return 100;
  }

  watch(intervalMs: Millis, onSample: (snapshots: DeviceSnapshot[]) => void, onError?: (error: Error) => void): () => void {
    let stopped = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const interval = Math.max(this.minIntervalMs(), intervalMs);
    const tick = async () => {
      const started = Date.now();
      try {
        const snapshots = await this.watchSample();
        if (!stopped) onSample(snapshots);
      } catch (error) {
        if (!stopped) onError?.(error instanceof Error ? error : new Error(String(error)));
      }
      if (!stopped) timer = setTimeout(tick, Math.max(0, interval - (Date.now() - started)));
    };
    void tick();
    const stop = () => {
      stopped = true;
      if (timer) clearTimeout(timer);
      this.stops.delete(stop);
    };
    this.stops.add(stop);
    return stop;
  }

  dispose(): void {
    for (const stop of [...this.stops]) stop();
  }
}
