/**
 * The engines behind the arbiter, chosen from the settings: the LLM (embedded node-llama-cpp, or the user's
 * llama-server) and the sd.cpp image runner. In an untrusted workspace (`allowBinaries` false) nothing is started.
 */

import type { Log } from '../api';
import type { ImageRunner } from '../core/ports';
import { FULL_SD_CAPABILITIES, type DeviceKind, type SdCapabilities } from '../core/types';
import type { SidecarSettings } from '../protocol';
import { EmbeddedLlm, defaultLlmWorkerEntry } from '../workers/llm/embeddedLlm';
import { LlamaServerLlm, resolveLlamaServerBinary } from '../workers/llm/llamaServer';
import type { LlmEvent } from '../workers/llm/llmEvents';
import { SdCliRunner } from '../workers/sd/sdCliRunner';

export interface Workers {
  llm: EmbeddedLlm | LlamaServerLlm | null;
  image: ImageRunner | null;
  /** What the sd.cpp binary supports; a full set until it has been probed. */
  capabilities(): SdCapabilities;
  /** Settles once the binary has been probed (or failed to be). */
  ready: Promise<void>;
  /** The LLM worker's pid while it runs. */
  llmPid(): number | undefined;
  dispose(): Promise<void>;
}

/** Names tried on PATH when no sd.cpp binary is configured, newest release first. */
const SD_BINARY_NAMES = ['sd-cli', 'sd'];

export async function createWorkers(settings: SidecarSettings, deviceKind: DeviceKind, log: Log): Promise<Workers> {
  if (!settings.allowBinaries) {
    log('info', 'untrusted workspace: no engine is started (trust the workspace to run jobs)');
    return {
      llm: null,
      image: null,
      capabilities: () => FULL_SD_CAPABILITIES,
      ready: Promise.resolve(),
      llmPid: () => undefined,
      dispose: async () => undefined,
    };
  }

  const llm = createLlm(settings, deviceKind, log);
  let capabilities: SdCapabilities = FULL_SD_CAPABILITIES;
  // An empty path makes every image job fail with the message that says what to set.
  const binaryPath = settings.image.binaryPath.trim() || (await findOnPath(SD_BINARY_NAMES)) || '';
  const image = new SdCliRunner({ binaryPath, onLog: (line) => log('debug', `sd.cpp: ${line}`) });
  const ready = (async () => {
    if (!binaryPath) {
      log('info', 'no stable-diffusion.cpp binary configured or on PATH: image jobs will fail until vramRelay.image.binaryPath is set');
      return;
    }
    try {
      const help = await image.capabilities();
      capabilities = help.capabilities;
      log('info', `image engine: ${help.binaryPath} (${help.kind}, backend ${help.capabilities.backend})`);
    } catch (error) {
      log('warn', `image engine: ${(error as Error).message}`);
    }
  })();

  return {
    llm,
    image,
    capabilities: () => capabilities,
    ready,
    llmPid: () => (llm instanceof EmbeddedLlm ? llm.workerPid() : llm instanceof LlamaServerLlm ? llm.serverPid() : undefined),
    async dispose() {
      await Promise.allSettled([image?.stopResident(), llm?.setState('stopped')]);
    },
  };
}

function createLlm(settings: SidecarSettings, deviceKind: DeviceKind, log: Log): EmbeddedLlm | LlamaServerLlm | null {
  const { modelPath, engine, serverPath, contextSize } = settings.llm;
  if (!modelPath.trim()) {
    log('info', 'no LLM model configured (vramRelay.llm.modelPath): LLM jobs are refused');
    return null;
  }
  const onEvent = (event: LlmEvent) => {
    if (event.type === 'log') log(event.level, `llm: ${event.message}`);
    else if (event.type === 'crash' || event.type === 'gaveUp') log('warn', `llm: ${JSON.stringify(event)}`);
    else log('debug', `llm: ${JSON.stringify(event)}`);
  };
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

async function findOnPath(names: readonly string[]): Promise<string | undefined> {
  for (const name of names) {
    const found = await resolveLlamaServerBinary(name).catch(() => undefined);
    if (found) return found;
  }
  return undefined;
}
