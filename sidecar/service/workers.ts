/**
 * The engines behind the arbiter, chosen from the settings: the LLM (embedded node-llama-cpp, or the user's
 * llama-server) and the sd.cpp image worker (sd-cli per job, or a resident sd-server). In an untrusted workspace
 * (`allowBinaries` false) nothing is started.
 */

import { stat } from 'node:fs/promises';

import type { Log } from '../api';
import { formatBytes } from '../core/format';
import type { LlmControl } from '../core/ports';
import { readSystemMemory, type SystemMemory } from '../devices/systemMemory';
import { FULL_SD_CAPABILITIES, type DeviceKind, type SdCapabilities } from '../core/types';
import type { SidecarSettings } from '../protocol';
import { EmbeddedLlm, defaultLlmWorkerEntry } from '../workers/llm/embeddedLlm';
import { LlamaServerLlm } from '../workers/llm/llamaServer';
import type { LlmEvent } from '../workers/llm/llmEvents';
import { trackedProcessGroups } from '../workers/processTree';
import { ImageWorker } from './imageWorker';
import { findSdBinaries } from './sdBinaries';

export interface Workers {
  llm: EmbeddedLlm | LlamaServerLlm | null;
  /** The CPU copy of the embedded LLM, answering while an image job holds the GPU (see core/cpuLane.ts). */
  llmCpu: LlmControl | null;
  image: ImageWorker | null;
  /** What the sd.cpp binary supports; a full set until it has been probed. */
  capabilities(): SdCapabilities;
  /** Settles once the binary has been probed (or failed to be). */
  ready: Promise<void>;
  /** The LLM worker's pid while it runs. */
  llmPid(): number | undefined;
  /**
   * Pids of every engine process of ours that is running (the LLM worker or llama-server, sd-cli runs, the
   * resident sd-server), so that a driver's per-process list does not count our use as other programs'.
   */
  ourPids(): number[];
  dispose(): Promise<void>;
}

export async function createWorkers(settings: SidecarSettings, deviceKind: DeviceKind, log: Log): Promise<Workers> {
  if (!settings.allowBinaries) {
    log('info', 'untrusted workspace: no engine is started (trust the workspace to run jobs)');
    return {
      llm: null,
      llmCpu: null,
      image: null,
      capabilities: () => FULL_SD_CAPABILITIES,
      ready: Promise.resolve(),
      llmPid: () => undefined,
      ourPids: () => [],
      dispose: async () => undefined,
    };
  }

  const llm = createLlm(settings, deviceKind, log);
  const llmCpu = llm instanceof EmbeddedLlm ? createCpuCopy(settings, deviceKind, log) : null;
  const binaries = await findSdBinaries(settings.image.binaryPath);
  const image = new ImageWorker({ binaries, keepResident: settings.image.keepResident, log });
  const llmPid = () => (llm instanceof EmbeddedLlm ? llm.workerPid() : llm instanceof LlamaServerLlm ? llm.serverPid() : undefined);

  return {
    llm,
    llmCpu: llmCpu?.control ?? null,
    image,
    capabilities: () => image.capabilities(),
    ready: image.ready,
    llmPid,
    // sd-cli runs are short-lived: the process tree knows every engine process group that is running now.
    ourPids: () =>
      [...new Set([llmPid(), llmCpu?.llm.workerPid(), image.serverPid(), ...trackedProcessGroups()])].filter((pid): pid is number => pid !== undefined),
    async dispose() {
      await Promise.allSettled([image?.stopResident(), llm?.setState('stopped'), llmCpu?.llm.setState('stopped')]);
    },
  };
}

/** What the CPU copy needs free in RAM beyond the model file: its context and the runtime (assumed). */
const CPU_COPY_RAM_HEADROOM = 1024 ** 3;

/**
 * A second embedded worker on the CPU build of llama.cpp (no GPU layers, so no VRAM at all), started by the arbiter
 * when it first answers with it. It maps the same model file, which the GPU LLM's load has usually left in the page cache.
 * Before it starts, it checks that RAM has room for the model and its context, so that answering never swaps.
 */
function createCpuCopy(settings: SidecarSettings, deviceKind: DeviceKind, log: Log): { llm: EmbeddedLlm; control: LlmControl } | null {
  const { modelPath, contextSize, cpuWhileImageRuns } = settings.llm;
  // With no GPU there is no VRAM to wait for; the setting may turn it off.
  if (cpuWhileImageRuns === false || deviceKind === 'cpu' || !modelPath.trim()) return null;
  const llm = new EmbeddedLlm({
    modelPath,
    contextSize,
    gpu: false,
    gpuLayers: 0,
    worker: defaultLlmWorkerEntry(),
    // Its load lines repeat the GPU LLM's: kept at debug, errors excepted.
    onEvent: llmEventLogger(log, 'llm (CPU copy)', { quiet: true }),
  });
  log('info', 'LLM CPU copy: answers while an image job holds the GPU, when quicker than waiting (vramRelay.llm.cpuWhileImageRuns)');
  const control: LlmControl = {
    state: () => llm.state(),
    async setState(target, signal) {
      if (target === 'hot' && llm.state() !== 'hot') await checkRoomForCpuCopy(modelPath);
      return llm.setState(target, signal);
    },
    run: (job, onText, signal) => llm.run(job, onText, signal),
    crashCount: () => llm.crashCount(),
  };
  return { llm, control };
}

/** Throws, saying what is missing, when RAM has no room for a CPU copy of `modelPath`. */
export async function checkRoomForCpuCopy(modelPath: string, readMemory: () => Promise<SystemMemory> = readSystemMemory): Promise<void> {
  const [file, memory] = await Promise.all([stat(modelPath), readMemory()]);
  const need = file.size + CPU_COPY_RAM_HEADROOM;
  if (memory.available < need) {
    throw new Error(`not enough free RAM for a CPU copy of the model: it needs ${formatBytes(need)}, ${formatBytes(memory.available)} is available`);
  }
}

/** Writes an LLM worker's events to the sidecar log, each line starting with `source`. */
function llmEventLogger(log: Log, source: string, options: { quiet?: boolean } = {}): (event: LlmEvent) => void {
  return (event) => {
    if (event.type === 'log') log(options.quiet ? (event.level === 'error' ? 'warn' : 'debug') : event.level, `${source}: ${event.message}`);
    else if (event.type === 'crash' || event.type === 'gaveUp') log('warn', `${source}: ${JSON.stringify(event)}`);
    else log('debug', `${source}: ${JSON.stringify(event)}`);
  };
}

function createLlm(settings: SidecarSettings, deviceKind: DeviceKind, log: Log): EmbeddedLlm | LlamaServerLlm | null {
  const { modelPath, engine, serverPath, contextSize } = settings.llm;
  if (!modelPath.trim()) {
    log('info', 'no LLM model configured (vramRelay.llm.modelPath): LLM jobs are refused');
    return null;
  }
  const onEvent = llmEventLogger(log, 'llm');
  if (engine === 'server') {
    log('info', `LLM engine: llama-server (${serverPath || 'from PATH'}) with ${modelPath}`);
    return new LlamaServerLlm({ serverPath, modelPath, contextSize, onEvent });
  }
  // The simulated device is a demo: the real model then runs on the CPU, whatever the plan says.
  const onGpu = deviceKind !== 'simulated' && deviceKind !== 'cpu';
  log('info', `LLM engine: embedded llama.cpp with ${modelPath}${onGpu ? '' : ' (on the CPU)'}`);
  return new EmbeddedLlm({
    modelPath,
    contextSize,
    gpu: onGpu ? 'auto' : false,
    gpuLayers: onGpu ? 'auto' : 0,
    worker: defaultLlmWorkerEntry(),
    onEvent,
  });
}
