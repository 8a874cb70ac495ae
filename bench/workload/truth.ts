/**
 * The "true" memory and time of every stage, the same for every policy: what the fake workers allocate on the
 * simulated device and how long they take. It is built from the published figures of memory-facts.md, not from the
 * estimators, and is off from them by seeded amounts, as a real machine is: a bias per model and buffer (a few %:
 * a given sd.cpp build allocates the same buffer for the same model and size every time, so the error of an
 * estimate is mostly systematic, which calibration can learn) plus a small jitter per job. Figures marked "assumed"
 * have no published source.
 */

import { Rng } from './rng';
import type { ImageModel } from './catalog';
import { LLM_CONTEXT } from './catalog';
import type { LlmModelMeta } from '../../sidecar/models/llmModelMeta';
import { MiB, type Bytes, type ImageComponent, type ImageModelFamily, type Millis } from '../../sidecar/core/types';

/** `older`: sd.cpp builds whose failed VAE allocation still "succeeds" and writes a gray image. */
export type SdBuild = 'current' | 'older';

// ---------------------------------------------------------------------------------------------------------------
// Image jobs

/** VAE decode compute bytes per output pixel: 1664.00 MB at 512x512 (current builds), 7680.25 MB at 1024x1024 (older). */
const VAE_BYTES_PER_PIXEL: Record<SdBuild, number> = { current: 6656, older: 7680 };
/** The fixed `.25` of every logged VAE buffer. */
const VAE_FIXED = 0.25 * MiB;
/** sd.cpp tiles are 32x32 latent pixels = 256x256 output pixels; the peak is one tile's buffer. */
const VAE_TILE_PIXELS = 256 * 256;
/** ComfyUI's efficient-attention activation factor: SD1.5 1.0, SDXL 0.8 (published); Flux assumed. */
const ACTIVATION_FACTOR: Partial<Record<ImageModelFamily, number>> = { sd1: 1.0, sdxl: 0.8, flux: 2.5 };
/** Largest self-attention: tokens per latent pixel, text tokens joined to it, heads (from the architectures). */
const ATTENTION: Partial<Record<ImageModelFamily, { perLatentPixel: number; textTokens: number; heads: number }>> = {
  sd1: { perLatentPixel: 1, textTokens: 0, heads: 8 },
  sdxl: { perLatentPixel: 1 / 4, textTokens: 0, heads: 10 },
  flux: { perLatentPixel: 1 / 4, textTokens: 256, heads: 24 },
};
/** Text encoder compute buffers (assumed: CLIP needs tens of MB, T5-XXL a couple of hundred). */
const TEXT_ENCODER_COMPUTE: Partial<Record<ImageModelFamily, Bytes>> = { sd1: 24 * MiB, sdxl: 48 * MiB, flux: 190 * MiB };
/** Weights on the device are the tensor bytes plus the backend's alignment padding (assumed 0.6%). */
const WEIGHT_PADDING = 1.006;

/** GPU sampling time per step at 1 megapixel, mid-range card (assumed); attention makes it grow faster than pixels. */
const SAMPLING_MS_PER_STEP_AT_1MPX: Partial<Record<ImageModelFamily, number>> = { sd1: 330, sdxl: 700, flux: 2100 };
const ATTENTION_GROWTH_PER_MPX = 0.12;
const TEXT_ENCODE_GPU_MS: Partial<Record<ImageModelFamily, number>> = { sd1: 40, sdxl: 90, flux: 350 };
/** On the CPU: CLIP is cheap, T5-XXL takes seconds (assumed). */
const TEXT_ENCODE_CPU_MS: Partial<Record<ImageModelFamily, number>> = { sd1: 300, sdxl: 800, flux: 9000 };
/** VAE decode: GPU, tiled (extra passes and per-tile launches), CPU ("a few seconds" for 512-1024 px). */
const VAE_GPU_MS_PER_MPX = 450;
const VAE_TILED_FACTOR = 1.7;
const VAE_TILE_MS = 12;
const VAE_CPU_FIXED_MS = 1200;
const VAE_CPU_MS_PER_MPX = 3000;
/** Each sd-cli run starts a process and reads the weights from the page cache (assumed 5 GB/s with conversion). */
const SD_START_MS = 700;
const SD_READ_BYTES_PER_MS = 5e9 / 1000;
/** --offload-to-cpu moves a component's weights to the device for its stage (PCIe 4.0 x16, ~12 GB/s in practice). */
const OFFLOAD_BYTES_PER_MS = 12e9 / 1000;

export interface ImageJobTruth {
  /** Bytes each component's weights take on the device once there. */
  weights: Record<ImageComponent, Bytes>;
  /** Per image (sd.cpp samples and decodes the images of a batch one after the other). */
  compute: { textEncoder: Bytes; diffusion: Bytes; diffusionFlash: Bytes; vaeDecode: Bytes; vaeDecodeTiled: Bytes };
  time: {
    /** Per sd-cli run. */
    startMs: Millis;
    textEncodeGpuMs: Millis;
    textEncodeCpuMs: Millis;
    /** Per image. */
    samplingMs: Millis;
    samplingFlashMs: Millis;
    vaeGpuMs: Millis;
    vaeTiledMs: Millis;
    vaeCpuMs: Millis;
  };
  /** Time to move `bytes` of weights to the device under --offload-to-cpu. */
  offloadMs(bytes: Bytes): Millis;
  /** Buffers that fail silently on this build (a gray image instead of an error). */
  build: SdBuild;
}

export interface ImageJobShape {
  width: number;
  height: number;
  steps: number;
  /** Seed of this job's noise. */
  truthSeed: number;
}

/** Systematic error of each figure for one model (seeded per session and model). */
interface ModelBias {
  vae: number;
  vaeTiled: number;
  activation: number;
  scores: number;
  textEncoder: number;
  sampling: number;
}

function modelBias(model: ImageModel, biasSeed: number): ModelBias {
  const rng = new Rng((biasSeed ^ hashOf(model.path)) >>> 0);
  return {
    vae: rng.uniform(0.97, 1.06),
    vaeTiled: rng.uniform(0.95, 1.12),
    activation: rng.uniform(0.96, 1.08),
    scores: rng.uniform(0.97, 1.05),
    textEncoder: rng.uniform(0.9, 1.2),
    sampling: rng.uniform(0.9, 1.1),
  };
}

function hashOf(text: string): number {
  let h = 2166136261;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 16777619);
  return h >>> 0;
}

/**
 * The true figures of one job. `biasSeed` fixes the systematic error of each model for the session; the job's own
 * `truthSeed` adds up to 1% of jitter to buffers and 3% to times.
 */
export function imageTruth(model: ImageModel, job: ImageJobShape, build: SdBuild, biasSeed: number): ImageJobTruth {
  const bias = modelBias(model, biasSeed);
  const rng = new Rng(job.truthSeed);
  const jitter = () => rng.uniform(0.99, 1.01);
  const timeJitter = () => rng.uniform(0.97, 1.03);
  const family = model.family;
  const pixels = job.width * job.height;
  const mpx = pixels / 1e6;
  const latentArea = (job.width / 8) * (job.height / 8);
  const attention = ATTENTION[family] ?? { perLatentPixel: 1 / 4, textTokens: 256, heads: 24 };
  const tokens = Math.ceil(latentArea * attention.perLatentPixel) + attention.textTokens;

  const vaeBpp = VAE_BYTES_PER_PIXEL[build];
  const vaeDecode = Math.round(vaeBpp * pixels * bias.vae * jitter() + VAE_FIXED);
  const vaeDecodeTiled = Math.min(vaeDecode, Math.round(vaeBpp * VAE_TILE_PIXELS * bias.vaeTiled * jitter() + VAE_FIXED));
  const linear = Math.round(latentArea * 2 * 0.01 * (ACTIVATION_FACTOR[family] ?? 2.5) * MiB * bias.activation * jitter());
  const scores = Math.round(tokens * tokens * attention.heads * 4 * bias.scores * jitter());
  const textEncoder = Math.round((TEXT_ENCODER_COMPUTE[family] ?? 190 * MiB) * bias.textEncoder * jitter());

  const stepMs = (SAMPLING_MS_PER_STEP_AT_1MPX[family] ?? 2100) * mpx * ((1 + ATTENTION_GROWTH_PER_MPX * mpx) / (1 + ATTENTION_GROWTH_PER_MPX));
  const samplingMs = Math.round(stepMs * job.steps * bias.sampling * timeJitter());
  const vaeGpuMs = Math.round((50 + VAE_GPU_MS_PER_MPX * mpx) * timeJitter());
  const tiles = Math.ceil(job.width / 128 - 1) * Math.ceil(job.height / 128 - 1);
  const totalWeights = model.weights.textEncoder + model.weights.diffusion + model.weights.vae;

  return {
    weights: {
      textEncoder: Math.round(model.weights.textEncoder * WEIGHT_PADDING),
      diffusion: Math.round(model.weights.diffusion * WEIGHT_PADDING),
      vae: Math.round(model.weights.vae * WEIGHT_PADDING),
    },
    compute: { textEncoder, diffusion: linear + scores, diffusionFlash: linear, vaeDecode, vaeDecodeTiled },
    time: {
      startMs: Math.round(SD_START_MS + totalWeights / SD_READ_BYTES_PER_MS),
      textEncodeGpuMs: Math.round((TEXT_ENCODE_GPU_MS[family] ?? 350) * timeJitter()),
      textEncodeCpuMs: Math.round((TEXT_ENCODE_CPU_MS[family] ?? 9000) * timeJitter()),
      samplingMs,
      // Flash attention is a little faster as well as smaller.
      samplingFlashMs: Math.round(samplingMs * 0.95),
      vaeGpuMs,
      vaeTiledMs: Math.round(vaeGpuMs * VAE_TILED_FACTOR + VAE_TILE_MS * Math.max(1, tiles)),
      vaeCpuMs: Math.round((VAE_CPU_FIXED_MS + VAE_CPU_MS_PER_MPX * mpx) * timeJitter()),
    },
    offloadMs: (bytes) => Math.round(bytes / OFFLOAD_BYTES_PER_MS),
    build,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// The LLM (llama.cpp)

/**
 * Prompt processing and generation speed, all layers on the GPU or all on the CPU (assumed, 7B Q4_K_M; the CPU
 * figures scale with the trace's cpuSpeed, to see how the results depend on them).
 */
const PROMPT_TOKENS_PER_S = { gpu: 1800, cpu: 90 };
const GEN_TOKENS_PER_S = { gpu: 42, cpu: 7 };
const REQUEST_OVERHEAD_MS = 30;
/** Transitions: process start (Node + native binding), weights from the page cache, context creation, teardown. */
const LLM_START_MS = 1300;
const LLM_LOAD_FIXED_MS = 350;
const LLM_LOAD_BYTES_PER_MS = 16e9 / 1000;
const LLM_CONTEXT_FIXED_MS = 150;
const LLM_CONTEXT_BYTES_PER_MS = 50e9 / 1000;
const LLM_DROP_CONTEXT_MS = 60;
const LLM_DROP_WEIGHTS_MS = 120;
/** A stopped process gives its memory back when it has exited (Ollama sees 0.5-1.5 s; assumed 0.5 s here). */
const LLM_EXIT_MS = 500;
const LLAMA_UBATCH = 512;
const KV_F16 = 2;

export interface LlmRequestShape {
  promptTokens: number;
  genTokens: number;
}

export interface LlmTruth {
  meta: LlmModelMeta;
  contextSize: number;
  /** Blocks on the GPU for a `gpuLayers` value. */
  blocks(gpuLayers: number): number;
  weights(gpuLayers: number): Bytes;
  kv(gpuLayers: number): Bytes;
  compute(gpuLayers: number): Bytes;
  hot(gpuLayers: number): Bytes;
  startMs: Millis;
  loadMs(gpuLayers: number): Millis;
  contextMs(gpuLayers: number): Millis;
  dropContextMs: Millis;
  dropWeightsMs: Millis;
  exitMs: Millis;
  /** Compute time of a request with `gpuLayers` on the GPU, alone on the device, `heldTokens` of its prompt held. */
  requestMs(request: LlmRequestShape, gpuLayers: number, heldTokens?: number): Millis;
  /** The same in its two phases: evaluating the prompt (with the request's overhead), then generating. */
  requestPhasesMs(request: LlmRequestShape, gpuLayers: number, heldTokens?: number): { promptMs: Millis; genMs: Millis };
}

export function llmTruth(meta: LlmModelMeta, seed: number, contextSize = LLM_CONTEXT, cpuSpeed = 1): LlmTruth {
  const rng = new Rng(seed);
  // llama.cpp's compute buffer for this graph is within a few % of the largest-stage figure (assumed spread).
  const computeNoise = rng.uniform(0.98, 1.08);
  const blocks = (k: number) => Math.max(0, Math.min(Math.floor(k), meta.blockCount));
  const weights = (k: number) => {
    const b = blocks(k);
    const sum = meta.layerBytes.slice(meta.blockCount - b).reduce((s, x) => s + x, 0) + (k > meta.blockCount ? meta.outputBytes : 0);
    return Math.round(sum * 1.004);
  };
  // 2 * n_layer * n_ctx * n_head_kv * head_dim * bytes (memory-facts.md): exact in llama.cpp's log.
  const kv = (k: number) => contextSize * meta.headCountKv * (meta.keyLength + meta.valueLength) * KV_F16 * blocks(k);
  const compute = (k: number) => {
    if (k <= 0) return 0;
    const scores = LLAMA_UBATCH * contextSize * meta.headCount * 4;
    const mask = LLAMA_UBATCH * contextSize * 4;
    const hidden = 6 * LLAMA_UBATCH * meta.embeddingLength * 4;
    return Math.round((scores + mask + hidden) * computeNoise);
  };
  return {
    meta,
    contextSize,
    blocks,
    weights,
    kv,
    compute,
    hot: (k) => weights(k) + kv(k) + compute(k),
    startMs: LLM_START_MS,
    loadMs: (k) => Math.round(LLM_LOAD_FIXED_MS + weights(k) / LLM_LOAD_BYTES_PER_MS),
    contextMs: (k) => Math.round(LLM_CONTEXT_FIXED_MS + (kv(k) + compute(k)) / LLM_CONTEXT_BYTES_PER_MS),
    dropContextMs: LLM_DROP_CONTEXT_MS,
    dropWeightsMs: LLM_DROP_WEIGHTS_MS,
    exitMs: LLM_EXIT_MS,
    requestMs: (request, k, heldTokens = 0) => {
      const { promptMs, genMs } = phases(request, k, heldTokens);
      return promptMs + genMs;
    },
    requestPhasesMs: phases,
  };

  function phases(request: LlmRequestShape, k: number, heldTokens = 0): { promptMs: Millis; genMs: Millis } {
    const f = blocks(k) / meta.blockCount;
    const perPrompt = f / PROMPT_TOKENS_PER_S.gpu + (1 - f) / (PROMPT_TOKENS_PER_S.cpu * cpuSpeed);
    const perGen = f / GEN_TOKENS_PER_S.gpu + (1 - f) / (GEN_TOKENS_PER_S.cpu * cpuSpeed);
    // llama.cpp evaluates only the prompt after what the context holds; at least one token, to start generating.
    const promptTokens = Math.max(1, request.promptTokens - heldTokens);
    const promptMs = Math.round(REQUEST_OVERHEAD_MS + 1000 * promptTokens * perPrompt);
    return { promptMs, genMs: Math.round(REQUEST_OVERHEAD_MS + 1000 * (promptTokens * perPrompt + request.genTokens * perGen)) - promptMs };
  }
}
