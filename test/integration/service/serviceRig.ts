/**
 * One sidecar service per scenario, composed as in production (createSidecarService), over its own shared
 * simulated device, with the sd.cpp stand-in as the image engine. The service runs in this process and its engine
 * processes inherit this process's environment, so a rig sets the stand-in's knobs there and puts them back on
 * dispose.
 */

import { readdirSync, statSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { SidecarApi } from '../../../sidecar/api';
import type { DecisionEvent, ImageJobSpec, JobSpec } from '../../../sidecar/core/types';
import { GiB } from '../../../sidecar/core/types';
import { SIM_DEVICE_ENV, SimulatedDevice, type SimulatedDeviceOptions } from '../../../sidecar/devices/simulatedDevice';
import type { JobDoneParams, JobProgressParams, SidecarSettings } from '../../../sidecar/protocol';
import { createSidecarService } from '../../../sidecar/service';
import { readStandinArgsLog, SDCPP_STANDIN_BIN, sdcppStandinEnv, type SdcppStandinOptions, type StandinInvocation } from '../../standins/sdcppStandin';
import { SD1_UNET, clipTextTensors, klVaeTensors, unetTensors, writeSafetensors } from '../../unit/models/imageCheckpoints';

export const WAIT_MS = 60_000;

export function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
    }),
  ]);
}

/** An SD1.5 checkpoint with real tensor shapes (a sparse file: its size is what the stand-in loads). */
export async function writeSd15(path: string): Promise<string> {
  await writeSafetensors(path, [
    ...unetTensors('model.diffusion_model.', SD1_UNET),
    ...clipTextTensors('cond_stage_model.transformer.text_model.'),
    ...klVaeTensors('first_stage_model.', 4),
    { name: 'alphas_cumprod', shape: [1000] },
  ]);
  return path;
}

export interface RigOptions {
  /** Where the scenario keeps its files (a fresh folder inside the test's temp folder). */
  dir: string;
  imageModel: string;
  device?: Partial<SimulatedDeviceOptions>;
  /** The stand-in's knobs (the device and the args log are filled in). */
  standin?: SdcppStandinOptions;
  /** More environment for the engines (e.g. the fault knobs). */
  env?: Record<string, string>;
  llm?: Partial<SidecarSettings['llm']>;
  image?: Partial<SidecarSettings['image']>;
}

export interface Rig {
  service: SidecarApi;
  device: SimulatedDevice;
  dir: string;
  out: string;
  logs: string[];
  progress: JobProgressParams[];
  settings: SidecarSettings;
  image(name: string, over?: Partial<ImageJobSpec>): ImageJobSpec;
  /** Submits and waits for the end of the job. */
  run(spec: JobSpec): Promise<JobDoneParams>;
  decisions(jobId?: string): Promise<DecisionEvent[]>;
  /** The stand-in's runs so far (sd-server starts included), oldest first. */
  standinRuns(): Promise<StandinInvocation[]>;
  /** Every file in the output folder, hidden ones included. */
  outputFiles(): string[];
  dispose(): Promise<void>;
}

const ENGINE_ENV_PREFIX = 'SDCPP_STANDIN_';

export async function startRig(options: RigOptions): Promise<Rig> {
  const { dir } = options;
  const out = join(dir, 'out');
  await mkdir(out, { recursive: true });
  const device = SimulatedDevice.createShared(join(dir, 'device'), { capacity: 12 * GiB, ...options.device });
  const argsLog = join(dir, 'standin-runs.jsonl');

  const saved = new Map<string, string | undefined>();
  for (const key of Object.keys(process.env)) if (key.startsWith(ENGINE_ENV_PREFIX)) saved.set(key, process.env[key]);
  saved.set(SIM_DEVICE_ENV, process.env[SIM_DEVICE_ENV]);
  const env = { ...sdcppStandinEnv({ ...options.standin, deviceDir: device.dir, argsLog }), ...options.env };
  for (const key of saved.keys()) delete process.env[key];
  for (const [key, value] of Object.entries(env)) {
    if (!saved.has(key)) saved.set(key, process.env[key]);
    process.env[key] = value;
  }

  const settings: SidecarSettings = {
    device: 'simulated',
    simulatedCapacityMiB: 12 * 1024,
    safetyMarginMiB: 512,
    pollIntervalMs: 200,
    llm: { modelPath: '', engine: 'embedded', serverPath: '', contextSize: 256, idleWarmSeconds: 0, idleColdSeconds: 0, ...options.llm },
    image: { binaryPath: SDCPP_STANDIN_BIN, modelPath: options.imageModel, keepResident: false, ...options.image },
    storageDir: join(dir, 'storage'),
    allowBinaries: true,
  };
  const logs: string[] = [];
  const progress: JobProgressParams[] = [];
  const service = createSidecarService({ log: (level, message) => logs.push(`[${level}] ${message}`) });
  service.onNotification((method, params) => {
    if (method === 'vramRelay/jobProgress') progress.push(params as JobProgressParams);
  });
  const restoreEnv = () => {
    for (const [key, value] of saved) {
      if (value === undefined) delete process.env[key];
      else process.env[key] = value;
    }
  };
  const image = (name: string, over: Partial<ImageJobSpec> = {}): ImageJobSpec => ({
    kind: 'image',
    modelPath: options.imageModel,
    prompt: 'a lighthouse at dusk',
    width: 512,
    height: 512,
    batch: 1,
    steps: 4,
    seed: 42,
    outputPath: join(out, `${name}.png`),
    ...over,
  });
  try {
    await withTimeout(service.configure(settings), WAIT_MS, 'configure');
    // A preview waits for the engine binaries to be probed, so that jobs plan at once from here on.
    await withTimeout(service.previewPlan({ spec: image('preview') }), WAIT_MS, 'previewPlan');
  } catch (error) {
    await service.dispose();
    restoreEnv();
    throw error;
  }

  return {
    service,
    device,
    dir,
    out,
    logs,
    progress,
    settings,
    image,
    async run(spec) {
      const { jobId } = await service.submitJob({ spec });
      return withTimeout(service.waitJob({ jobId }), WAIT_MS, `job ${jobId}`);
    },
    decisions: (jobId) => service.getDecisions(jobId ? { jobId } : {}),
    standinRuns: () => readStandinArgsLog(argsLog),
    outputFiles: () => readdirSync(out).sort(),
    async dispose() {
      await service.dispose();
      restoreEnv();
    },
  };
}

/** The value of a flag in one stand-in run's argv. */
export function flagValue(run: StandinInvocation, flag: string): string | undefined {
  const i = run.argv.indexOf(flag);
  return i >= 0 ? run.argv[i + 1] : undefined;
}

export function fileSize(path: string): number {
  return statSync(path).size;
}
