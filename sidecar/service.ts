// Placeholder composition; replaced by the real wiring.
/**
 * Builds the sidecar service that both transports expose: the devices, the arbiter and the workers behind the
 * `SidecarApi` interface. This version only keeps an in-memory snapshot so the transports can be run and tested.
 */

import { SIDECAR_VERSION } from './api';
import type { Log, NotificationListener, SidecarApi } from './api';
import { PROTOCOL_VERSION, SnapshotNotification } from './protocol';
import type { SidecarSnapshot } from './protocol';
import { MiB } from './core/types';

export interface SidecarServiceOptions {
  /** Where the service writes its log lines; the entry point decides the sink (stderr) and the level filter. */
  log: Log;
}

export function createSidecarService(options: SidecarServiceOptions): SidecarApi {
  const listeners = new Set<NotificationListener>();
  let snapshot: SidecarSnapshot = {
    deviceSource: 'cpu-only',
    devices: [],
    effectiveFree: {},
    safetyMargin: 512 * MiB,
    llm: { id: 'llm', state: 'stopped', deviceId: 'cpu', wantedState: 'stopped', costs: null, lastUsedAt: 0 },
    image: { id: 'image', state: 'stopped', deviceId: 'cpu', heldBytes: 0 },
    queue: [],
    running: [],
    recentDecisions: [],
    breakdown: {},
    at: Date.now(),
  };
  const notify = (method: typeof SnapshotNotification, params: unknown) => {
    for (const listener of listeners) listener(method, params);
  };
  const notAvailable = (what: string) => Promise.reject(new Error(`${what} is not available in this build of the sidecar.`));

  return {
    async configure(settings) {
      const simulated = settings.device === 'simulated';
      const capacity = settings.simulatedCapacityMiB * MiB;
      const margin = settings.safetyMarginMiB * MiB;
      const deviceId = simulated ? 'sim:0' : 'cpu';
      snapshot = {
        ...snapshot,
        deviceSource: simulated ? 'simulated' : 'cpu-only',
        devices: simulated
          ? [{ id: deviceId, name: 'Simulated GPU (demo)', kind: 'simulated', total: capacity, used: 0, free: capacity, unified: false, at: Date.now() }]
          : [],
        effectiveFree: simulated ? { [deviceId]: Math.max(0, capacity - margin) } : {},
        safetyMargin: margin,
        llm: { ...snapshot.llm, deviceId },
        image: { ...snapshot.image, deviceId },
        at: Date.now(),
      };
      options.log('info', `configured: device ${settings.device}`);
      notify(SnapshotNotification, snapshot);
      return { applied: true, restartNeeded: [] };
    },
    getSnapshot: async () => snapshot,
    getDecisions: async () => [],
    previewPlan: () => notAvailable('Planning'),
    submitJob: () => notAvailable('Running jobs'),
    cancelJob: async () => ({ cancelled: false }),
    waitJob: ({ jobId }) => Promise.reject(new Error(`No job ${jobId}.`)),
    setLlmState: () => notAvailable('Changing the LLM state'),
    freeGpuMemory: async () => ({ freed: 0 }),
    version: async () => ({ protocol: PROTOCOL_VERSION, sidecar: SIDECAR_VERSION }),
    onNotification(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    async dispose() {
      listeners.clear();
    },
  };
}
