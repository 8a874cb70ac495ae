/**
 * On-disk storage of a simulated device shared between processes.
 *
 * Layout of the directory:
 *   config.json          the device (capacity, granularity, lag...) plus other programs' use and the lie
 *   ledger-<pid>.json    the allocations made by process <pid>
 *   lock/                held while a process reads and rewrites the files (atomic mkdir)
 *
 * Every write goes to a temporary file that is renamed over the old one, so a process killed at any moment never
 * leaves a half-written file. Ledgers of processes that no longer exist are released the way a driver frees the
 * memory of a process that died.
 */

import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Bytes, Millis } from '../core/types';

export interface AllocationRecord {
  id: string;
  owner: string;
  bytes: Bytes;
  label?: string;
  /** When it was allocated (clock millis). */
  at: Millis;
  /** When it was released; kept for a while so that the lagging free figure can still see it. */
  releasedAt?: Millis;
}

export interface OtherUseChange {
  at: Millis;
  bytes: Bytes;
}

/** Everything about the device that is not an allocation. Persisted as config.json in shared mode. */
export interface DeviceFile {
  version: 1;
  id: string;
  name: string;
  capacity: Bytes;
  granularity: Bytes;
  driverLagMs: Millis;
  maxAllocation?: Bytes;
  lieBytes: Bytes;
  createdAt: Millis;
  /** Other programs' use over time, sorted by `at`; the first entry holds from creation on. */
  otherUseChanges: OtherUseChange[];
}

/** What one transaction sees and may change. `ledgers` maps a ledger key (a pid in shared mode) to its records. */
export interface DeviceView {
  device: DeviceFile;
  ledgers: Map<string, AllocationRecord[]>;
  /** The ledger this process writes its allocations to. */
  ownLedger: string;
}

/** Storage of the device state: one process (in memory) or many (a shared directory). */
export interface DeviceStore {
  readonly shared: boolean;
  /** Runs `fn` with exclusive access to the state; whatever `fn` changes in the view is saved. */
  transact<T>(now: Millis, fn: (view: DeviceView) => T): T;
}

export class MemoryDeviceStore implements DeviceStore {
  readonly shared = false;
  private readonly view: DeviceView;

  constructor(device: DeviceFile) {
    this.view = { device, ledgers: new Map([['local', []]]), ownLedger: 'local' };
  }

  transact<T>(_now: Millis, fn: (view: DeviceView) => T): T {
    return fn(this.view);
  }
}

const CONFIG_FILE = 'config.json';
const LOCK_DIR = 'lock';
const LOCK_HOLDER_FILE = 'holder';
const LEDGER_PATTERN = /^ledger-(\d+)\.json$/;
const TEMP_PATTERN = /^\.tmp-(\d+)-/;
/** A lock is never held for more than a few file operations; waiting this long means something is wrong. */
const LOCK_TIMEOUT_MS = 10_000;
/** A lock directory without a holder file older than this was left by a process killed between two syscalls. */
const HOLDERLESS_LOCK_STALE_MS = 2_000;

export class SharedDeviceStore implements DeviceStore {
  readonly shared = true;

  constructor(readonly dir: string) {}

  static create(dir: string, device: DeviceFile): SharedDeviceStore {
    mkdirSync(dir, { recursive: true });
    const store = new SharedDeviceStore(dir);
    store.withLock(() => writeJsonAtomic(join(dir, CONFIG_FILE), device));
    return store;
  }

  static open(dir: string): SharedDeviceStore {
    const store = new SharedDeviceStore(dir);
    store.readDevice();
    return store;
  }

  transact<T>(now: Millis, fn: (view: DeviceView) => T): T {
    return this.withLock(() => {
      const device = this.readDevice();
      const deviceBefore = JSON.stringify(device);
      const ledgers = new Map<string, AllocationRecord[]>();
      const before = new Map<string, string>();
      for (const name of readdirSync(this.dir)) {
        const temp = TEMP_PATTERN.exec(name);
        if (temp && !isProcessAlive(Number(temp[1]))) rmSync(join(this.dir, name), { force: true });
        const match = LEDGER_PATTERN.exec(name);
        if (!match) continue;
        const records = this.readLedger(name);
        before.set(match[1], JSON.stringify(records));
        // A process that died freed its memory: the driver sees the release when we notice the death.
        if (!isProcessAlive(Number(match[1]))) {
          for (const record of records) record.releasedAt ??= now;
        }
        ledgers.set(match[1], records);
      }
      const ownLedger = String(process.pid);
      if (!ledgers.has(ownLedger)) ledgers.set(ownLedger, []);

      const result = fn({ device, ledgers, ownLedger });

      if (JSON.stringify(device) !== deviceBefore) writeJsonAtomic(join(this.dir, CONFIG_FILE), device);
      for (const [pid, records] of ledgers) {
        const path = join(this.dir, `ledger-${pid}.json`);
        if (records.length === 0) {
          if (before.has(pid)) rmSync(path, { force: true });
        } else if (JSON.stringify(records) !== before.get(pid)) {
          writeJsonAtomic(path, records);
        }
      }
      return result;
    });
  }

  private readDevice(): DeviceFile {
    const path = join(this.dir, CONFIG_FILE);
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch {
      throw new Error(
        `No simulated device in ${this.dir}: ${CONFIG_FILE} is missing. Create one with SimulatedDevice.createShared(dir, config).`,
      );
    }
    const device = parseJson(text, path) as DeviceFile;
    if (device?.version !== 1 || typeof device.capacity !== 'number') {
      throw new Error(`${path} is not a simulated device description (version 1). Recreate it with SimulatedDevice.createShared.`);
    }
    return device;
  }

  private readLedger(name: string): AllocationRecord[] {
    const path = join(this.dir, name);
    const records = parseJson(readFileSync(path, 'utf8'), path);
    if (!Array.isArray(records)) throw new Error(`${path} is not a simulated device ledger; delete it if no process uses it.`);
    return records as AllocationRecord[];
  }

  private withLock<T>(fn: () => T): T {
    const lock = join(this.dir, LOCK_DIR);
    const deadline = Date.now() + LOCK_TIMEOUT_MS;
    for (let attempt = 0; ; attempt++) {
      try {
        mkdirSync(lock);
        break;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      }
      if (breakStaleLock(lock)) continue;
      if (Date.now() > deadline) {
        throw new Error(`The simulated device lock ${lock} has been held for over ${LOCK_TIMEOUT_MS} ms; remove it if no process uses the device.`);
      }
      sleepSync(Math.min(1 + attempt, 10));
    }
    try {
      writeFileSync(join(lock, LOCK_HOLDER_FILE), String(process.pid));
      return fn();
    } finally {
      rmSync(lock, { recursive: true, force: true });
    }
  }
}

/**
 * Removes a lock whose holder died. Another process may break the same stale lock at the same moment; moving it
 * aside first makes only one of them succeed. (A process that reads the holder, stalls, and then breaks a lock
 * taken anew in between would still break a live lock: the window is a few syscalls after a kill -9.)
 */
function breakStaleLock(lock: string): boolean {
  let stale: boolean;
  try {
    const holder = Number(readFileSync(join(lock, LOCK_HOLDER_FILE), 'utf8'));
    stale = Number.isInteger(holder) && holder > 0 && !isProcessAlive(holder);
  } catch {
    try {
      stale = Date.now() - statSync(lock).mtimeMs > HOLDERLESS_LOCK_STALE_MS;
    } catch {
      return true; // The lock went away: try again at once.
    }
  }
  if (!stale) return false;
  const aside = `${lock}.stale-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    renameSync(lock, aside);
  } catch {
    return true;
  }
  rmSync(aside, { recursive: true, force: true });
  return true;
}

export function isProcessAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: it exists but belongs to someone else.
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function writeJsonAtomic(path: string, value: unknown): void {
  const dir = join(path, '..');
  const temp = join(dir, `.tmp-${process.pid}-${randomBytes(6).toString('hex')}`);
  writeFileSync(temp, JSON.stringify(value));
  try {
    renameSync(temp, path);
  } catch (error) {
    try {
      unlinkSync(temp);
    } catch {
      // Already gone.
    }
    throw error;
  }
}

function parseJson(text: string, path: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    throw new Error(`${path} is not valid JSON; delete the simulated device directory and create it again.`);
  }
}

const sleepCell = new Int32Array(new SharedArrayBuffer(4));

/** Blocks the thread for `ms`: the device API is synchronous like a driver call, and waits only on a busy lock. */
function sleepSync(ms: number): void {
  Atomics.wait(sleepCell, 0, 0, ms);
}
