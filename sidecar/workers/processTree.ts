/**
 * Stopping engine processes together with everything they started. Engines are spawned as process-group leaders
 * (detached on POSIX) so that one signal reaches the whole tree; on Windows `taskkill /T` walks the tree.
 */

import { loadExeca } from '../loadExeca';
import { EngineRegistry, reapOrphanedEngines, type Leftover, type ReapedEngine } from './engineRegistry';

const live = new Map<number, Leftover[] | undefined>();
let exitHookInstalled = false;
let registry: EngineRegistry | undefined;

/**
 * Keeps the list of running engines in `dir` from now on, and first stops the engines that sidecars which ended
 * without stopping them (SIGKILL, a crash) left running. Returns those.
 */
export function useEngineRegistry(dir: string): ReapedEngine[] {
  const reaped = reapOrphanedEngines(dir, (pid) => signalTree(pid, 'SIGKILL'));
  if (registry) return reaped;
  registry = new EngineRegistry(dir);
  for (const [pid, leftovers] of live) registry.add(pid, leftovers);
  return reaped;
}

/**
 * Remembers a spawned group so that it is killed if the sidecar itself exits first, and so that the next sidecar
 * stops it and removes its `leftovers` if this one is killed outright.
 */
export function trackProcessGroup(pid: number, leftovers?: Leftover[]): () => void {
  live.set(pid, leftovers);
  registry?.add(pid, leftovers);
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.once('exit', () => {
      for (const p of live.keys()) signalTree(p, 'SIGKILL');
      registry?.close();
    });
  }
  return () => {
    live.delete(pid);
    registry?.remove(pid);
  };
}

/**
 * Sends `signal` to every engine group now, synchronously: for a sidecar that has been told to stop and may be
 * killed before its orderly shutdown reaches the engines (a signal to its whole process group, whose parent then
 * kills it). Engines run in their own groups, so such a signal never reaches them by itself.
 */
export function signalTrackedGroups(signal: NodeJS.Signals): void {
  for (const pid of live.keys()) signalTree(pid, signal);
}

/** Pids of the groups tracked now: the engine processes that are running. */
export function trackedProcessGroups(): number[] {
  return [...live.keys()];
}

/** Sends `signal` to the process group led by `pid` (falls back to the process alone). Never throws. */
export function signalTree(pid: number, signal: NodeJS.Signals): void {
  if (process.platform === 'win32') {
    // taskkill has no gentle form for console programs: always force the tree.
    void loadExeca()
      .then((execa) => execa('taskkill', ['/pid', String(pid), '/T', '/F'], { reject: false }))
      .catch(() => undefined);
    return;
  }
  try {
    process.kill(-pid, signal);
  } catch {
    try {
      process.kill(pid, signal);
    } catch {
      // Already gone.
    }
  }
}

/** SIGTERM to the tree, then SIGKILL after `graceMs` unless `exited` settles first. */
export async function stopTree(pid: number, exited: Promise<unknown>, graceMs: number): Promise<void> {
  signalTree(pid, 'SIGTERM');
  let timer: ReturnType<typeof setTimeout> | undefined;
  const grace = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), graceMs);
  });
  const outcome = await Promise.race([exited.then(() => 'exited' as const, () => 'exited' as const), grace]);
  clearTimeout(timer);
  // Children that ignore SIGTERM (or a leader that exited and left them behind) get SIGKILL.
  signalTree(pid, 'SIGKILL');
  if (outcome === 'timeout') await exited.catch(() => undefined);
}
