/**
 * What the fault tests share: the real Arbiter over the real sd-cli runner, which starts the sd.cpp stand-in (bundled,
 * so that hundreds of runs stay fast) on a shared simulated device; figures that match what the stand-in allocates;
 * and the checks every fault must pass (a valid image or a clear error, nothing half-written, no process left).
 */

import { readdirSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { build } from 'esbuild';
import { PNG } from 'pngjs';
import { Arbiter, type ArbiterOptions } from '../../../sidecar/core/arbiter';
import { systemClock, type ImageRunner, type ImageRunResult, type LlmControl, type StageProgress } from '../../../sidecar/core/ports';
import { GiB, MiB, type ImageJobCosts, type ImageJobSpec, type LlmCosts, type Plan } from '../../../sidecar/core/types';
import { SimulatedDevice } from '../../../sidecar/devices/simulatedDevice';
import type { LlmWorkerEntry } from '../../../sidecar/workers/llm/embeddedLlm';
import { SdCliRunner, type SdCliRunnerOptions } from '../../../sidecar/workers/sd/sdCliRunner';
import type { SdHelpInfo } from '../../../sidecar/workers/sd/sdHelp';
import { sdcppStandinEnv, type SdcppStandinOptions, writeModelFile } from '../../standins/sdcppStandin';
import { bundleSdcppStandin } from '../../standins/sdcppStandinBundle';
import { diffusionComputeBytes, teComputeBytes, vaeDecodeBytes, weightBytes, type StandinRun } from '../../standins/sdcppStandinCosts';
import { sdcppStandinFaultEnv, type SdcppStandinFaultOptions } from '../../standins/sdcppStandinFaults';

/** An SD1.5-sized checkpoint (sparse on disk). */
export const SD_MODEL_BYTES = 2 * GiB;

/** What the arbiter is told the LLM holds (the real one runs on the CPU here): hot 4.25 GiB, so large images make it yield. */
export const LLM_COSTS: LlmCosts = {
  modelPath: 'tiny.gguf',
  layerCount: 2,
  gpuLayers: 2,
  contextSize: 256,
  weights: 3 * GiB,
  kvCache: 1 * GiB,
  compute: 256 * MiB,
  reloadWeightsMs: 100,
  recreateContextMs: 30,
  startProcessMs: 3000,
};

/** The figures of a job exactly as the stand-in allocates them (SD1.5 proportions of the checkpoint). */
export function standinImageCosts(spec: ImageJobSpec, checkpointBytes = SD_MODEL_BYTES): ImageJobCosts {
  const run: StandinRun = {
    family: 'sd1',
    width: spec.width,
    height: spec.height,
    frames: 1,
    vaeTiling: false,
    temporalTiling: false,
    vaeConvDirect: false,
    flashAttention: false,
  };
  const weights = weightBytes('sd1', { checkpoint: checkpointBytes });
  return {
    family: 'sd1',
    width: spec.width,
    height: spec.height,
    batch: spec.batch,
    frames: 1,
    weights: { textEncoder: weights.te, diffusion: weights.diffusion, vae: weights.vae },
    compute: {
      textEncoder: teComputeBytes(run),
      diffusion: diffusionComputeBytes(run),
      diffusionFlash: diffusionComputeBytes({ ...run, flashAttention: true }),
      vaeDecode: vaeDecodeBytes(run),
      vaeDecodeTiled: vaeDecodeBytes({ ...run, vaeTiling: true }),
    },
    time: { textEncodeMs: 30, samplingMs: 60, vaeDecodeMs: 30, vaeTiledExtraMs: 20, vaeCpuExtraMs: 200, textEncoderCpuExtraMs: 50, offloadExtraMs: 300 },
    calibrated: [],
  };
}

/** The arbiter holds one image runner; each test case gives it a runner with that case's stand-in settings. */
export class SwitchableImageRunner implements ImageRunner {
  constructor(public current: ImageRunner) {}

  run(job: ImageJobSpec, plan: Plan, onProgress: (p: StageProgress) => void, signal: AbortSignal): Promise<ImageRunResult> {
    return this.current.run(job, plan, onProgress, signal);
  }

  stopResident(): Promise<void> {
    return this.current.stopResident();
  }
}

export interface ImageRigOptions {
  capacity: number;
}

export interface RigArbiterOptions {
  llm?: LlmControl | null;
  marginBytes?: number;
  /** Anything else to set (a device source that fails, other timeouts). */
  extra?: Partial<ArbiterOptions>;
}

/**
 * A temporary root with: the shared device, a model file, the bundled stand-in, an output folder, and a private
 * temporary folder that the runner and the stand-in use (TMPDIR points there while the rig lives).
 */
export class ImageRig {
  readonly outDir: string;
  readonly tmpDir: string;
  readonly deviceDir: string;
  readonly model: string;
  readonly image: SwitchableImageRunner;
  arbiter!: Arbiter;
  device!: SimulatedDevice;
  binary!: string;
  help!: SdHelpInfo;
  private savedTmp: string | undefined;
  private runs = 0;

  private constructor(readonly root: string) {
    this.outDir = join(root, 'out');
    this.tmpDir = join(root, 'tmp');
    this.deviceDir = join(root, 'device');
    this.model = join(root, 'sd15.safetensors');
    this.image = new SwitchableImageRunner({ run: () => Promise.reject(new Error('no runner yet')), stopResident: async () => undefined });
  }

  static async create(options: ImageRigOptions): Promise<ImageRig> {
    const rig = new ImageRig(await mkdtemp(join(tmpdir(), 'vrelay-faults-')));
    await Promise.all([mkdir(rig.outDir), mkdir(rig.tmpDir), mkdir(join(rig.root, 'bin'))]);
    rig.device = SimulatedDevice.createShared(rig.deviceDir, { capacity: options.capacity });
    await writeModelFile(rig.model, SD_MODEL_BYTES);
    rig.binary = await bundleSdcppStandin(join(rig.root, 'bin'));
    rig.help = await new SdCliRunner({ binaryPath: rig.binary }).capabilities();
    rig.image.current = rig.runner();
    // The runner's private folders, and anything the stand-in writes to its temporary folder, go here.
    rig.savedTmp = process.env.TMPDIR;
    process.env.TMPDIR = rig.tmpDir;
    return rig;
  }

  /** The arbiter over the rig's image runner and device (and `llm`, wanted hot, when given: bring it there first). */
  startArbiter(options: RigArbiterOptions = {}): Arbiter {
    this.arbiter?.dispose();
    const llm = options.llm ?? null;
    this.arbiter = new Arbiter({
      device: () => this.device.snapshot(),
      marginBytes: options.marginBytes ?? 256 * MiB,
      llm,
      image: this.image,
      costs: { image: (spec) => standinImageCosts(spec), llm: () => (llm ? LLM_COSTS : null) },
      capabilities: () => this.help.capabilities,
      clock: systemClock,
      memoryWaitTimeoutMs: 3000,
      memoryPollMs: 25,
      ...(llm ? { llmWantedState: 'hot' as const } : {}),
      ...options.extra,
    });
    return this.arbiter;
  }

  /** A runner for the stand-in with these settings (every run logs its pid to `argsLog`). */
  runner(
    standin: SdcppStandinOptions = {},
    faults: SdcppStandinFaultOptions = {},
    extra: Partial<SdCliRunnerOptions> = {},
  ): SdCliRunner {
    return new SdCliRunner({
      binaryPath: this.binary,
      help: this.help,
      env: { ...sdcppStandinEnv({ deviceDir: this.deviceDir, stepMs: 5, argsLog: this.argsLog, ...standin }), ...sdcppStandinFaultEnv(faults) },
      hangTimeoutMs: 30_000,
      killGraceMs: 500,
      ...extra,
    });
  }

  get argsLog(): string {
    return join(this.root, 'runs.jsonl');
  }

  /** Every stand-in run so far, oldest first: its pid and command line. */
  standinRuns(): { pid: number; argv: string[] }[] {
    let text = '';
    try {
      text = readFileSync(this.argsLog, 'utf8');
    } catch {
      return [];
    }
    return text
      .split('\n')
      .filter((l) => l.trim() !== '')
      .map((l) => JSON.parse(l) as { pid: number; argv: string[] });
  }

  standinPids(): number[] {
    return this.standinRuns().map((r) => r.pid);
  }

  standinArgs(): string[][] {
    return this.standinRuns().map((r) => r.argv);
  }

  imageSpec(name: string, over: Partial<ImageJobSpec> = {}): ImageJobSpec {
    return {
      kind: 'image',
      modelPath: this.model,
      prompt: 'a lighthouse in a storm',
      width: 256,
      height: 256,
      batch: 1,
      steps: 4,
      seed: 1000 + ++this.runs,
      outputPath: join(this.outDir, `${name}.png`),
      ...over,
    };
  }

  /** Entries of the private temporary folder (tsx's compile cache aside, which the LLM worker may keep there). */
  tmpEntries(): string[] {
    return readdirSync(this.tmpDir).filter((n) => !n.startsWith('tsx-'));
  }

  async dispose(): Promise<void> {
    this.arbiter?.dispose();
    if (this.savedTmp === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = this.savedTmp;
    await removeTree(this.root);
  }
}

/**
 * The LLM worker bundled from the current source, as the extension ships it (dist/llmWorker.mjs), into `dir`: it
 * starts in about 1 s instead of 3 s under the TypeScript loader, which matters when a test restarts it dozens of
 * times. node-llama-cpp stays outside the bundle (native binaries), imported from this checkout by its file URL.
 */
export async function bundleLlmWorker(dir: string): Promise<LlmWorkerEntry> {
  const modulePath = join(dir, 'llmWorker.mjs');
  const require = createRequire(__filename);
  const library = pathToFileURL(require.resolve('node-llama-cpp')).href;
  await build({
    entryPoints: [require.resolve('../../../sidecar/workers/llm/llmWorkerMain.ts')],
    outfile: modulePath,
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'esm',
    logLevel: 'silent',
    banner: { js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" },
    plugins: [
      {
        name: 'node-llama-cpp-from-checkout',
        setup(b) {
          b.onResolve({ filter: /^node-llama-cpp$/ }, () => ({ path: library, external: true }));
        },
      },
    ],
  });
  return { modulePath, execArgv: [] };
}

/** Removes a folder, retrying while a process that was just killed may still hold something in it. */
export async function removeTree(path: string): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      await rm(path, { recursive: true, force: true });
      return;
    } catch (error) {
      if (attempt >= 5) throw error;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Checks

/** What is wrong with the PNG at `path` (missing, unreadable, wrong size, uniform), or undefined when it is a real image. */
export async function imageProblem(path: string, width: number, height: number): Promise<string | undefined> {
  let png: PNG;
  try {
    png = PNG.sync.read(await readFile(path));
  } catch (error) {
    return `${path} is not a readable PNG (${(error as Error).message})`;
  }
  if (png.width !== width || png.height !== height) return `${path} is ${png.width}x${png.height}, not ${width}x${height}`;
  let sum = 0;
  let sumSq = 0;
  const n = png.width * png.height * 3;
  for (let i = 0; i < png.data.length; i += 4) {
    for (let c = 0; c < 3; c++) {
      const v = png.data[i + c];
      sum += v;
      sumSq += v * v;
    }
  }
  const mean = sum / n;
  const stdDev = Math.sqrt(Math.max(0, sumSq / n - mean * mean));
  return stdDev < 5 ? `${path} is (nearly) uniform: standard deviation ${stdDev.toFixed(2)}` : undefined;
}

/**
 * Pids of this process's living children (Linux: from /proc; elsewhere an empty list), leaving out esbuild's service
 * process, which the TypeScript loader and the stand-in bundler keep for the life of the test process.
 */
export function childPids(): number[] {
  if (process.platform !== 'linux') return [];
  const pids: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      // Fields after the command (which may hold spaces): state, ppid, ...
      const [state, ppid] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(ppid) !== process.pid || state === 'Z') continue;
      const command = readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0');
      if (/esbuild/.test(command[0]) && command.some((arg) => arg.startsWith('--service'))) continue;
      pids.push(Number(name));
    } catch {
      // Gone meanwhile.
    }
  }
  return pids.sort((a, b) => a - b);
}

export function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: nothing after ${ms} ms`)), ms);
    }),
  ]);
}

export async function waitUntil(condition: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`${what}: not after ${ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** A seeded generator of numbers in [0, 1) (mulberry32): the same seed replays the same schedule. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
