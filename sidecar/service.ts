/**
 * Builds the sidecar service that both transports expose: the devices, the arbiter and the workers behind the
 * `SidecarApi` interface. `configure` (re)builds the engine (service/engine.ts) when its settings change; the
 * arbiter's events go out as notifications, and snapshots are pushed on change (at most one per poll interval)
 * and on every device poll.
 */

import { SIDECAR_VERSION } from './api';
import type { Log, NotificationListener, SidecarApi, SidecarNotificationMethod } from './api';
import type { Arbiter } from './core/arbiter';
import { MiB, type JobSpec } from './core/types';
import {
  DecisionNotification,
  JobDoneNotification,
  JobProgressNotification,
  PROTOCOL_VERSION,
  SnapshotNotification,
} from './protocol';
import type { JobDoneParams, SidecarSettings, SidecarSnapshot } from './protocol';
import { ModelCosts } from './service/costs';
import { createEngine, type Engine } from './service/engine';
import { composeSnapshot } from './service/snapshot';
import { useEngineRegistry } from './workers/processTree';

export interface SidecarServiceOptions {
  /** Where the service writes its log lines; the entry point decides the sink and the level filter. */
  log: Log;
}

/** Arbiters of earlier configurations kept so that waitJob still answers for their jobs. */
const RETIRED_KEPT = 4;
/** Stands in for the output path of a previewed job: never written. */
const PREVIEW_OUTPUT = 'preview.png';
const NOT_CONFIGURED = 'The sidecar is not configured yet: the client must send vramRelay/configure first.';

export function createSidecarService(options: SidecarServiceOptions): SidecarApi {
  const { log } = options;
  const listeners = new Set<NotificationListener>();
  const costs = new ModelCosts(log);
  let settings: SidecarSettings | undefined;
  let engineKey = '';
  let engine: Engine | undefined;
  let building: Promise<Engine> | undefined;
  const retired: Arbiter[] = [];
  let disposed = false;

  const notify = (method: SidecarNotificationMethod, params: unknown) => {
    for (const listener of listeners) {
      try {
        listener(method, params);
      } catch (error) {
        log('debug', `notification listener failed: ${String(error)}`);
      }
    }
  };

  // Snapshot pushes: at once when the last one is older than the poll interval, else once at the end of it.
  let lastPush = 0;
  let pushTimer: NodeJS.Timeout | undefined;
  const currentSnapshot = (): SidecarSnapshot => (engine ? snapshotOf(engine) : emptySnapshot(settings));
  const pushSnapshot = () => {
    clearTimeout(pushTimer);
    pushTimer = undefined;
    lastPush = Date.now();
    if (listeners.size > 0) notify(SnapshotNotification, currentSnapshot());
  };
  const snapshotChanged = () => {
    if (disposed || pushTimer) return;
    const wait = lastPush + (settings?.pollIntervalMs ?? 1000) - Date.now();
    if (wait <= 0) pushSnapshot();
    else pushTimer = setTimeout(pushSnapshot, wait);
  };

  const wire = (next: Engine) => {
    const { arbiter } = next;
    arbiter.on('decision', (event) => notify(DecisionNotification, event));
    arbiter.on('progress', (event) => notify(JobProgressNotification, event));
    arbiter.on('jobDone', (event) => {
      log(event.job.status === 'failed' ? 'warn' : 'info', `job ${event.job.id} ${event.job.status}${event.job.message ? `: ${event.job.message}` : ''}`);
      notify(JobDoneNotification, event);
      snapshotChanged();
    });
    arbiter.on('changed', snapshotChanged);
  };

  const retire = async (old: Engine | undefined) => {
    if (!old) return;
    retired.unshift(old.arbiter);
    retired.length = Math.min(retired.length, RETIRED_KEPT);
    await old.dispose().catch((error: unknown) => log('warn', `stopping the previous engines: ${String(error)}`));
  };

  const current = async (): Promise<Engine> => {
    if (disposed) throw new Error('The sidecar is stopping.');
    if (building) return building;
    if (!engine) throw new Error(NOT_CONFIGURED);
    return engine;
  };

  const arbiterOf = (jobId: string): Arbiter | undefined =>
    [engine?.arbiter, ...retired].find((a): a is Arbiter => !!a && a.job(jobId) !== undefined);

  return {
    async configure(params) {
      if (disposed) throw new Error('The sidecar is stopping.');
      settings = params;
      costs.useStorage(params.storageDir);
      if (params.storageDir) {
        for (const orphan of useEngineRegistry(params.storageDir)) {
          log('warn', `Stopped engine process ${orphan.pid}, left running by sidecar ${orphan.ownerPid} that ended without stopping it.`);
        }
      }
      const key = engineKeyOf(params);
      if (key !== engineKey || !engine) {
        engineKey = key;
        const previous = building ? await building.catch(() => undefined) : engine;
        building = (async () => {
          await retire(previous);
          const next = await createEngine(params, costs, log, { onSample: pushSnapshot });
          wire(next);
          return next;
        })();
        try {
          engine = await building;
        } finally {
          building = undefined;
        }
        if (disposed) await engine.dispose();
      }
      log('info', `configured: device ${params.device}, engines ${params.allowBinaries ? 'allowed' : 'off (untrusted workspace)'}`);
      pushSnapshot();
      return { applied: true, restartNeeded: [] };
    },
    getSnapshot: async () => (building ? snapshotOf(await building) : currentSnapshot()),
    getDecisions: async ({ jobId, sinceSeq } = {}) => (await current()).arbiter.decisions({ jobId, sinceSeq }),
    previewPlan: async ({ spec }) => (await current()).arbiter.preview(forPreview(spec)),
    async submitJob({ spec, priority }) {
      const info = (await current()).arbiter.submit(spec, priority);
      return { jobId: info.id };
    },
    cancelJob: async ({ jobId }) => ({ cancelled: arbiterOf(jobId)?.cancel(jobId) ?? false }),
    async waitJob({ jobId }, signal) {
      if (building) await building.catch(() => undefined);
      const arbiter = arbiterOf(jobId);
      if (!arbiter) throw new Error(`No job ${jobId}: it never existed or ended long ago.`);
      return waitWithSignal(arbiter.waitFor(jobId), signal);
    },
    setLlmState: async ({ state }) => (await current()).arbiter.setLlmState(state),
    freeGpuMemory: async () => (await current()).arbiter.freeGpuMemory(),
    version: async () => ({ protocol: PROTOCOL_VERSION, sidecar: SIDECAR_VERSION }),
    onNotification(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    async dispose() {
      if (disposed) return;
      disposed = true;
      clearTimeout(pushTimer);
      const last = building ? await building.catch(() => undefined) : engine;
      await last?.dispose();
      await costs.flush();
      listeners.clear();
    },
  };
}

function snapshotOf(engine: Engine): SidecarSnapshot {
  return composeSnapshot({
    arbiter: engine.arbiter.snapshot(),
    devices: engine.devices(),
    deviceKind: engine.selection.kind,
    marginBytes: engine.marginBytes,
    deviceId: engine.deviceId,
    ourPids: engine.ourPids(),
    at: Date.now(),
  });
}

/** Before the first configure: nothing measured yet. */
function emptySnapshot(settings: SidecarSettings | undefined): SidecarSnapshot {
  return {
    deviceSource: settings?.device === 'simulated' ? 'simulated' : 'cpu-only',
    devices: [],
    effectiveFree: {},
    safetyMargin: (settings?.safetyMarginMiB ?? 512) * MiB,
    llm: { id: 'llm', state: 'stopped', deviceId: 'unknown', wantedState: 'stopped', costs: null, lastUsedAt: 0 },
    image: { id: 'image', state: 'stopped', deviceId: 'unknown', heldBytes: 0 },
    queue: [],
    running: [],
    recentDecisions: [],
    breakdown: {},
    at: Date.now(),
  };
}

/** A dry run writes nothing, so an image spec may come without its output path (the client picks it later). */
function forPreview(spec: JobSpec): JobSpec {
  if (spec?.kind !== 'image' || (typeof spec.outputPath === 'string' && spec.outputPath.trim() !== '')) return spec;
  return { ...spec, outputPath: PREVIEW_OUTPUT };
}

/** The settings whose change needs new engines (the poll interval alone does not). */
function engineKeyOf(settings: SidecarSettings): string {
  const { pollIntervalMs: _poll, ...rest } = settings;
  return JSON.stringify(rest);
}

function waitWithSignal(done: Promise<JobDoneParams>, signal: AbortSignal | undefined): Promise<JobDoneParams> {
  if (!signal) return done;
  if (signal.aborted) return Promise.reject(new Error('The wait was cancelled.'));
  return new Promise((resolve, reject) => {
    const onAbort = () => reject(new Error('The wait was cancelled; the job goes on.'));
    signal.addEventListener('abort', onAbort, { once: true });
    done.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(error instanceof Error ? error : new Error(String(error)));
      },
    );
  });
}
