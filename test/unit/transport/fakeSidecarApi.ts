/**
 * An in-memory SidecarApi for transport tests: records the calls it gets, answers from a fixed snapshot, lets a
 * test push notifications and control `waitJob`.
 */

import { SIDECAR_VERSION } from '../../../sidecar/api';
import type { NotificationListener, SidecarApi, SidecarNotificationMethod } from '../../../sidecar/api';
import { GiB } from '../../../sidecar/core/types';
import { PROTOCOL_VERSION } from '../../../sidecar/protocol';
import type { SidecarSettings, SidecarSnapshot } from '../../../sidecar/protocol';

export const FAKE_SNAPSHOT: SidecarSnapshot = {
  deviceSource: 'simulated',
  devices: [{ id: 'sim:0', name: 'Simulated GPU (demo)', kind: 'simulated', total: 12 * GiB, used: GiB, free: 11 * GiB, unified: false, at: 1 }],
  effectiveFree: { 'sim:0': 10.5 * GiB },
  safetyMargin: 0.5 * GiB,
  llm: { id: 'llm', state: 'stopped', deviceId: 'sim:0', wantedState: 'stopped', costs: null, lastUsedAt: 0 },
  image: { id: 'image', state: 'stopped', deviceId: 'sim:0', heldBytes: 0 },
  queue: [],
  running: [],
  recentDecisions: [],
  breakdown: {},
  at: 1,
};

export const VALID_SETTINGS: SidecarSettings = {
  device: 'simulated',
  simulatedCapacityMiB: 12288,
  safetyMarginMiB: 512,
  pollIntervalMs: 1000,
  llm: { modelPath: '', engine: 'embedded', serverPath: '', contextSize: 4096, idleWarmSeconds: 0, idleColdSeconds: 0 },
  image: { binaryPath: '', modelPath: '', keepResident: false },
  storageDir: '/tmp/vram-relay-test',
  allowBinaries: false,
};

export interface FakeSidecarApi extends SidecarApi {
  calls: { method: string; params: unknown }[];
  emit(method: SidecarNotificationMethod, params: unknown): void;
  listenerCount(): number;
  /** Signals passed to pending `waitJob` calls, in call order. */
  waitSignals: (AbortSignal | undefined)[];
  disposed: boolean;
}

export function createFakeSidecarApi(): FakeSidecarApi {
  const listeners = new Set<NotificationListener>();
  const calls: { method: string; params: unknown }[] = [];
  const record = (method: string, params?: unknown) => calls.push({ method, params });
  const fake: FakeSidecarApi = {
    calls,
    waitSignals: [],
    disposed: false,
    emit(method, params) {
      for (const listener of listeners) listener(method, params);
    },
    listenerCount: () => listeners.size,
    async configure(params) {
      record('configure', params);
      return { applied: true, restartNeeded: [] };
    },
    async getSnapshot() {
      record('getSnapshot');
      return FAKE_SNAPSHOT;
    },
    async getDecisions(params) {
      record('getDecisions', params);
      return [];
    },
    async previewPlan(params) {
      record('previewPlan', params);
      throw new Error('No model at /models/missing.gguf: check the image model path setting.');
    },
    async submitJob(params) {
      record('submitJob', params);
      return { jobId: 'job-1' };
    },
    async cancelJob(params) {
      record('cancelJob', params);
      return { cancelled: true };
    },
    waitJob(params, signal) {
      record('waitJob', params);
      fake.waitSignals.push(signal);
      // Never ends by itself: only an abort settles it, which is what the tests watch.
      return new Promise((_resolve, reject) => {
        signal?.addEventListener('abort', () => reject(new Error('wait aborted')), { once: true });
      });
    },
    async setLlmState(params) {
      record('setLlmState', params);
      return { state: params.state, tookMs: 0 };
    },
    async freeGpuMemory() {
      record('freeGpuMemory');
      return { freed: 0 };
    },
    async version() {
      record('version');
      return { protocol: PROTOCOL_VERSION, sidecar: SIDECAR_VERSION };
    },
    onNotification(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    async dispose() {
      fake.disposed = true;
      listeners.clear();
    },
  };
  return fake;
}

/** Resolves when `predicate` holds, polling every 10 ms; fails after `ms`. */
export async function until(predicate: () => boolean, ms = 5000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
