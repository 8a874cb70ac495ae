/**
 * One configuration's worth of machinery: the device probe, the workers and the arbiter over them. A change of
 * engine settings builds a new engine and disposes of the old one.
 */

import type { Log } from '../api';
import { Arbiter } from '../core/arbiter';
import { systemClock } from '../core/ports';
import { MiB, type DeviceSnapshot, type LlmCosts, type SdCapabilities } from '../core/types';
import { selectProbe, type ProbeSelection } from '../devices/selectProbe';
import type { SidecarSettings } from '../protocol';
import { ModelCosts } from './costs';
import { createWorkers, type Workers } from './workers';

export interface Engine {
  arbiter: Arbiter;
  selection: ProbeSelection;
  workers: Workers;
  deviceId: string;
  marginBytes: number;
  /** Pids of our engine processes running now. */
  ourPids(): number[];
  /** The latest reading of every device. */
  devices(): DeviceSnapshot[];
  dispose(): Promise<void>;
}

export interface EngineHooks {
  /** Called after every device poll. */
  onSample(): void;
}

export async function createEngine(settings: SidecarSettings, costs: ModelCosts, log: Log, hooks: EngineHooks): Promise<Engine> {
  const selection = await selectProbe(settings.device, { simulatedCapacity: settings.simulatedCapacityMiB * MiB });
  log('info', selection.reason);
  const first = selection.snapshots[0];
  const deviceId = first?.id ?? (selection.kind === 'cpu' ? 'cpu' : 'unknown');
  const marginBytes = settings.safetyMarginMiB * MiB;
  const workers = await createWorkers(settings, selection.kind, log);
  const backend = (): SdCapabilities['backend'] => {
    const caps = workers.capabilities().backend;
    return selection.kind === 'cpu' ? 'cpu' : caps;
  };

  // Declared before the arbiter, whose constructor already asks for the LLM's figures.
  let latest: DeviceSnapshot[] = [...selection.snapshots];
  let lastLlmCosts: LlmCosts | null = null;
  const llmCosts = async (): Promise<LlmCosts | null> => {
    if (!workers.llm) return null;
    const total = latest.find((d) => d.id === deviceId)?.total ?? first?.total ?? 0;
    try {
      const figures = await costs.llm({
        modelPath: settings.llm.modelPath,
        contextSize: settings.llm.contextSize,
        deviceBudget: Math.max(0, total - marginBytes),
        backend: backend(),
      });
      // A real GPU gets the planned number of layers; the demo and CPU devices run it on the CPU.
      if (figures.gpuLayers !== lastLlmCosts?.gpuLayers && 'updateOptions' in workers.llm && selection.kind !== 'simulated' && selection.kind !== 'cpu') {
        workers.llm.updateOptions({ gpuLayers: figures.gpuLayers });
      }
      lastLlmCosts = figures;
      return figures;
    } catch (error) {
      log('warn', `LLM estimate: ${(error as Error).message}`);
      return null;
    }
  };

  const arbiter = new Arbiter({
    device: selection.probe,
    deviceId: first?.id,
    marginBytes,
    llm: workers.llm,
    llmCpu: workers.llmCpu,
    image: workers.image,
    costs: {
      image: async (spec) => {
        await workers.ready;
        return costs.image(spec, workers.capabilities());
      },
      llm: llmCosts,
    },
    capabilities: () => workers.capabilities(),
    clock: systemClock,
    idleWarmSeconds: settings.llm.idleWarmSeconds,
    idleColdSeconds: settings.llm.idleColdSeconds,
    ourPids: () => workers.ourPids(),
  });
  // What a resident sd-server holds counts as ours, and is what the LLM can have it give back.
  workers.image?.onResident((state, heldBytes) => arbiter.reportImageResident(state, heldBytes));
  arbiter.on('measured', (event) => {
    void costs.record(event, backend(), lastLlmCosts);
  });

  const stopWatch = selection.probe.watch(
    Math.max(100, settings.pollIntervalMs),
    (snapshots) => {
      latest = snapshots;
      // A resident sd-server that died on its own no longer holds anything.
      workers.image?.syncResident();
      hooks.onSample();
    },
    (error) => log('debug', `device poll failed: ${error.message}`),
  );

  let disposing: Promise<void> | undefined;
  return {
    arbiter,
    selection,
    workers,
    deviceId,
    marginBytes,
    ourPids: () => workers.ourPids(),
    devices: () => latest,
    dispose: () =>
      (disposing ??= (async () => {
        stopWatch();
        arbiter.dispose();
        arbiter.removeAllListeners();
        await workers.dispose();
        selection.probe.dispose();
      })()),
  };
}
