/**
 * A stand-in for stable-diffusion.cpp's `sd-cli` (or the older `sd`), for tests on machines without sd.cpp or a GPU.
 *
 * It accepts sd.cpp's flags, prints sd.cpp's log lines in sd.cpp's order (buffer sizes with `-v`), allocates each
 * stage's buffers from the shared simulated device named by VRAM_RELAY_SIM_DEVICE (placements on the CPU allocate
 * nothing there), writes a real PNG whose pattern depends only on the seed, and fails the way sd.cpp fails:
 *   - newer builds: `vae: failed to allocate the compute buffer`, `decode_first_stage failed for latent 1`, exit 1,
 *     no image;
 *   - older builds: a success log and a uniform gray PNG;
 *   - a CUDA out-of-memory abort: `CUDA error: out of memory`, exit 134.
 *
 * Run: node --import tsx test/standins/sdcpp-standin.ts <sd-cli flags>   (or the executable test/standins/sd-cli)
 * Knobs (environment; see sdcppStandin.ts for a typed helper):
 *   VRAM_RELAY_SIM_DEVICE=<dir>       shared simulated device to allocate from (none: every allocation succeeds)
 *   SDCPP_STANDIN_RELEASE=new|old     flags, log wording and failure style of a current sd-cli or an old `sd`
 *   SDCPP_STANDIN_OOM=graceful|silent|abort|retry-tiled
 *                                     what an allocation failure does (default: new -> graceful, old -> silent)
 *   SDCPP_STANDIN_OLD_LOGS_ALLOC_ERROR=1  silent failures still print the allocation error lines
 *   SDCPP_STANDIN_FAMILY=sd1|sdxl|flux|wan  buffer names and proportions (default sd1; wan for -M vid_gen)
 *   SDCPP_STANDIN_BACKEND=cuda|vulkan|cpu   backend named in the log; cpu allocates nothing on the device
 *   SDCPP_STANDIN_STEP_MS=<ms>        delay per sampling step (default 0)
 *   SDCPP_STANDIN_CRASH_AT=load|textEncode|diffusion|vaeDecode|save   die there
 *   SDCPP_STANDIN_CRASH_STEP=<k>      with CRASH_AT=diffusion: after step k (default 1)
 *   SDCPP_STANDIN_CRASH_MODE=abort|kill   exit 134 after a GGML_ASSERT line, or SIGKILL itself (default abort)
 *   SDCPP_STANDIN_HANG_AT=<stage>     stop printing there and wait forever (same stages as CRASH_AT)
 *   SDCPP_STANDIN_NAN=1               write an all-black image with a success log (fp16 NaN in the VAE)
 *   SDCPP_STANDIN_ARGS_LOG=<file>     append {pid, argv, env-free summary} as one JSON line per run
 *   SDCPP_STANDIN_STAGE_MS, SDCPP_STANDIN_SAVE_MS, SDCPP_STANDIN_CRASH_ONCE: fault-test timing (sdcppStandinFaults.ts)
 */

import { appendFileSync, existsSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type ServerResponse } from 'node:http';
import { basename, dirname, extname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { PNG } from 'pngjs';
import { SimulatedDevice, SimulatedOutOfMemoryError } from '../../sidecar/devices/simulatedDevice';
import {
  diffusionComputeBytes,
  FAMILIES,
  mbText,
  type StandinFamily,
  type StandinModule,
  type StandinRun,
  teComputeBytes,
  vaeDecodeBytes,
  weightBytes,
} from './sdcppStandinCosts';
import { newReleaseHelp, oldReleaseHelp, serverHelp } from './sdcppStandinHelp';
import { applyCrashOnce, stageWork, writeImageLikeSdcpp } from './sdcppStandinFaults';

type Release = 'new' | 'old';
type OomStyle = 'graceful' | 'silent' | 'abort' | 'retry-tiled';
type Stage = 'load' | 'textEncode' | 'diffusion' | 'vaeDecode' | 'save';

const env = process.env;
const release: Release = env.SDCPP_STANDIN_RELEASE === 'old' ? 'old' : 'new';
/** The name the usage text shows: the wrapper script passes its own path. */
const program = env.SDCPP_STANDIN_PROGRAM ?? (release === 'old' ? 'sd' : 'sd-cli');
const oomStyle: OomStyle = (env.SDCPP_STANDIN_OOM as OomStyle | undefined) ?? (release === 'old' ? 'silent' : 'graceful');
const backendName = (env.SDCPP_STANDIN_BACKEND ?? 'cuda').toLowerCase();
const owner = String(process.pid);

// ---------------------------------------------------------------------------------------------------------------
// Command line

interface Options {
  mode: string;
  model?: string;
  diffusionModel?: string;
  vae?: string;
  teFiles: string[];
  taesd?: string;
  prompt?: string;
  negative: string;
  width: number;
  height: number;
  steps: number;
  cfgScale: number;
  seed: number;
  batch: number;
  frames: number;
  output: string;
  samplingMethod: string;
  verbose: boolean;
  vaeTiling: boolean;
  temporalTiling: boolean;
  flashAttention: boolean;
  vaeConvDirect: boolean;
  offload: boolean;
  cpu: Set<StandinModule>;
  paramsCpu: Set<StandinModule>;
  /** sd-server only. */
  listenIp: string;
  listenPort?: number;
}

/** Options taking a value, per release; everything else known is a switch. */
const VALUE_FLAGS_NEW = new Set([
  '-o', '--output', '--output-begin-idx', '--preview-path', '-M', '--mode', '--preview', '-m', '--model', '--clip_l', '--clip_g',
  '--t5xxl', '--llm', '--diffusion-model', '--vae', '--taesd', '--control-net', '--embd-dir', '--lora-model-dir', '--backend',
  '--params-backend', '-t', '--threads', '--max-vram', '--auto-fit', '--type', '--rng', '-p', '--prompt', '-n',
  '--negative-prompt', '-i', '--init-img', '-H', '--height', '-W', '--width', '--steps', '--clip-skip', '-b', '--batch-count',
  '--video-frames', '--fps', '--cfg-scale', '--guidance', '--strength', '--vae-tile-overlap', '-s', '--seed',
  '--sampling-method', '--scheduler', '--vae-tile-size', '-l', '--listen-ip', '--listen-port',
]);
const SWITCHES_NEW = new Set([
  '-v', '--verbose', '--color', '-h', '--help', '--stream-layers', '--offload-to-cpu', '--mmap', '--control-net-cpu',
  '--clip-on-cpu', '--vae-on-cpu', '--fa', '--diffusion-fa', '--diffusion-conv-direct', '--vae-conv-direct', '--list-devices',
  '--vae-tiling', '--temporal-tiling', '--version',
]);
const VALUE_FLAGS_OLD = new Set([
  '-M', '--mode', '-t', '--threads', '-m', '--model', '--diffusion-model', '--clip_l', '--clip_g', '--t5xxl', '--vae', '--taesd',
  '--embd-dir', '--type', '--lora-model-dir', '-o', '--output', '-p', '--prompt', '-n', '--negative-prompt', '--cfg-scale',
  '--strength', '-H', '--height', '-W', '--width', '--sampling-method', '--steps', '--rng', '-s', '--seed', '-b',
  '--batch-count', '--schedule', '--clip-skip',
]);
const SWITCHES_OLD = new Set(['-h', '--help', '--vae-tiling', '--vae-on-cpu', '--clip-on-cpu', '--diffusion-fa', '--control-net-cpu', '--color', '-v', '--verbose']);

function usage(): string {
  if (release === 'old') return oldReleaseHelp(program);
  return /sd-server/.test(basename(program)) ? serverHelp(program) : newReleaseHelp(program);
}

function fail(message: string, code = 1): never {
  process.stderr.write(`${message}\n`);
  process.exit(code);
}

function parseArgs(argv: string[]): Options {
  const valueFlags = release === 'old' ? VALUE_FLAGS_OLD : VALUE_FLAGS_NEW;
  const switches = release === 'old' ? SWITCHES_OLD : SWITCHES_NEW;
  const o: Options = {
    mode: release === 'old' ? 'txt2img' : 'img_gen',
    teFiles: [],
    negative: '',
    width: 512,
    height: 512,
    steps: 20,
    cfgScale: 7,
    seed: 42,
    batch: 1,
    frames: 1,
    output: './output.png',
    samplingMethod: 'euler_a',
    verbose: false,
    vaeTiling: false,
    temporalTiling: false,
    flashAttention: false,
    vaeConvDirect: false,
    offload: false,
    cpu: new Set(),
    paramsCpu: new Set(),
    listenIp: '127.0.0.1',
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '-h' || arg === '--help') {
      process.stdout.write(usage());
      process.exit(0);
    }
    if (arg === '--version' && release === 'new') {
      process.stdout.write('stable-diffusion.cpp version master-standin, commit 0000000 (test stand-in)\n');
      process.exit(0);
    }
    if (switches.has(arg)) {
      if (arg === '-v' || arg === '--verbose') o.verbose = true;
      if (arg === '--vae-tiling') o.vaeTiling = true;
      if (arg === '--temporal-tiling') o.temporalTiling = true;
      if (arg === '--diffusion-fa' || arg === '--fa') o.flashAttention = true;
      if (arg === '--vae-conv-direct') o.vaeConvDirect = true;
      if (arg === '--offload-to-cpu') o.offload = true;
      if (arg === '--clip-on-cpu') o.cpu.add('te');
      if (arg === '--vae-on-cpu') o.cpu.add('vae');
      continue;
    }
    if (!valueFlags.has(arg)) {
      process.stderr.write(`[ERROR] main.cpp:212  - error: unknown argument: ${arg}\n`);
      process.stdout.write(usage());
      process.exit(1);
    }
    const value = argv[++i];
    if (value === undefined) fail(`[ERROR] main.cpp:220  - error: invalid parameter for argument: ${arg}`);
    const int = () => {
      const n = Number(value);
      if (!Number.isFinite(n)) fail(`[ERROR] main.cpp:220  - error: invalid parameter for argument: ${arg}`);
      return Math.trunc(n);
    };
    switch (arg) {
      case '-M': case '--mode': o.mode = value; break;
      case '-m': case '--model': o.model = value; break;
      case '--diffusion-model': o.diffusionModel = value; break;
      case '--vae': o.vae = value; break;
      case '--taesd': o.taesd = value; break;
      case '--clip_l': case '--clip_g': case '--t5xxl': case '--llm': o.teFiles.push(value); break;
      case '-p': case '--prompt': o.prompt = value; break;
      case '-n': case '--negative-prompt': o.negative = value; break;
      case '-W': case '--width': o.width = int(); break;
      case '-H': case '--height': o.height = int(); break;
      case '--steps': o.steps = int(); break;
      case '--cfg-scale': o.cfgScale = Number(value); break;
      case '-s': case '--seed': o.seed = int(); break;
      case '-b': case '--batch-count': o.batch = int(); break;
      case '--video-frames': o.frames = int(); break;
      case '-o': case '--output': o.output = value; break;
      case '--sampling-method': o.samplingMethod = value; break;
      case '-l': case '--listen-ip': o.listenIp = value; break;
      case '--listen-port': o.listenPort = int(); break;
      case '--backend': for (const m of backendAssignment(value, arg)) o.cpu.add(m); break;
      case '--params-backend': for (const m of backendAssignment(value, arg)) o.paramsCpu.add(m); break;
      default: break;
    }
  }
  return o;
}

/** Modules assigned to the CPU (or disk, for parameters) by a `--backend`/`--params-backend` value. */
function backendAssignment(value: string, flag: string): StandinModule[] {
  const modules: StandinModule[] = [];
  const onCpu = (device: string) => /^(cpu|disk)$/i.test(device.trim());
  for (const entry of value.split(',')) {
    const [left, right] = entry.includes('=') ? entry.split('=') : ['*', entry];
    if (right === undefined || right.trim() === '') fail(`[ERROR] main.cpp:230  - error: invalid ${flag} assignment '${entry}'`);
    const name = left.trim().toLowerCase().replace(/[-_]/g, '');
    const targets: StandinModule[] =
      ['*', 'all', 'default'].includes(name) ? ['te', 'diffusion', 'vae']
      : ['te', 'clip', 'text', 'textencoder', 'textencoders', 'conditioner', 'cond', 'llm', 't5', 't5xxl'].includes(name) ? ['te']
      : ['diffusion', 'model', 'unet', 'dit'].includes(name) ? ['diffusion']
      : ['vae', 'firststage', 'autoencoder', 'tae'].includes(name) ? ['vae']
      : [];
    if (targets.length === 0 && !['clipvision', 'vision', 'controlnet', 'control', 'photomaker', 'upscaler'].includes(name)) {
      fail(`[ERROR] main.cpp:230  - error: unknown module '${left}' in ${flag}`);
    }
    if (onCpu(right)) modules.push(...targets);
  }
  return modules;
}

// ---------------------------------------------------------------------------------------------------------------
// Logging in sd.cpp's format

const out = (text: string) => process.stdout.write(text);
const err = (text: string) => process.stderr.write(text);
function info(where: string, message: string): void {
  out(`[INFO ] ${where.padEnd(24)} - ${message}\n`);
}
function debug(where: string, message: string): void {
  if (opts.verbose) out(`[DEBUG] ${where.padEnd(24)} - ${message}\n`);
}
function warn(where: string, message: string): void {
  out(`[WARN ] ${where.padEnd(24)} - ${message}\n`);
}
function error(where: string, message: string): void {
  err(`[ERROR] ${where.padEnd(24)} - ${message}\n`);
}
const secs = (ms: number) => `${(ms / 1000).toFixed(2)}s`;

// ---------------------------------------------------------------------------------------------------------------
// The device

let device: SimulatedDevice | null = null;
const deviceName = backendName === 'vulkan' ? 'Vulkan0' : 'CUDA0';

/** Allocates on the device; returns the id, or the error when it does not fit. No device: nothing to check. */
function allocate(bytes: number, label: string): { id?: string; oom?: SimulatedOutOfMemoryError } {
  if (!device || backendName === 'cpu' || bytes <= 0) return {};
  try {
    return { id: device.allocate(owner, bytes, label) };
  } catch (e) {
    if (e instanceof SimulatedOutOfMemoryError) return { oom: e };
    throw e;
  }
}

function free(id: string | undefined): void {
  if (id && device) device.release(id);
}

/**
 * The lines ggml prints when cudaMalloc fails, then the abort when the style says so. A silent failure prints
 * nothing (unless asked to): the gray image is then the only sign, as users of older builds reported.
 */
function reportAllocFailure(e: SimulatedOutOfMemoryError, bytes: number, canBeSilent = false): void {
  if (canBeSilent && oomStyle === 'silent' && env.SDCPP_STANDIN_OLD_LOGS_ALLOC_ERROR !== '1') return;
  const mib = (bytes / 1048576).toFixed(2);
  if (backendName === 'vulkan') {
    err(`ggml_vulkan: Device memory allocation of size ${bytes} failed.\nggml_vulkan: vk::Device::allocateMemory: ErrorOutOfDeviceMemory\n`);
  } else {
    err(`ggml_backend_cuda_buffer_type_alloc_buffer: allocating ${mib} MiB on device 0: cudaMalloc failed: out of memory\n`);
  }
  err(`ggml_gallocr_reserve_n: failed to allocate ${deviceName} buffer of size ${bytes}\n`);
  if (oomStyle === 'abort') cudaAbort(e);
}

function cudaAbort(e: SimulatedOutOfMemoryError): never {
  err(
    `CUDA error: out of memory\n  current device: 0, in function ggml_backend_cuda_buffer_type_alloc_buffer at ggml/src/ggml-cuda/ggml-cuda.cu:634\n` +
      `  cudaMalloc(&ptr, size) (${e.message})\nggml/src/ggml-cuda/ggml-cuda.cu:75: CUDA error\n`,
  );
  cleanupDevice();
  process.exit(134);
}

function cleanupDevice(): void {
  try {
    device?.releaseOwner(owner);
  } catch {
    // The device directory may be gone already (a test cleaned up): nothing left to free.
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Stage hooks for the test knobs

async function checkpoint(stage: Stage, step?: number): Promise<void> {
  await stageWork(env, step);
  if (env.SDCPP_STANDIN_HANG_AT === stage && (step === undefined || step === Number(env.SDCPP_STANDIN_CRASH_STEP ?? 1))) {
    // A hung GPU call: nothing more is printed and the process never ends by itself.
    await new Promise(() => setInterval(() => undefined, 60_000));
  }
  if (env.SDCPP_STANDIN_CRASH_AT === stage && (step === undefined || step === Number(env.SDCPP_STANDIN_CRASH_STEP ?? 1))) {
    crash(stage);
  }
}

function crash(stage: Stage): never {
  if (env.SDCPP_STANDIN_CRASH_MODE === 'kill') process.kill(process.pid, 'SIGKILL');
  err(`ggml/src/ggml-cuda/ggml-cuda.cu:2421: GGML_ASSERT(ok) failed during ${stage}\n`);
  cleanupDevice();
  process.exit(134);
}

// ---------------------------------------------------------------------------------------------------------------
// The image

/** A pattern that depends only on the seed and size: the same seed gives the same image. */
function patternPng(width: number, height: number, seed: number): Buffer {
  const png = new PNG({ width, height });
  const s = (Math.abs(seed) * 2654435761) >>> 0;
  const a = (s & 0xff) | 1;
  const b = (s >>> 8) & 0xff;
  const c = (s >>> 16) & 0xff;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 4;
      png.data[i] = (x * a + b) & 0xff;
      png.data[i + 1] = (y * 3 + c + ((x >> 4) ^ (y >> 4)) * 16) & 0xff;
      png.data[i + 2] = ((x ^ y) + a * 7) & 0xff;
      png.data[i + 3] = 255;
    }
  }
  return PNG.sync.write(png);
}

function uniformPng(width: number, height: number, value: number): Buffer {
  const png = new PNG({ width, height });
  for (let i = 0; i < width * height; i++) {
    png.data[i * 4] = value;
    png.data[i * 4 + 1] = value;
    png.data[i * 4 + 2] = value;
    png.data[i * 4 + 3] = 255;
  }
  return PNG.sync.write(png);
}

/** sd.cpp's output names: printf patterns, `name_1.png`... for batches (older: `name.png`, `name_2.png`...). */
function outputPaths(output: string, count: number, video: boolean): string[] {
  const hasPattern = release === 'new' && /%0?\d*d/.test(output);
  const ext = extname(output);
  const base = join(dirname(output), basename(output, ext));
  if (hasPattern) {
    return Array.from({ length: count }, (_, i) => output.replace(/%(0?)(\d*)d/, (_m, zero: string, width: string) => String(i).padStart(Number(width || 0), zero ? '0' : ' ')));
  }
  if (video && count > 1) return [`${base}.avi`];
  if (count === 1) return [`${base}.png`];
  return Array.from({ length: count }, (_, i) => (release === 'old' ? (i === 0 ? `${base}.png` : `${base}_${i + 1}.png`) : `${base}_${i + 1}.png`));
}

// ---------------------------------------------------------------------------------------------------------------
// Loading and generating (shared by the CLI and the server)

const opts = parseArgs(process.argv.slice(2));
const serverMode = release === 'new' && opts.listenPort !== undefined;
const family: StandinFamily = (env.SDCPP_STANDIN_FAMILY as StandinFamily | undefined) ?? (opts.mode === 'vid_gen' ? 'wan' : 'sd1');
const names = FAMILIES[family].names;
let weights: Record<StandinModule, number> = { te: 0, diffusion: 0, vae: 0 };

/** Modules whose parameters live in RAM: run on the CPU, offloaded, or placed there by --params-backend. */
const inRam = (m: StandinModule) => opts.cpu.has(m) || opts.offload || opts.paramsCpu.has(m) || backendName === 'cpu';
const whereText = (m: StandinModule) => (inRam(m) ? 'RAM' : 'VRAM');
const tensors = (m: StandinModule) => (m === 'te' ? 196 : m === 'vae' ? 140 : 686);

/** Reads the model files and allocates the weights that stay on the device. False (after logging why) on failure. */
async function loadModel(): Promise<boolean> {
  const t0 = Date.now();
  if (backendName === 'cuda') {
    const total = device ? Math.round(device.config().capacity / 1048576) : 12288;
    info('ggml_extend.hpp:63', `ggml_cuda_init: found 1 CUDA devices (Total VRAM: ${total} MiB):`);
    info('ggml_extend.hpp:63', `  Device 0: ${device ? device.config().name : 'Simulated GPU'}, compute capability 8.9, VMM: yes, VRAM: ${total} MiB`);
  } else if (backendName === 'vulkan') {
    info('ggml_extend.hpp:63', 'ggml_vulkan: Found 1 Vulkan devices:');
  } else {
    debug('stable-diffusion.cpp:159', 'Using CPU backend');
  }
  const mainModel = opts.model ?? opts.diffusionModel!;
  info('stable-diffusion.cpp:212', `loading ${opts.model ? 'model' : 'diffusion model'} from '${mainModel}'`);
  await checkpoint('load');
  for (const path of [mainModel, ...opts.teFiles, ...(opts.vae ? [opts.vae] : []), ...(opts.taesd ? [opts.taesd] : [])]) {
    if (!existsSync(path) || !statSync(path).isFile()) {
      error('model.cpp:1043', `init model loader from file failed: '${path}'`);
      info('main.cpp:620', 'new_sd_ctx_t failed');
      return false;
    }
  }
  const files: { checkpoint?: number; te?: number; diffusion?: number; vae?: number } = {};
  if (opts.model) files.checkpoint = statSync(opts.model).size;
  if (opts.diffusionModel) files.diffusion = statSync(opts.diffusionModel).size;
  if (opts.teFiles.length > 0) files.te = opts.teFiles.reduce((sum, p) => sum + statSync(p).size, 0);
  if (opts.vae) files.vae = statSync(opts.vae).size;
  weights = weightBytes(family, files);
  info('stable-diffusion.cpp:305', `Version: ${FAMILIES[family].version}`);

  for (const m of ['te', 'diffusion', 'vae'] as StandinModule[]) {
    if (inRam(m)) continue;
    const { oom } = allocate(weights[m], `${names[m]} params`);
    if (oom) {
      reportAllocFailure(oom, weights[m]);
      error('ggml_extend.hpp:1579', `${names[m]} alloc params backend buffer failed, num_tensors = ${tensors(m)}`);
      info('main.cpp:620', 'new_sd_ctx_t failed');
      return false;
    }
  }
  if (release === 'old') {
    for (const m of ['te', 'diffusion', 'vae'] as StandinModule[]) {
      debug('ggml_extend.hpp:1050', `${names[m]} params backend buffer size =  ${mbText(weights[m])} MB(${whereText(m)}) (${tensors(m)} tensors)`);
    }
  }
  const vramTotal = (['te', 'diffusion', 'vae'] as StandinModule[]).filter((m) => !inRam(m)).reduce((sum, m) => sum + weights[m], 0);
  const allTotal = weights.te + weights.diffusion + weights.vae;
  const labels = release === 'old' ? { te: 'clip', diffusion: 'unet', vae: 'vae' } : { te: 'text_encoders', diffusion: 'diffusion_model', vae: 'vae' };
  info(
    'stable-diffusion.cpp:873',
    `total params memory size = ${mbText(allTotal)}MB (VRAM ${mbText(vramTotal)}MB, RAM ${mbText(allTotal - vramTotal)}MB): ` +
      `${labels.te} ${mbText(weights.te)}MB(${whereText('te')}), ${labels.diffusion} ${mbText(weights.diffusion)}MB(${whereText('diffusion')}), ` +
      `${labels.vae} ${mbText(weights.vae)}MB(${whereText('vae')}), controlnet 0.00MB(VRAM), pmid 0.00MB(VRAM)`,
  );
  if (release === 'old') info('stable-diffusion.cpp:486', `loading model from '${mainModel}' completed, taking ${secs(Date.now() - t0)}`);
  info('stable-diffusion.cpp:931', 'running in eps-prediction mode');
  return true;
}

/** One generation request (from the command line, or a server job). */
interface GenRequest {
  width: number;
  height: number;
  steps: number;
  seed: number;
  batch: number;
  frames: number;
  samplingMethod: string;
  vaeTiling: boolean;
  temporalTiling: boolean;
}

type GenResult = { ok: true; images: Buffer[] } | { ok: false; cancelled?: boolean };

/** Stage buffers come and go around each stage; a compute buffer that does not fit fails the way the build does. */
async function generate(req: GenRequest, isCancelled: () => boolean = () => false): Promise<GenResult> {
  const video = req.frames > 1;
  const run: StandinRun = {
    family,
    width: req.width,
    height: req.height,
    frames: Math.max(1, req.frames),
    vaeTiling: req.vaeTiling,
    temporalTiling: req.temporalTiling,
    vaeConvDirect: opts.vaeConvDirect,
    flashAttention: opts.flashAttention,
  };
  let gray = false;

  /** Allocates a stage's buffer (plus staged weights when offloaded), runs `body`, frees. */
  const withCompute = async (m: StandinModule, bytes: number, body: () => Promise<void>): Promise<'ok' | 'failed'> => {
    const onDevice = !opts.cpu.has(m) && backendName !== 'cpu';
    const ids: (string | undefined)[] = [];
    if (onDevice && inRam(m)) {
      // Offloaded parameters are copied to the device for the stage that needs them.
      const staged = allocate(weights[m], `${names[m]} params (staged)`);
      if (staged.oom) {
        reportAllocFailure(staged.oom, weights[m]);
        error('ggml_extend.hpp:1579', `${names[m]} alloc params backend buffer failed, num_tensors = ${tensors(m)}`);
        return 'failed';
      }
      ids.push(staged.id);
    }
    const compute = onDevice ? allocate(bytes, `${names[m]} compute`) : {};
    if (compute.oom) {
      reportAllocFailure(compute.oom, bytes, true);
      ids.forEach(free);
      if (oomStyle === 'silent') {
        // Older builds carry on without the buffer: the stage "completes" and the image comes out gray.
        if (env.SDCPP_STANDIN_OLD_LOGS_ALLOC_ERROR === '1') error('ggml_extend.hpp:1597', `${names[m]}: failed to allocate the compute buffer`);
        gray = true;
        await body();
        return 'ok';
      }
      error('ggml_extend.hpp:1597', `${names[m]}: failed to allocate the compute buffer`);
      return 'failed';
    }
    ids.push(compute.id);
    debug('ggml_extend.hpp:1583', `${names[m]} compute buffer size: ${mbText(bytes)} MB(${onDevice ? 'VRAM' : 'RAM'})`);
    try {
      await body();
    } finally {
      ids.forEach(free);
    }
    return 'ok';
  };

  // Text encoding
  const tStart = Date.now();
  if (release === 'new') info('stable-diffusion.cpp:3367', `generate_image ${req.width}x${req.height}`);
  await checkpoint('textEncode');
  if ((await withCompute('te', teComputeBytes(run), async () => undefined)) === 'failed') {
    error('stable-diffusion.cpp:3170', 'get_learned_condition failed');
    return { ok: false };
  }
  const teMs = Date.now() - tStart;
  info('stable-diffusion.cpp:3168', `get_learned_condition completed, taking ${release === 'old' ? `${teMs} ms` : secs(teMs)}`);
  info('stable-diffusion.cpp:2814', `sampling using ${req.samplingMethod === 'euler' ? 'Euler' : 'Euler A'} method`);

  // Sampling, one image (or one video) at a time
  const images = video ? 1 : Math.max(1, req.batch);
  const stepMs = Number(env.SDCPP_STANDIN_STEP_MS ?? 0);
  const sampleStart = Date.now();
  let stopped = false;
  for (let n = 0; n < images && !stopped; n++) {
    info('stable-diffusion.cpp:3401', `generating ${video ? 'video' : 'image'}: ${n + 1}/${images} - seed ${req.seed + n}`);
    const sampled = await withCompute('diffusion', diffusionComputeBytes(run), async () => {
      const started = Date.now();
      for (let k = 1; k <= req.steps; k++) {
        if (stepMs > 0) await sleep(stepMs);
        if (isCancelled()) {
          stopped = true;
          out('\n');
          return;
        }
        const perStep = (Date.now() - started) / 1000 / k;
        const filled = Math.floor((k * 50) / req.steps);
        const bar = '='.repeat(Math.min(filled, 50)) + (filled < 50 ? '>' : '') + ' '.repeat(Math.max(0, 49 - filled));
        out(perStep > 1 ? `\r  |${bar}| ${k}/${req.steps} - ${perStep.toFixed(2)}s/it` : `\r  |${bar}| ${k}/${req.steps} - ${(perStep > 0 ? 1 / perStep : 99.99).toFixed(2)}it/s\x1b[K`);
        if (k === req.steps) out('\n');
        await checkpoint('diffusion', k);
      }
    });
    if (sampled === 'failed') {
      error('stable-diffusion.cpp:2256', 'diffusion model compute failed');
      return { ok: false };
    }
    if (!stopped) info('stable-diffusion.cpp:3432', `sampling completed, taking ${secs(Date.now() - sampleStart)}`);
  }
  if (stopped) {
    info('stable-diffusion.cpp:3440', 'generation cancelled');
    return { ok: false, cancelled: true };
  }
  info('stable-diffusion.cpp:3452', `generating ${images} latent images completed, taking ${secs(Date.now() - sampleStart)}`);

  // Decoding
  const decodeStart = Date.now();
  info('stable-diffusion.cpp:3192', `decoding ${images} latents`);
  await checkpoint('vaeDecode');
  const grayImages: boolean[] = [];
  for (let n = 0; n < images; n++) {
    const grayBefore = gray;
    gray = false;
    let decoded = await withCompute('vae', vaeDecodeBytes(run), async () => undefined);
    if (decoded === 'failed' && oomStyle === 'retry-tiled' && !run.vaeTiling) {
      warn('stable-diffusion.cpp:3200', 'VAE decode failed, retrying with spatial tiling');
      decoded = await withCompute('vae', vaeDecodeBytes({ ...run, vaeTiling: true }), async () => undefined);
    }
    if (decoded === 'failed') {
      error('stable-diffusion.cpp:3205', `decode_first_stage failed for latent ${n + 1}`);
      return { ok: false };
    }
    grayImages.push(gray || grayBefore);
    info('stable-diffusion.cpp:3208', `latent ${n + 1} decoded, taking ${secs(Date.now() - decodeStart)}`);
  }
  info('stable-diffusion.cpp:3212', `decode_first_stage completed, taking ${secs(Date.now() - decodeStart)}`);
  info('stable-diffusion.cpp:3591', `${release === 'old' ? 'txt2img' : video ? 'generate_video' : 'generate_image'} completed in ${secs(Date.now() - tStart)}`);

  const count = video ? run.frames : images;
  const result: Buffer[] = [];
  for (let i = 0; i < count; i++) {
    const isGray = grayImages[video ? 0 : i];
    result.push(
      env.SDCPP_STANDIN_NAN === '1' ? uniformPng(req.width, req.height, 0)
      : isGray ? uniformPng(req.width, req.height, 127)
      : patternPng(req.width, req.height, video ? req.seed + i * 7919 : req.seed + i),
    );
  }
  return { ok: true, images: result };
}

// ---------------------------------------------------------------------------------------------------------------
// sd-cli: one run, files on disk

async function cliMain(): Promise<number> {
  const video = opts.mode === 'vid_gen';
  if (opts.mode !== 'img_gen' && opts.mode !== 'txt2img' && !video) fail(`[ERROR] main.cpp:240  - error: invalid run mode ${opts.mode}`);
  if (!opts.prompt) fail('[ERROR] main.cpp:250  - error: the following arguments are required: prompt');
  if (!opts.model && !opts.diffusionModel) fail('[ERROR] main.cpp:251  - error: the following arguments are required: model_path/diffusion_model');
  if (release === 'old' && (opts.width % 64 !== 0 || opts.height % 64 !== 0)) fail('error: the width and height must be multiples of 64');
  if (opts.steps <= 0) fail('error: the sample_steps must be greater than 0');

  if (!(await loadModel())) return 1;
  const result = await generate({
    width: opts.width,
    height: opts.height,
    steps: opts.steps,
    seed: opts.seed,
    batch: opts.batch,
    frames: video ? Math.max(1, opts.frames) : 1,
    samplingMethod: opts.samplingMethod,
    vaeTiling: opts.vaeTiling,
    temporalTiling: opts.temporalTiling,
  });
  if (!result.ok) {
    error('main.cpp:890', 'generate failed');
    return 1;
  }

  if (env.SDCPP_STANDIN_CRASH_AT !== 'save') await checkpoint('save');
  const paths = outputPaths(opts.output, result.images.length, video);
  if (paths.length === 1 && result.images.length > 1) {
    // A video container: not decodable here, only a file with the right header.
    writeFileSync(paths[0], Buffer.concat([Buffer.from('RIFF'), Buffer.alloc(4), Buffer.from('AVI LIST'), Buffer.alloc(256, 1)]));
    info('main.cpp:470', `save result MJPG AVI video to '${paths[0]}'`);
    return 0;
  }
  let saved = 0;
  for (const [i, path] of paths.entries()) {
    const png = result.images[i];
    if (env.SDCPP_STANDIN_CRASH_AT === 'save') {
      // Dies halfway through writing the file, as a process killed mid-write would.
      writeFileSync(path, png.subarray(0, Math.floor(png.length / 2)));
      crash('save');
    }
    // Like stb_image_write: only a file that cannot be opened counts as a failure.
    const ok = await writeImageLikeSdcpp(env, path, png);
    if (ok) saved++;
    if (release === 'old') out(`save result image to '${path}'\n`);
    else info('main.cpp:441', `save result image ${i} to '${path}' (${ok ? 'success' : 'failure'})`);
  }
  if (release === 'new') info('main.cpp:490', `${saved}/${paths.length} images saved`);
  return release === 'new' && saved === 0 ? 1 : 0;
}

// ---------------------------------------------------------------------------------------------------------------
// sd-server: the model stays loaded; jobs through the native async API (/sdcpp/v1/img_gen and /sdcpp/v1/jobs/{id})

interface ServerJob {
  id: string;
  kind: 'img_gen' | 'vid_gen';
  status: 'queued' | 'generating' | 'completed' | 'failed' | 'cancelled';
  created: number;
  started: number | null;
  completed: number | null;
  queue_position: number;
  result: { output_format: string; images: { index: number; b64_json: string }[] } | null;
  error: { code: string; message: string } | null;
  request: GenRequest;
  cancelRequested: boolean;
}

async function serverMain(): Promise<number> {
  if (!opts.model && !opts.diffusionModel) fail('[ERROR] main.cpp:251  - error: the following arguments are required: model_path/diffusion_model');
  if (!(await loadModel())) return 1;

  const jobs = new Map<string, ServerJob>();
  const queue: ServerJob[] = [];
  let nextId = 1;
  let busy = false;
  const now = () => Math.floor(Date.now() / 1000);
  const view = (job: ServerJob) => {
    const { request: _request, cancelRequested: _cancel, ...rest } = job;
    return { ...rest, queue_position: Math.max(0, queue.indexOf(job)) };
  };

  const pump = async () => {
    if (busy) return;
    const job = queue.shift();
    if (!job) return;
    busy = true;
    job.status = 'generating';
    job.started = now();
    const result = await generate(job.request, () => job.cancelRequested);
    job.completed = now();
    if (result.ok) {
      job.status = 'completed';
      job.result = { output_format: 'png', images: result.images.map((png, index) => ({ index, b64_json: png.toString('base64') })) };
    } else if (result.cancelled) {
      job.status = 'cancelled';
      job.error = { code: 'cancelled', message: 'job cancelled by client' };
    } else {
      job.status = 'failed';
      job.error = { code: 'generation_failed', message: 'generate_image returned empty results' };
    }
    busy = false;
    void pump();
  };

  const send = (res: ServerResponse, code: number, body: unknown) => {
    const text = JSON.stringify(body);
    res.writeHead(code, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
    res.end(text);
  };

  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const url = new URL(req.url ?? '/', 'http://localhost');
      const path = url.pathname;
      if (req.method === 'GET' && path === '/') {
        res.writeHead(200, { 'Content-Type': 'text/html' });
        res.end('<html><body>stable-diffusion.cpp server (test stand-in)</body></html>');
        return;
      }
      const kind = path === '/sdcpp/v1/img_gen' ? 'img_gen' : path === '/sdcpp/v1/vid_gen' ? 'vid_gen' : undefined;
      if (req.method === 'POST' && kind) {
        let body: Record<string, unknown>;
        try {
          body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>;
        } catch {
          send(res, 400, { error: 'invalid_request', message: 'invalid JSON' });
          return;
        }
        const sample = (body.sample_params ?? {}) as { sample_steps?: number; sample_method?: string };
        const tiling = (body.vae_tiling_params ?? {}) as { enabled?: boolean; temporal_tiling?: boolean };
        const request: GenRequest = {
          width: Number(body.width ?? 512),
          height: Number(body.height ?? 512),
          steps: Number(sample.sample_steps ?? 20),
          seed: Number(body.seed ?? 42),
          batch: kind === 'img_gen' ? Number(body.batch_count ?? 1) : 1,
          frames: kind === 'vid_gen' ? Number(body.video_frames ?? 1) : 1,
          samplingMethod: sample.sample_method ?? 'euler_a',
          vaeTiling: tiling.enabled === true,
          temporalTiling: tiling.temporal_tiling === true,
        };
        if (typeof body.prompt !== 'string' || !(request.width > 0) || !(request.height > 0) || !(request.steps > 0)) {
          send(res, 400, { error: 'invalid_request', message: 'invalid generation parameters' });
          return;
        }
        const job: ServerJob = {
          id: `job_${process.pid}_${nextId++}`,
          kind,
          status: 'queued',
          created: now(),
          started: null,
          completed: null,
          queue_position: 0,
          result: null,
          error: null,
          request,
          cancelRequested: false,
        };
        if (env.SDCPP_STANDIN_ARGS_LOG) {
          // The server takes its prompt over HTTP, not argv: record it so tests can see what was asked of it.
          const record = { pid: process.pid, release, request: { kind, prompt: body.prompt, ...request } };
          appendFileSync(env.SDCPP_STANDIN_ARGS_LOG, `${JSON.stringify(record)}\n`);
        }
        jobs.set(job.id, job);
        queue.push(job);
        send(res, 202, { id: job.id, kind, status: job.status, created: job.created, poll_url: `/sdcpp/v1/jobs/${job.id}` });
        void pump();
        return;
      }
      const jobMatch = /^\/sdcpp\/v1\/jobs\/([^/]+)(\/cancel)?$/.exec(path);
      const job = jobMatch ? jobs.get(jobMatch[1]) : undefined;
      if (jobMatch && !job) {
        send(res, 404, { error: 'not_found', message: 'job not found' });
        return;
      }
      if (job && req.method === 'GET' && !jobMatch![2]) {
        send(res, 200, view(job));
        return;
      }
      if (job && req.method === 'POST' && jobMatch![2]) {
        if (job.status === 'completed' || job.status === 'failed' || job.status === 'cancelled') {
          send(res, 409, view(job));
          return;
        }
        job.cancelRequested = true;
        if (job.status === 'queued') {
          queue.splice(queue.indexOf(job), 1);
          job.status = 'cancelled';
          job.completed = now();
          job.error = { code: 'cancelled', message: 'job cancelled by client' };
        }
        send(res, 200, view(job));
        return;
      }
      send(res, 404, { error: 'not_found', message: `no route for ${req.method} ${path}` });
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.listenPort, opts.listenIp, () => resolve());
  }).catch((e: Error) => fail(`[ERROR] main.cpp:160  - failed to bind ${opts.listenIp}:${opts.listenPort}: ${e.message}`));
  info('main.cpp:151', `listening on: http://${opts.listenIp}:${opts.listenPort}`);
  // Serves until stopped (SIGTERM/SIGKILL), like the real server.
  await new Promise<void>(() => undefined);
  return 0;
}

function main(): Promise<number> {
  applyCrashOnce(env);
  if (env.SDCPP_STANDIN_ARGS_LOG) {
    appendFileSync(env.SDCPP_STANDIN_ARGS_LOG, `${JSON.stringify({ pid: process.pid, release, argv: process.argv.slice(2) })}\n`);
  }
  const dir = env.VRAM_RELAY_SIM_DEVICE;
  if (dir) device = SimulatedDevice.openShared(dir);
  return serverMode ? serverMain() : cliMain();
}

main().then(
  (code) => {
    cleanupDevice();
    process.exitCode = code;
  },
  (e: unknown) => {
    cleanupDevice();
    err(`[ERROR] main.cpp:1 - ${(e as Error).stack ?? String(e)}\n`);
    process.exitCode = 1;
  },
);
