/**
 * Typed access to the sd.cpp stand-in for tests: where its executables are, the environment that configures it,
 * and model files of any size (sparse, so a "4 GB checkpoint" costs no disk).
 *
 *   const runner = new SdCliRunner({ binaryPath: SDCPP_STANDIN_BIN, env: sdcppStandinEnv({ deviceDir, stepMs: 20 }) });
 */

import { open, readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { SIM_DEVICE_ENV } from '../../sidecar/devices/simulatedDevice';
import type { StandinFamily } from './sdcppStandinCosts';

/** `sd-cli` stand-in (current release unless `release: 'old'`). */
export const SDCPP_STANDIN_BIN = fileURLToPath(new URL('./sd-cli', import.meta.url));
/** `sd` stand-in: an older release by default. */
export const SDCPP_STANDIN_OLD_BIN = fileURLToPath(new URL('./sd', import.meta.url));
/** The script itself, for `node --import tsx <script> <flags>`. */
export const SDCPP_STANDIN_SCRIPT = fileURLToPath(new URL('./sdcpp-standin.ts', import.meta.url));

export type StandinStage = 'load' | 'textEncode' | 'diffusion' | 'vaeDecode' | 'save';

export interface SdcppStandinOptions {
  /** Shared simulated device directory (SimulatedDevice.createShared); absent: allocations always succeed. */
  deviceDir?: string;
  /** `new`: current sd-cli flags and failures; `old`: legacy flags, gray image with a success log. */
  release?: 'new' | 'old';
  /** What an allocation failure does; default `graceful` (new) or `silent` (old). */
  oom?: 'graceful' | 'silent' | 'abort' | 'retry-tiled';
  /** Silent failures still print the allocation error lines (ggml's cudaMalloc line and sd.cpp's). */
  oldLogsAllocError?: boolean;
  family?: StandinFamily;
  backend?: 'cuda' | 'vulkan' | 'cpu';
  /** Delay per sampling step in ms. */
  stepMs?: number;
  crashAt?: StandinStage;
  /** With crashAt/hangAt `diffusion`: the step after which it happens (default 1). */
  crashStep?: number;
  /** `abort`: GGML_ASSERT line and exit 134; `kill`: SIGKILL itself. */
  crashMode?: 'abort' | 'kill';
  hangAt?: StandinStage;
  /** All-black image with a success log (fp16 NaN in the VAE). */
  nan?: boolean;
  /** File to which every run appends `{pid, release, argv}` as a JSON line. */
  argsLog?: string;
}

/** The environment variables that configure the stand-in (merge over process.env). */
export function sdcppStandinEnv(o: SdcppStandinOptions = {}): Record<string, string> {
  const env: Record<string, string> = {};
  if (o.deviceDir) env[SIM_DEVICE_ENV] = o.deviceDir;
  if (o.release) env.SDCPP_STANDIN_RELEASE = o.release;
  if (o.oom) env.SDCPP_STANDIN_OOM = o.oom;
  if (o.oldLogsAllocError) env.SDCPP_STANDIN_OLD_LOGS_ALLOC_ERROR = '1';
  if (o.family) env.SDCPP_STANDIN_FAMILY = o.family;
  if (o.backend) env.SDCPP_STANDIN_BACKEND = o.backend;
  if (o.stepMs !== undefined) env.SDCPP_STANDIN_STEP_MS = String(o.stepMs);
  if (o.crashAt) env.SDCPP_STANDIN_CRASH_AT = o.crashAt;
  if (o.crashStep !== undefined) env.SDCPP_STANDIN_CRASH_STEP = String(o.crashStep);
  if (o.crashMode) env.SDCPP_STANDIN_CRASH_MODE = o.crashMode;
  if (o.hangAt) env.SDCPP_STANDIN_HANG_AT = o.hangAt;
  if (o.nan) env.SDCPP_STANDIN_NAN = '1';
  if (o.argsLog) env.SDCPP_STANDIN_ARGS_LOG = o.argsLog;
  return env;
}

export interface StandinInvocation {
  pid: number;
  release: 'new' | 'old';
  argv: string[];
}

/** A generation request that a resident stand-in sd-server received over HTTP. */
export interface StandinServerRequest {
  pid: number;
  release: 'new' | 'old';
  request: { kind: string; prompt: string; width: number; height: number; steps: number; seed: number; batch: number };
}

async function argsLogRecords(file: string): Promise<Record<string, unknown>[]> {
  const text = await readFile(file, 'utf8').catch(() => '');
  return text
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

/** The runs (process starts) recorded in an `argsLog` file, oldest first (empty when none ran). */
export async function readStandinArgsLog(file: string): Promise<StandinInvocation[]> {
  return (await argsLogRecords(file)).filter((r) => Array.isArray(r.argv)) as unknown as StandinInvocation[];
}

/** The requests resident stand-in servers received, oldest first. */
export async function readStandinServerRequests(file: string): Promise<StandinServerRequest[]> {
  return (await argsLogRecords(file)).filter((r) => r.request !== undefined) as unknown as StandinServerRequest[];
}

/** A model file of exactly `bytes` bytes (sparse: a few KB on disk). The stand-in reads only its size. */
export async function writeModelFile(path: string, bytes: number): Promise<string> {
  const handle = await open(path, 'w');
  try {
    await handle.write(Buffer.from('{"__metadata__":{"stand-in":"sd.cpp test model"}}'));
    await handle.truncate(Math.max(bytes, 64));
  } finally {
    await handle.close();
  }
  return path;
}
