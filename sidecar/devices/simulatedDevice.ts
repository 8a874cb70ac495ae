/**
 * A simulated GPU: a capacity, an allocation granularity, other programs' use that changes over time, a driver
 * whose free figure lags (and may lie), and allocations that fail exactly when they do not fit, the way
 * cudaMalloc does. Used by the tests, the benchmarks, the sd.cpp stand-in (another process, through a shared
 * directory) and by users as the labelled `simulated` demo device. No real memory is used.
 */

import type { Clock } from '../core/ports';
import { systemClock } from '../core/ports';
import type { Bytes, DeviceProbe, DeviceSnapshot, GpuProcessUse, Millis } from '../core/types';
import { MiB } from '../core/types';
import {
  type AllocationRecord,
  type DeviceFile,
  type DeviceStore,
  type DeviceView,
  MemoryDeviceStore,
  SharedDeviceStore,
} from './sharedDeviceDir';

/** Child processes given this variable (a directory) allocate from that shared simulated device. */
export const SIM_DEVICE_ENV = 'VRAM_RELAY_SIM_DEVICE';

export const DEFAULT_SIM_GRANULARITY: Bytes = 2 * MiB;

/** Thrown by `allocate` when the request does not fit, with the wording CUDA uses so log parsers see an OOM. */
export class SimulatedOutOfMemoryError extends Error {
  constructor(
    /** Bytes the device tried to allocate (the request rounded up to the granularity). */
    readonly requested: Bytes,
    /** Bytes that were really free at that moment. */
    readonly free: Bytes,
    detail?: string,
  ) {
    super(`CUDA error: out of memory (tried to allocate ${mib(requested)} MiB, ${mib(free)} MiB free)${detail ? `: ${detail}` : ''}`);
    this.name = 'SimulatedOutOfMemoryError';
  }
}

export interface OtherUseStep {
  /** Milliseconds after the device was created. */
  atMs: Millis;
  /** Other programs' use from then on. */
  bytes: Bytes;
}

export interface SimulatedDeviceConfig {
  id: string;
  name: string;
  capacity: Bytes;
  /** Allocation sizes round up to a multiple of this (default 2 MiB, as CUDA's allocator pages). */
  granularity: Bytes;
  /** The reported free figure is the one of this many milliseconds ago (default 0). */
  driverLagMs: Millis;
  /** Other programs' use now. */
  otherUse: Bytes;
  /** The reported free figure is inflated by this much (a driver that lies; default 0). */
  lieBytes: Bytes;
  /** Largest single allocation (Vulkan drivers cap it at 2 to 4 GB); none when absent. */
  maxAllocation?: Bytes;
  /** Other programs' use over time, applied from the clock (for benchmarks and arbiter tests). */
  otherUseSchedule?: OtherUseStep[];
}

export type SimulatedDeviceOptions = Partial<SimulatedDeviceConfig> & { capacity: Bytes };

export class SimulatedDevice {
  private nextId = 1;
  private readonly store: DeviceStore;

  /** An in-memory device private to this process (the store form is what createShared/openShared use). */
  constructor(
    config: SimulatedDeviceOptions | DeviceStore,
    private readonly clock: Clock = systemClock,
  ) {
    this.store = isStore(config) ? config : new MemoryDeviceStore(deviceFile(config, clock.now()));
  }

  /** Creates (or replaces the description of) a device in `dir` that other processes can open. */
  static createShared(dir: string, config: SimulatedDeviceOptions, clock: Clock = systemClock): SimulatedDevice {
    return new SimulatedDevice(SharedDeviceStore.create(dir, deviceFile(config, clock.now())), clock);
  }

  /** Opens a device another process created in `dir`. All processes must use the same clock (the system one). */
  static openShared(dir: string, clock: Clock = systemClock): SimulatedDevice {
    return new SimulatedDevice(SharedDeviceStore.open(dir), clock);
  }

  /** The device named by `VRAM_RELAY_SIM_DEVICE`, or null when the variable is not set. */
  static fromEnv(env: NodeJS.ProcessEnv = process.env, clock?: Clock): SimulatedDevice | null {
    const dir = env[SIM_DEVICE_ENV];
    return dir ? SimulatedDevice.openShared(dir, clock) : null;
  }

  get shared(): boolean {
    return this.store.shared;
  }

  /** The directory of a shared device. */
  get dir(): string | undefined {
    return this.store instanceof SharedDeviceStore ? this.store.dir : undefined;
  }

  /** The configuration as it is now (other programs' use and the lie included). */
  config(): SimulatedDeviceConfig {
    return this.transact((view, now) => {
      const d = view.device;
      return {
        id: d.id,
        name: d.name,
        capacity: d.capacity,
        granularity: d.granularity,
        driverLagMs: d.driverLagMs,
        otherUse: otherUseAt(d, now),
        lieBytes: d.lieBytes,
        ...(d.maxAllocation !== undefined ? { maxAllocation: d.maxAllocation } : {}),
      };
    });
  }

  /**
   * Allocates `bytes` (rounded up to the granularity) for `owner` and returns the allocation id. Throws
   * SimulatedOutOfMemoryError exactly when the rounded size exceeds the memory really free, or the largest
   * single allocation. Owners are process ids as strings when the device is shared (`String(process.pid)`).
   */
  allocate(owner: string, bytes: Bytes, label?: string): string {
    if (!Number.isFinite(bytes) || bytes < 0) {
      throw new RangeError(`Cannot allocate ${bytes} bytes: give a size of zero or more bytes.`);
    }
    return this.transact((view, now) => {
      const d = view.device;
      const size = Math.ceil(bytes / d.granularity) * d.granularity;
      const free = trueFreeOf(view, now);
      if (d.maxAllocation !== undefined && size > d.maxAllocation) {
        throw new SimulatedOutOfMemoryError(size, free, `larger than the largest single allocation of ${mib(d.maxAllocation)} MiB`);
      }
      if (size > free) throw new SimulatedOutOfMemoryError(size, free);
      const id = this.store.shared ? `${view.ownLedger}-${this.nextId++}-${randomSuffix()}` : `a${this.nextId++}`;
      const record: AllocationRecord = { id, owner, bytes: size, at: now };
      if (label !== undefined) record.label = label;
      view.ledgers.get(view.ownLedger)!.push(record);
      return id;
    });
  }

  /** Frees one allocation (of any process, on a shared device). Returns false when it was not held. */
  release(id: string): boolean {
    return this.transact((view, now) => {
      for (const records of view.ledgers.values()) {
        const record = records.find((r) => r.id === id && r.releasedAt === undefined);
        if (record) {
          record.releasedAt = now;
          return true;
        }
      }
      return false;
    });
  }

  /** Frees everything `owner` holds; returns the bytes freed. */
  releaseOwner(owner: string): Bytes {
    return this.transact((view, now) => {
      let freed = 0;
      for (const records of view.ledgers.values()) {
        for (const record of records) {
          if (record.owner === owner && record.releasedAt === undefined) {
            record.releasedAt = now;
            freed += record.bytes;
          }
        }
      }
      return freed;
    });
  }

  /** Bytes held now by `owner`, or by all owners (other programs' use excluded). */
  usage(owner?: string): Bytes {
    return this.transact((view) => {
      let sum = 0;
      for (const record of liveRecords(view)) if (owner === undefined || record.owner === owner) sum += record.bytes;
      return sum;
    });
  }

  /** Sets other programs' use from now on (and drops the rest of any schedule). */
  setOtherUse(bytes: Bytes): void {
    if (!Number.isFinite(bytes) || bytes < 0) throw new RangeError(`Other programs' use must be zero or more bytes, not ${bytes}.`);
    this.transact((view, now) => {
      const changes = view.device.otherUseChanges.filter((c) => c.at <= now);
      changes.push({ at: now, bytes });
      view.device.otherUseChanges = changes;
    });
  }

  /**
   * Plans other programs' use from now on: each step applies `atMs` after this call. Replaces what was planned
   * beyond now (for benchmarks and tests of other programs' use growing mid-job).
   */
  scheduleOtherUse(steps: OtherUseStep[]): void {
    for (const step of steps) {
      if (!(step.atMs >= 0) || !(step.bytes >= 0)) throw new RangeError('Schedule steps need atMs and bytes of zero or more.');
    }
    this.transact((view, now) => {
      const changes = view.device.otherUseChanges.filter((c) => c.at <= now);
      const planned = [...steps].sort((a, b) => a.atMs - b.atMs).map((step) => ({ at: now + step.atMs, bytes: step.bytes }));
      view.device.otherUseChanges = [...changes, ...planned];
    });
  }

  /** Makes the reported free figure larger than the truth by `bytes` (0: an honest driver). */
  setLie(bytes: Bytes): void {
    if (!Number.isFinite(bytes) || bytes < 0) throw new RangeError(`The lie must be zero or more bytes, not ${bytes}.`);
    this.transact((view) => {
      view.device.lieBytes = bytes;
    });
  }

  /** Memory really free now: what the next allocation is checked against. */
  trueFree(): Bytes {
    return this.transact((view, now) => trueFreeOf(view, now));
  }

  /**
   * What a driver would report now: the free figure (and the per-process list) as they were `driverLagMs` ago,
   * the free figure inflated by the lie. Processes are listed per owner; a numeric owner is read as its pid.
   */
  snapshot(): DeviceSnapshot {
    return this.transact((view, now) => {
      const d = view.device;
      const seenAt = now - d.driverLagMs;
      const others = otherUseAt(d, seenAt);
      const byProcess = new Map<string, GpuProcessUse>();
      let ours = 0;
      for (const [ledger, records] of view.ledgers) {
        for (const r of records) {
          if (r.at > seenAt || (r.releasedAt !== undefined && r.releasedAt <= seenAt)) continue;
          ours += r.bytes;
          const pid = ownerPid(r.owner) ?? (this.store.shared ? Number(ledger) : 0);
          const key = `${pid}\u0000${r.owner}`;
          const entry = byProcess.get(key) ?? { pid, name: r.owner, used: 0 };
          entry.used += r.bytes;
          byProcess.set(key, entry);
        }
      }
      const processes = [...byProcess.values()];
      if (others > 0) processes.push({ pid: 0, name: 'other programs (simulated)', used: others });
      const free = clamp(d.capacity - ours - others + d.lieBytes, 0, d.capacity);
      const snapshot: DeviceSnapshot = {
        id: d.id,
        name: d.name,
        kind: 'simulated',
        total: d.capacity,
        used: d.capacity - free,
        free,
        unified: false,
        processes,
        at: now,
      };
      if (d.maxAllocation !== undefined) snapshot.maxAllocation = d.maxAllocation;
      return snapshot;
    });
  }

  /** A DeviceProbe over this device (kind `simulated`). */
  probe(): DeviceProbe {
    return new SimulatedDeviceProbe(this);
  }

  private transact<T>(fn: (view: DeviceView, now: Millis) => T): T {
    const now = this.clock.now();
    return this.store.transact(now, (view) => {
      prune(view, now);
      const result = fn(view, now);
      prune(view, now); // With no lag, what was just released leaves no trace.
      return result;
    });
  }
}

class SimulatedDeviceProbe implements DeviceProbe {
  readonly kind = 'simulated' as const;
  private readonly timers = new Set<ReturnType<typeof setInterval>>();

  constructor(private readonly device: SimulatedDevice) {}

  async sample(): Promise<DeviceSnapshot[]> {
    return [this.device.snapshot()];
  }

  watch(intervalMs: number, onSample: (snapshots: DeviceSnapshot[]) => void, onError?: (error: Error) => void): () => void {
    const tick = () => {
      try {
        onSample([this.device.snapshot()]);
      } catch (error) {
        onError?.(error instanceof Error ? error : new Error(String(error)));
      }
    };
    const timer = setInterval(tick, Math.max(1, intervalMs));
    this.timers.add(timer);
    queueMicrotask(tick);
    return () => {
      clearInterval(timer);
      this.timers.delete(timer);
    };
  }

  dispose(): void {
    for (const timer of this.timers) clearInterval(timer);
    this.timers.clear();
  }
}

function deviceFile(config: SimulatedDeviceOptions, createdAt: Millis): DeviceFile {
  const capacity = config.capacity;
  if (!Number.isFinite(capacity) || capacity <= 0) {
    throw new RangeError(`A simulated device needs a capacity above zero bytes, not ${capacity}.`);
  }
  const granularity = config.granularity ?? DEFAULT_SIM_GRANULARITY;
  if (!Number.isInteger(granularity) || granularity < 1) {
    throw new RangeError(`The allocation granularity must be a whole number of bytes, at least 1, not ${granularity}.`);
  }
  const nonNegative = (value: number | undefined, what: string): number => {
    const v = value ?? 0;
    if (!Number.isFinite(v) || v < 0) throw new RangeError(`${what} must be zero or more, not ${value}.`);
    return v;
  };
  const driverLagMs = nonNegative(config.driverLagMs, 'The driver lag (ms)');
  const otherUse = nonNegative(config.otherUse, "Other programs' use (bytes)");
  const lieBytes = nonNegative(config.lieBytes, 'The lie (bytes)');
  if (config.maxAllocation !== undefined && !(config.maxAllocation > 0)) {
    throw new RangeError(`The largest single allocation must be above zero bytes, not ${config.maxAllocation}.`);
  }
  const steps = [...(config.otherUseSchedule ?? [])].sort((a, b) => a.atMs - b.atMs);
  for (const step of steps) {
    nonNegative(step.atMs, 'A schedule time (ms)');
    nonNegative(step.bytes, "Other programs' scheduled use (bytes)");
  }
  const name = config.name ?? 'Simulated GPU (demo)';
  const file: DeviceFile = {
    version: 1,
    id: config.id ?? 'sim:0',
    // The demo device must never pass for a real one.
    name: /simulated/i.test(name) ? name : `Simulated ${name}`,
    capacity,
    granularity,
    driverLagMs,
    lieBytes,
    createdAt,
    otherUseChanges: [{ at: createdAt, bytes: otherUse }, ...steps.map((s) => ({ at: createdAt + s.atMs, bytes: s.bytes }))],
  };
  if (config.maxAllocation !== undefined) file.maxAllocation = config.maxAllocation;
  return file;
}

/** Forgets what even the lagging figure no longer shows: releases and other-use changes older than the lag. */
function prune(view: DeviceView, now: Millis): void {
  const horizon = now - view.device.driverLagMs;
  for (const [ledger, records] of view.ledgers) {
    view.ledgers.set(
      ledger,
      records.filter((r) => r.releasedAt === undefined || r.releasedAt > horizon),
    );
  }
  const changes = view.device.otherUseChanges;
  let firstKept = 0;
  for (let i = 1; i < changes.length && changes[i].at <= horizon; i++) firstKept = i;
  if (firstKept > 0) view.device.otherUseChanges = changes.slice(firstKept);
}

function otherUseAt(device: DeviceFile, at: Millis): Bytes {
  const changes = device.otherUseChanges;
  let bytes = changes[0]?.bytes ?? 0;
  for (const change of changes) {
    if (change.at > at) break;
    bytes = change.bytes;
  }
  return bytes;
}

function* liveRecords(view: DeviceView): Generator<AllocationRecord> {
  for (const records of view.ledgers.values()) for (const r of records) if (r.releasedAt === undefined) yield r;
}

function trueFreeOf(view: DeviceView, now: Millis): Bytes {
  let used = otherUseAt(view.device, now);
  for (const r of liveRecords(view)) used += r.bytes;
  return Math.max(0, view.device.capacity - used);
}

function ownerPid(owner: string): number | undefined {
  return /^[1-9]\d*$/.test(owner) ? Number(owner) : undefined;
}

function isStore(value: SimulatedDeviceOptions | DeviceStore): value is DeviceStore {
  return typeof (value as DeviceStore).transact === 'function';
}

function clamp(value: number, min: number, max: number): number {
  return Math.min(max, Math.max(min, value));
}

function mib(bytes: Bytes): string {
  return (bytes / MiB).toFixed(2);
}

function randomSuffix(): string {
  return Math.random().toString(36).slice(2, 8);
}
