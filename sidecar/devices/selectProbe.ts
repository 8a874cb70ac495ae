/**
 * Picks where VRAM figures come from: the labelled simulated demo device, or the first real source that answers
 * (nvidia-smi, rocm-smi, Apple silicon), else system RAM. Every tool gets a time limit so that a wedged driver
 * cannot hold up the sidecar's start, and the result says in words what was found and why.
 */

import * as si from 'systeminformation';
import type { Bytes, DeviceKind, DeviceProbe, DeviceSnapshot, Millis } from '../core/types';
import { MiB } from '../core/types';
import { AmdProbe, ROCM_SMI_ARGS, amdSnapshot, parseRocmSmiOutput } from './amdProbe';
import { AppleProbe } from './appleProbe';
import { CpuProbe } from './cpuProbe';
import { NvidiaProbe, nvidiaGpuQueryArgs, nvidiaSnapshot, parseNvidiaGpuCsv } from './nvidiaProbe';
import { runTool } from './runTool';
import { SIM_DEVICE_ENV, SimulatedDevice, type SimulatedDeviceOptions } from './simulatedDevice';

export type DeviceSetting = 'auto' | 'simulated';

export interface SelectProbeOptions {
  /** Limit for each tool asked during detection (default 3 s). */
  timeoutMs?: Millis;
  /** Environment for the tools (PATH decides where they are found); default the sidecar's. */
  env?: NodeJS.ProcessEnv;
  platform?: NodeJS.Platform;
  arch?: string;
  nvidiaCommand?: string;
  rocmCommand?: string;
  /** `simulated`: the device to use. Default: the shared one named by VRAM_RELAY_SIM_DEVICE, else a new one. */
  simulated?: SimulatedDevice;
  /** `simulated`: capacity of a new device (default 12 GiB). */
  simulatedCapacity?: Bytes;
  simulatedConfig?: Partial<SimulatedDeviceOptions>;
  /** Names of the graphics controllers present, for the reason when no GPU tool answers. */
  listGraphics?: () => Promise<string[]>;
}

export interface ProbeSelection {
  probe: DeviceProbe;
  kind: DeviceKind;
  /** One or two sentences: what was found, and what was tried first when the choice fell further down. */
  reason: string;
  /** The readings taken while detecting (empty for a source that was not asked yet). */
  snapshots: DeviceSnapshot[];
  /** The simulated device, when that is the source. */
  simulated?: SimulatedDevice;
}

export async function selectProbe(setting: DeviceSetting, options: SelectProbeOptions = {}): Promise<ProbeSelection> {
  if (setting === 'simulated') return selectSimulated(options);

  const timeoutMs = options.timeoutMs ?? 3000;
  const env = options.env;
  const nvidiaCommand = options.nvidiaCommand ?? 'nvidia-smi';
  const rocmCommand = options.rocmCommand ?? 'rocm-smi';
  const platform = options.platform ?? process.platform;
  const arch = options.arch ?? process.arch;

  // Both tools are asked at once so that two slow ones cost one time limit, not two.
  const [nvidia, amd] = await Promise.all([
    runTool(nvidiaCommand, nvidiaGpuQueryArgs(), { timeoutMs, env }),
    platform === 'darwin' ? null : runTool(rocmCommand, ROCM_SMI_ARGS, { timeoutMs, env }),
  ]);
  const tried: string[] = [];
  const now = Date.now();

  if (nvidia.ok) {
    const readings = parseNvidiaGpuCsv(nvidia.stdout);
    if (readings.length > 0) {
      const snapshots = readings.map((r) => nvidiaSnapshot(r, now));
      return {
        probe: new NvidiaProbe({ command: nvidiaCommand, env, timeoutMs: Math.max(timeoutMs, 5000) }),
        kind: 'nvidia',
        reason: `nvidia-smi found ${describe(snapshots)}.`,
        snapshots,
      };
    }
    tried.push(`nvidia-smi answered but listed no GPU with memory figures`);
  } else {
    tried.push(nvidia.message);
  }

  if (amd?.ok) {
    const readings = parseRocmSmiOutput(amd.stdout);
    if (readings.length > 0) {
      const snapshots = readings.map((r) => amdSnapshot(r, now));
      return {
        probe: new AmdProbe({ command: rocmCommand, env, timeoutMs: Math.max(timeoutMs, 5000) }),
        kind: 'amd',
        reason: `rocm-smi found ${describe(snapshots)} (${tried.join('; ')}).`,
        snapshots,
      };
    }
    tried.push('rocm-smi answered but listed no GPU with VRAM figures');
  } else if (amd) {
    tried.push(amd.message);
  }

  if (platform === 'darwin' && arch === 'arm64') {
    const probe = new AppleProbe();
    const snapshots = await probe.sample().catch(() => []);
    const figure = snapshots[0] ? ` (${gib(snapshots[0].total)} GiB usable by the GPU)` : '';
    return {
      probe,
      kind: 'apple',
      reason: `Apple silicon: the GPU uses unified memory${figure}, taken as the share of RAM macOS lets the GPU wire (${tried.join('; ')}).`,
      snapshots,
    };
  }

  const probe = new CpuProbe();
  const snapshots = await probe.sample().catch(() => []);
  const controllers = await withTimeout((options.listGraphics ?? listGraphics)(), timeoutMs).catch(() => [] as string[]);
  const seen = controllers.length > 0 ? ` Graphics seen: ${controllers.join(', ')}; install its driver tools (nvidia-smi or rocm-smi) to use it.` : '';
  return {
    probe,
    kind: 'cpu',
    reason: `No GPU found: planning for system RAM on the CPU (${tried.join('; ')}).${seen}`,
    snapshots,
  };
}

function selectSimulated(options: SelectProbeOptions): ProbeSelection {
  const env = options.env ?? process.env;
  const shared = options.simulated ? null : SimulatedDevice.fromEnv(env);
  const device =
    options.simulated ?? shared ?? new SimulatedDevice({ ...options.simulatedConfig, capacity: options.simulatedCapacity ?? 12 * 1024 * MiB });
  const snapshot = device.snapshot();
  const where = shared ? ` shared through ${SIM_DEVICE_ENV}=${env[SIM_DEVICE_ENV]}` : '';
  return {
    probe: device.probe(),
    kind: 'simulated',
    reason: `Simulated demo device (${gib(snapshot.total)} GiB)${where}: no real GPU memory is measured or used.`,
    snapshots: [snapshot],
    simulated: device,
  };
}

function describe(snapshots: DeviceSnapshot[]): string {
  const list = snapshots.map((s) => `${s.name} (${gib(s.total)} GiB, ${gib(s.free)} GiB free)`).join(', ');
  return `${snapshots.length} GPU${snapshots.length === 1 ? '' : 's'}: ${list}`;
}

function gib(bytes: Bytes): string {
  return (bytes / (1024 * MiB)).toFixed(1);
}

async function listGraphics(): Promise<string[]> {
  const { controllers } = await si.graphics();
  return controllers.map((c) => [c.vendor, c.model].filter(Boolean).join(' ').trim()).filter((name) => name.length > 0);
}

function withTimeout<T>(promise: Promise<T>, ms: Millis): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        clearTimeout(timer);
        reject(error instanceof Error ? error : new Error(String(error)));
      },
    );
  });
}
