/** System RAM figures, for the probes where the GPU shares RAM (Apple silicon) or there is no GPU. */

import { cpus, freemem, totalmem } from 'node:os';
import * as si from 'systeminformation';
import type { Bytes } from '../core/types';

export interface SystemMemory {
  total: Bytes;
  /** What new allocations can get without swapping: free plus reclaimable caches. */
  available: Bytes;
}

/**
 * systeminformation's `available` counts reclaimable caches as free on every platform (on macOS `os.freemem()`
 * counts only never-used pages and reads a busy machine as nearly full); os figures are the fallback.
 */
export async function readSystemMemory(): Promise<SystemMemory> {
  try {
    const mem = await si.mem();
    if (mem.total > 0 && Number.isFinite(mem.available)) return { total: mem.total, available: mem.available };
  } catch {
    // Fall through to the os figures.
  }
  return { total: totalmem(), available: freemem() };
}

export function cpuModel(): string {
  return cpus()[0]?.model.trim() || 'CPU';
}
