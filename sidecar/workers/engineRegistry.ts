/**
 * A file per sidecar that lists the engine processes it started, so that a sidecar killed with SIGKILL (or by an
 * out-of-memory killer) does not leave a resident sd-server or a running sd-cli holding VRAM forever: the next
 * sidecar to start reads the files of sidecars that are gone and stops what they left behind.
 *
 * A process is identified by its pid together with its start time, so that a pid the system has since given to
 * another program is never signalled. Several VS Code windows share one storage folder, so a file is only reaped
 * when its own sidecar is no longer running.
 */

import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';

const FILE_PREFIX = 'engines-';

export interface EngineRecord {
  pid: number;
  /** When the process started, as the system reports it; empty where it cannot be read. */
  started: string;
  /** What the engine writes before the sidecar renames or removes it: files in `dir` whose names start with `prefix`. */
  leftovers?: Leftover[];
}

export interface Leftover {
  dir: string;
  prefix: string;
}

/**
 * Only names the sidecar itself makes are ever removed: a job's hidden temporary stem in the output folder
 * (`.name.vrelay-xxxxxxxx...`) or an engine's private working folder (`vrelay-sd-...`).
 */
const LEFTOVER_PREFIX = /^(\.[^/\\]*\.vrelay-[0-9a-f]{8}|vrelay-sd-[^/\\]+)/;

function removeLeftovers(leftovers: unknown): void {
  if (!Array.isArray(leftovers)) return;
  for (const item of leftovers as Partial<Leftover>[]) {
    const { dir, prefix } = item ?? {};
    if (typeof dir !== 'string' || typeof prefix !== 'string' || !isAbsolute(dir) || !LEFTOVER_PREFIX.test(prefix)) continue;
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch {
      continue;
    }
    for (const name of names) if (name.startsWith(prefix)) rmSync(join(dir, name), { recursive: true, force: true });
  }
}

interface RegistryFile {
  owner: EngineRecord;
  engines: EngineRecord[];
}

export interface ReapedEngine extends EngineRecord {
  ownerPid: number;
}

/** The start time of a running process, or undefined when it is not running (or cannot be identified here). */
export function processStartTime(pid: number): string | undefined {
  if (!Number.isSafeInteger(pid) || pid <= 0) return undefined;
  try {
    if (process.platform === 'linux') {
      // Field 22 of /proc/<pid>/stat, counted after the command name (which may contain spaces and parentheses).
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      return fields[19];
    }
    if (process.platform === 'win32') return undefined;
    const started = execFileSync('ps', ['-o', 'lstart=', '-p', String(pid)], { encoding: 'utf8', timeout: 2000, stdio: ['ignore', 'pipe', 'ignore'] });
    return started.trim() || undefined;
  } catch {
    return undefined;
  }
}

function isSameProcess(record: EngineRecord): boolean {
  const now = processStartTime(record.pid);
  return now !== undefined && record.started !== '' && now === record.started;
}

/** True when the sidecar that wrote a file has ended; a running owner that cannot be identified counts as running. */
function ownerIsGone(owner: EngineRecord): boolean {
  const now = processStartTime(owner.pid);
  if (now !== undefined) return owner.started !== '' && now !== owner.started;
  try {
    process.kill(owner.pid, 0);
    return false;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'ESRCH';
  }
}

/** The registry of the running sidecar: keeps `<dir>/engines-<pid>.json` equal to the engines it has running. */
export class EngineRegistry {
  private readonly engines = new Map<number, EngineRecord>();
  private readonly file: string;
  private readonly owner: EngineRecord;

  constructor(private readonly dir: string) {
    this.owner = { pid: process.pid, started: processStartTime(process.pid) ?? '' };
    this.file = join(dir, `${FILE_PREFIX}${process.pid}.json`);
  }

  add(pid: number, leftovers?: Leftover[]): void {
    this.engines.set(pid, { pid, started: processStartTime(pid) ?? '', ...(leftovers?.length ? { leftovers } : {}) });
    this.write();
  }

  remove(pid: number): void {
    if (this.engines.delete(pid)) this.write();
  }

  /** Removes the file: called when the sidecar exits after stopping its engines itself. */
  close(): void {
    this.engines.clear();
    rmSync(this.file, { force: true });
  }

  private write(): void {
    try {
      if (this.engines.size === 0) {
        rmSync(this.file, { force: true });
        return;
      }
      mkdirSync(this.dir, { recursive: true });
      const body: RegistryFile = { owner: this.owner, engines: [...this.engines.values()] };
      const temp = `${this.file}.${process.pid}.tmp`;
      writeFileSync(temp, JSON.stringify(body), { mode: 0o600 });
      renameSync(temp, this.file);
    } catch {
      // A registry that cannot be written only loses the clean-up after a hard crash; the engines still run.
    }
  }
}

/**
 * Stops the engines of sidecars that are no longer running, removes what those engines left half-written (a
 * temporary image, a working folder) and the registry files. `kill` receives each engine that is still the process
 * that was started (same pid and start time). Returns what was stopped.
 */
export function reapOrphanedEngines(dir: string, kill: (pid: number) => void): ReapedEngine[] {
  let names: string[];
  try {
    names = readdirSync(dir).filter((n) => n.startsWith(FILE_PREFIX) && n.endsWith('.json'));
  } catch {
    return [];
  }
  const reaped: ReapedEngine[] = [];
  for (const name of names) {
    const file = join(dir, name);
    let body: RegistryFile;
    try {
      body = JSON.parse(readFileSync(file, 'utf8')) as RegistryFile;
      if (!body?.owner || !Array.isArray(body.engines)) throw new Error('not a registry');
    } catch {
      rmSync(file, { force: true });
      continue;
    }
    if (body.owner.pid === process.pid || !ownerIsGone(body.owner)) continue;
    for (const engine of body.engines) {
      if (Number.isSafeInteger(engine?.pid) && isSameProcess(engine)) {
        kill(engine.pid);
        reaped.push({ ...engine, ownerPid: body.owner.pid });
      }
      // Killed, or it finished on its own after its sidecar was gone: nobody will rename or remove what it wrote.
      removeLeftovers(engine?.leftovers);
    }
    rmSync(file, { force: true });
  }
  return reaped;
}
