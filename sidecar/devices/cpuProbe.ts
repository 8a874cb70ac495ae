/**
 * No GPU found: plans are made for system RAM (llama.cpp and sd.cpp both run on the CPU). The device is labelled
 * as such so that no one mistakes the figures for VRAM.
 */

import type { DeviceSnapshot, Millis } from '../core/types';
import { PollingProbe } from './pollingProbe';
import { type SystemMemory, cpuModel, readSystemMemory } from './systemMemory';

export function cpuSnapshot(memory: SystemMemory, model: string, at: Millis): DeviceSnapshot {
  const free = Math.max(0, Math.min(memory.total, memory.available));
  return {
    id: 'cpu',
    name: `${model} (no GPU: system RAM)`,
    kind: 'cpu',
    total: memory.total,
    used: memory.total - free,
    free,
    unified: true,
    at,
  };
}

export interface CpuProbeOptions {
  readMemory?: () => Promise<SystemMemory>;
  model?: string;
  now?: () => Millis;
}

export class CpuProbe extends PollingProbe {
  readonly kind = 'cpu' as const;

  constructor(private readonly options: CpuProbeOptions = {}) {
    super();
  }

  async sample(): Promise<DeviceSnapshot[]> {
    const memory = await (this.options.readMemory ?? readSystemMemory)();
    return [cpuSnapshot(memory, this.options.model ?? cpuModel(), (this.options.now ?? Date.now)())];
  }
}
