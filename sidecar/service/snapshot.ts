/**
 * The monitor's view: the arbiter's state plus the latest device readings, the effective free memory of each
 * device and the stacked-bar breakdown (what we hold, other programs, the margin, what is left).
 */

import type { ArbiterSnapshot } from '../core/arbiter';
import { effectiveFree, otherProgramsUse } from '../core/effectiveFree';
import type { Bytes, DeviceKind, DeviceSnapshot } from '../core/types';
import type { SidecarSnapshot } from '../protocol';

export function deviceSourceOf(kind: DeviceKind): SidecarSnapshot['deviceSource'] {
  if (kind === 'simulated') return 'simulated';
  if (kind === 'cpu') return 'cpu-only';
  return 'real';
}

export interface SnapshotInput {
  arbiter: ArbiterSnapshot;
  /** The latest reading of every device the probe sees. */
  devices: DeviceSnapshot[];
  deviceKind: DeviceKind;
  marginBytes: Bytes;
  /** The device the arbiter plans for. */
  deviceId: string;
  /** Pids of our engine processes: a device that lists processes then tells our use from other programs'. */
  ourPids?: number[];
  at: number;
}

export function composeSnapshot(input: SnapshotInput): SidecarSnapshot {
  const { arbiter, marginBytes, deviceId, ourPids } = input;
  // The arbiter's own reading may be newer than the last poll for its device.
  const devices = input.devices.map((d) => (arbiter.device && arbiter.device.id === d.id && arbiter.device.at > d.at ? arbiter.device : d));
  if (arbiter.device && !devices.some((d) => d.id === arbiter.device!.id)) devices.unshift(arbiter.device);

  const free: SidecarSnapshot['effectiveFree'] = {};
  const breakdown: SidecarSnapshot['breakdown'] = {};
  for (const device of devices) {
    const ours = device.id === deviceId;
    const accounted = ours ? arbiter.accounted : 0;
    const effective = effectiveFree(device, accounted, marginBytes, ourPids);
    free[device.id] = effective;
    const parts: SidecarSnapshot['breakdown'][string] = ours ? arbiter.breakdown.map((p) => ({ ...p })) : [];
    const others = otherProgramsUse(device, accounted, ourPids);
    if (others > 0) parts.push({ label: 'other programs', bytes: others, kind: 'other' });
    const heldByUs = parts.reduce((sum, p) => sum + p.bytes, 0);
    const margin = Math.min(marginBytes, Math.max(0, device.total - heldByUs));
    parts.push({ label: 'safety margin', bytes: margin, kind: 'margin' });
    parts.push({ label: 'free', bytes: effective, kind: 'free' });
    breakdown[device.id] = parts;
  }

  return {
    deviceSource: deviceSourceOf(input.deviceKind),
    devices,
    effectiveFree: free,
    safetyMargin: marginBytes,
    llm: arbiter.llm,
    image: arbiter.image,
    queue: arbiter.queue,
    running: arbiter.running,
    recentDecisions: arbiter.recentDecisions,
    breakdown,
    at: input.at,
  };
}
