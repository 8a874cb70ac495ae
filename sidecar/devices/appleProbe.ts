/**
 * Apple silicon: the GPU allocates from system RAM (unified memory), up to the share macOS lets it wire.
 *
 * That share is Metal's `recommendedMaxWorkingSetSize`, which Node cannot query. Published readings of it: about
 * 2/3 of RAM on 16 GB machines (10.67 GiB on an M4, 11453 MB logged by llama.cpp on an M1), about 3/4 or a little
 * more on large ones (107.5 GiB of 128 GiB, measured on two machines). We take 2/3 up to 36 GiB of RAM and 3/4
 * above, which errs low; a `iogpu.wired_limit_mb` set by the user replaces it, since Metal follows that setting.
 * Free memory is the lower of what RAM has available and that working set.
 */

import * as si from 'systeminformation';
import type { Bytes, DeviceSnapshot, Millis } from '../core/types';
import { GiB, MiB } from '../core/types';
import { PollingProbe } from './pollingProbe';
import { runTool } from './runTool';
import { type SystemMemory, readSystemMemory } from './systemMemory';

export function appleGpuWorkingSet(totalRam: Bytes, wiredLimitMiB?: number): Bytes {
  if (wiredLimitMiB !== undefined && wiredLimitMiB > 0) return Math.min(totalRam, wiredLimitMiB * MiB);
  return Math.floor(totalRam * (totalRam > 36 * GiB ? 3 / 4 : 2 / 3));
}

export function appleSnapshot(memory: SystemMemory, workingSet: Bytes, name: string, at: Millis): DeviceSnapshot {
  const free = Math.max(0, Math.min(memory.available, workingSet));
  return {
    id: 'apple:0',
    name,
    kind: 'apple',
    total: workingSet,
    used: workingSet - free,
    free,
    unified: true,
    at,
  };
}

/** `sysctl -n iogpu.wired_limit_mb`: 0 (the default share) or the user's limit in MiB. */
export function parseWiredLimit(stdout: string): number | undefined {
  const value = Number(stdout.trim());
  return Number.isInteger(value) && value > 0 ? value : undefined;
}

export interface AppleProbeOptions {
  readMemory?: () => Promise<SystemMemory>;
  /** The GPU's name; default from systeminformation's graphics controllers. */
  gpuName?: () => Promise<string>;
  wiredLimitMiB?: () => Promise<number | undefined>;
  now?: () => Millis;
}

export class AppleProbe extends PollingProbe {
  readonly kind = 'apple' as const;
  private fixed?: Promise<{ name: string; wiredLimitMiB?: number }>;

  constructor(private readonly options: AppleProbeOptions = {}) {
    super();
  }

  async sample(): Promise<DeviceSnapshot[]> {
    // The name and the wired limit do not change while we run: ask once.
    this.fixed ??= Promise.all([
      (this.options.gpuName ?? appleGpuName)(),
      (this.options.wiredLimitMiB ?? readWiredLimit)(),
    ]).then(([name, wiredLimitMiB]) => ({ name, wiredLimitMiB }));
    const [memory, fixed] = await Promise.all([(this.options.readMemory ?? readSystemMemory)(), this.fixed]);
    const workingSet = appleGpuWorkingSet(memory.total, fixed.wiredLimitMiB);
    return [appleSnapshot(memory, workingSet, fixed.name, (this.options.now ?? Date.now)())];
  }

  protected override minIntervalMs(): Millis {
    // systeminformation runs vm_stat on macOS for each reading.
    return 500;
  }
}

async function appleGpuName(): Promise<string> {
  try {
    const { controllers } = await si.graphics();
    const apple = controllers.find((c) => /apple/i.test(c.vendor) || /apple/i.test(c.model));
    if (apple?.model) return `${apple.model} (unified memory)`;
  } catch {
    // A name is a nicety.
  }
  return 'Apple GPU (unified memory)';
}

async function readWiredLimit(): Promise<number | undefined> {
  const result = await runTool('sysctl', ['-n', 'iogpu.wired_limit_mb'], { timeoutMs: 2000 });
  return result.ok ? parseWiredLimit(result.stdout) : undefined;
}
