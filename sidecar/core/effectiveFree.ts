/**
 * Effective free memory: what the planner may promise to new work on one device.
 *
 * The driver's free figure lags behind real allocations and frees (memory-facts.md: Ollama takes
 * min(reported free, total - predicted use) for this reason). We hold our own account of what our workers hold,
 * so we take the lower of the two views: the driver's, and total minus our account minus other programs' use.
 * Right after we allocate, the driver still shows the memory free but our account does not; right after we free,
 * our account shows it back but the driver does not yet, and we wait for the driver.
 */

import type { Bytes, DeviceSnapshot } from './types';

/**
 * @param accounted bytes our own workers hold (or are about to hold) on this device, by our account.
 * @param margin bytes always kept free on top of every estimate (the safety margin setting).
 * @param ourPids pids of our workers. With them, and a driver that lists processes, other programs' use is the
 *   sum of the processes that are not ours; otherwise it is whatever the driver counts as used beyond our account
 *   (which, while the driver has not yet seen an allocation of ours, hides other programs' use behind it: pass the
 *   pids where the driver lists processes).
 */
export function effectiveFree(snapshot: DeviceSnapshot, accounted: Bytes, margin: Bytes, ourPids?: number[]): Bytes {
  const othersUse = otherProgramsUse(snapshot, accounted, ourPids);
  const byAccount = snapshot.total - accounted - othersUse;
  return Math.max(0, Math.min(snapshot.free, byAccount) - margin);
}

/** Memory held by programs that are not ours, as far as the snapshot tells. */
export function otherProgramsUse(snapshot: DeviceSnapshot, accounted: Bytes, ourPids?: number[]): Bytes {
  if (snapshot.processes && ourPids) {
    const ours = new Set(ourPids);
    let sum = 0;
    for (const process of snapshot.processes) if (!ours.has(process.pid)) sum += process.used;
    return sum;
  }
  return Math.max(0, snapshot.used - accounted);
}
