/**
 * Memory and time of an image (or video) job under sd.cpp, for every placement the planner may pick (pure).
 *
 * What is assumed about sd.cpp:
 * - `-b N` (batch count) samples and decodes the N images one after the other ("decoding N latents",
 *   `decode_first_stage failed for latent i`), so compute buffers are sized for one image and only time grows with
 *   the batch. `batchInParallel` is there for engines that batch on the device: it scales the activations by N.
 * - The conditional and unconditional passes also run one after the other: one pass is one image.
 * - A video of F frames (WAN) is sampled as one latent of (F - 1) / 4 + 1 frames and decoded whole unless tiled;
 *   a tiled decode is assumed to hold one spatial tile of one latent frame's worth of output (4 frames) at a time.
 * - A TAESD part is counted as VAE weights; the decode estimate stays the full VAE's (the safe side).
 */

import type { ImageModelInfo } from '../../models/imageModelInfo';
import {
  CALIBRATION_KEYS,
  calibratedValue,
  estimateRow,
  imageSizeSetting,
  tileSetting,
  type CalibrationLookup,
  type Calibrated,
  type EstimateRow,
} from '../calibration';
import { MiB, type Bytes, type ImageComponent, type ImageJobCosts, type ImageModelFamily, type SdCapabilities } from '../types';
import {
  ACTIVATION_DTYPE_BYTES,
  ACTIVATION_FACTOR,
  ATTENTION_LAYOUT,
  ATTENTION_SCORE_BYTES,
  COMFY_ACTIVATION_MIB_PER_AREA_PER_DTYPE_BYTE,
  DEFAULT_STEPS,
  LATENT_CHANNELS,
  LOG_MB,
  PCIE4_BYTES_PER_MS,
  SAMPLING_MS_PER_STEP_PER_MPX,
  TEXT_ENCODE_CPU_MS,
  TEXT_ENCODE_MS,
  TEXT_ENCODER_COMPUTE,
  VAE_DECODE_BYTES_PER_PIXEL,
  VAE_DECODE_BYTES_PER_PIXEL_VULKAN_CONV_DIRECT,
  VAE_DECODE_CPU_FIXED_MS,
  VAE_DECODE_CPU_MS_PER_MPX,
  VAE_DECODE_FIXED_BYTES,
  VAE_DECODE_GPU_MS_PER_MPX,
  VAE_SPATIAL_SCALE,
  VAE_TEMPORAL_SCALE_WAN,
  VAE_TILE_LATENT,
  VAE_TILE_OVERHEAD_MS,
  VAE_TILE_OVERLAP,
} from './figures';

export type ImageBackend = SdCapabilities['backend'];

export interface ImageJobSize {
  width: number;
  height: number;
  /** Images per run (sd.cpp `-b`). */
  batch: number;
  /** Video frames; 1 for still images. */
  frames: number;
  /** Sampling steps; default 20. */
  steps?: number;
}

export interface ImageEstimateOptions {
  backend: ImageBackend;
  calibration?: CalibrationLookup;
  /** The binary runs the VAE with `--vae-conv-direct` (changes the per-pixel figure on Vulkan). */
  vaeConvDirect?: boolean;
  /** The engine samples the whole batch at once (not sd.cpp's default). */
  batchInParallel?: boolean;
  /** Host-to-device bandwidth for offloaded weights, bytes per ms. Default PCIe 4.0 x16. */
  hostToDeviceBytesPerMs?: number;
}

// ---------------------------------------------------------------------------------------------------------------
// Geometry

export interface LatentSize {
  width: number;
  height: number;
  frames: number;
}

/** The latent the diffusion model samples: W/8 x H/8 (rounded up), and (F - 1) / 4 + 1 latent frames for WAN. */
export function latentSize(model: Pick<ImageModelInfo, 'vaeScaleFactor' | 'vaeTemporalScaleFactor'>, job: Pick<ImageJobSize, 'width' | 'height' | 'frames'>): LatentSize {
  const scale = model.vaeScaleFactor || VAE_SPATIAL_SCALE;
  const temporal = model.vaeTemporalScaleFactor || 1;
  const frames = Math.max(1, job.frames);
  return {
    width: Math.ceil(job.width / scale),
    height: Math.ceil(job.height / scale),
    frames: temporal > 1 ? Math.floor((frames - 1) / temporal) + 1 : frames,
  };
}

/** Tiles along one side of sd.cpp's tiled decode: tiles of `tile` latent pixels, a stride of tile * (1 - overlap). */
export function tilesAlong(latent: number, tile = VAE_TILE_LATENT, overlap = VAE_TILE_OVERLAP): number {
  if (latent <= tile) return 1;
  const stride = Math.max(1, Math.round(tile * (1 - overlap)));
  return Math.ceil((latent - tile) / stride) + 1;
}

/** How many times the tiled decode covers the latent area (1 = no overlap work). */
export function tileCoverage(latentWidth: number, latentHeight: number, tile = VAE_TILE_LATENT, overlap = VAE_TILE_OVERLAP): number {
  const covered = tilesAlong(latentWidth, tile, overlap) * Math.min(tile, latentWidth) * tilesAlong(latentHeight, tile, overlap) * Math.min(tile, latentHeight);
  return covered / (latentWidth * latentHeight);
}

// ---------------------------------------------------------------------------------------------------------------
// Memory priors

export function vaeBytesPerPixel(backend: ImageBackend, convDirect = false): number {
  if (backend === 'vulkan' && convDirect) return VAE_DECODE_BYTES_PER_PIXEL_VULKAN_CONV_DIRECT;
  return VAE_DECODE_BYTES_PER_PIXEL[backend] ?? VAE_DECODE_BYTES_PER_PIXEL.unknown;
}

/** Whole-image VAE decode compute buffer: linear in output pixels (memory-facts.md:9-10). */
export function vaeDecodeBytes(pixels: number, backend: ImageBackend, convDirect = false): Bytes {
  return Math.round(vaeBytesPerPixel(backend, convDirect) * pixels + VAE_DECODE_FIXED_BYTES);
}

/** Tiled decode peak: one tile's buffer (never more than the whole image's). */
export function vaeDecodeTiledBytes(pixels: number, backend: ImageBackend, convDirect = false, tileLatent = VAE_TILE_LATENT): Bytes {
  const tilePixels = (tileLatent * VAE_SPATIAL_SCALE) ** 2;
  return Math.min(vaeDecodeBytes(pixels, backend, convDirect), vaeDecodeBytes(tilePixels, backend, convDirect));
}

/** Attention heads of the family's largest self-attention, from the model's width when known. */
export function attentionHeads(family: ImageModelFamily, width?: number): number {
  const layout = ATTENTION_LAYOUT[family];
  if (layout.fixedHeads) return layout.fixedHeads;
  return Math.max(1, Math.round(((width ?? layout.defaultWidth) * layout.widthMultiplier) / layout.headDim));
}

export interface DiffusionActivation {
  /** Linear part: ComfyUI's efficient-attention formula (memory-facts.md:25-26). */
  linear: Bytes;
  /** Attention scores materialised without flash attention (tokens^2 * heads * 4 bytes). */
  scores: Bytes;
  tokens: number;
  heads: number;
}

/** Diffusion compute buffer parts for one pass over a latent of `latentArea` pixels (times latent frames). */
export function diffusionActivation(family: ImageModelFamily, latentArea: number, width?: number): DiffusionActivation {
  const layout = ATTENTION_LAYOUT[family];
  const linearMiB = latentArea * ACTIVATION_DTYPE_BYTES * COMFY_ACTIVATION_MIB_PER_AREA_PER_DTYPE_BYTE * ACTIVATION_FACTOR[family];
  const tokens = Math.ceil(latentArea * layout.tokensPerLatentPixel) + layout.textTokens;
  const heads = attentionHeads(family, width);
  return { linear: Math.round(linearMiB * MiB), scores: tokens * tokens * heads * ATTENTION_SCORE_BYTES, tokens, heads };
}

// ---------------------------------------------------------------------------------------------------------------
// The estimate

/** Memory and time figures of one job; calibration records for the same model and backend win over the priors. */
export function estimateImageJob(model: ImageModelInfo, job: ImageJobSize, options: ImageEstimateOptions): ImageJobCosts {
  const family = model.family;
  const backend = options.backend;
  const latent = latentSize(model, job);
  const frames = Math.max(1, job.frames);
  const batch = Math.max(1, job.batch);
  const parallel = options.batchInParallel ? batch : 1;
  const pixels = job.width * job.height * frames;
  const megapixels = pixels / 1e6;
  const steps = job.steps ?? DEFAULT_STEPS;
  const size = imageSizeSetting(job.width, job.height, frames);
  const calibrated: string[] = [];
  const pick = (name: string, key: string, prior: number, setting = size, scale?: number): number => {
    const result: Calibrated = calibratedValue(options.calibration, { model: model.modelPath, backend, key, setting, scale }, prior);
    if (result.calibrated) calibrated.push(name);
    return Math.round(result.value);
  };

  const weights: Record<ImageComponent, Bytes> = {
    textEncoder: pick('weights.textEncoder', CALIBRATION_KEYS.textEncoderWeights, model.weights.textEncoder, ''),
    diffusion: pick('weights.diffusion', CALIBRATION_KEYS.diffusionWeights, model.weights.diffusion, ''),
    vae: pick('weights.vae', CALIBRATION_KEYS.vaeWeights, model.weights.vae, ''),
  };

  const activation = diffusionActivation(family, latent.width * latent.height * latent.frames, model.diffusionWidth);
  const decodedPixels = pixels * parallel;
  const tiledFrames = Math.min(frames, model.vaeTemporalScaleFactor > 1 ? model.vaeTemporalScaleFactor : 1);
  const tiledPrior = vaeDecodeTiledBytes(job.width * job.height, backend, options.vaeConvDirect) * tiledFrames * parallel;
  const compute: ImageJobCosts['compute'] = {
    textEncoder: pick('compute.textEncoder', CALIBRATION_KEYS.textEncoderCompute, TEXT_ENCODER_COMPUTE[family], ''),
    diffusion: pick('compute.diffusion', CALIBRATION_KEYS.diffusionCompute, (activation.linear + activation.scores) * parallel),
    diffusionFlash: pick('compute.diffusionFlash', CALIBRATION_KEYS.diffusionComputeFlash, activation.linear * parallel),
    vaeDecode: pick('compute.vaeDecode', CALIBRATION_KEYS.vaeCompute, vaeDecodeBytes(decodedPixels, backend, options.vaeConvDirect), size, decodedPixels),
    vaeDecodeTiled: pick('compute.vaeDecodeTiled', CALIBRATION_KEYS.vaeComputeTiled, tiledPrior, tileSetting(VAE_TILE_LATENT)),
  };

  const textEncodeMs = pick('time.textEncode', CALIBRATION_KEYS.textEncodeMs, TEXT_ENCODE_MS[family], '');
  const stepMs = pick('time.samplingStep', CALIBRATION_KEYS.samplingStepMs, SAMPLING_MS_PER_STEP_PER_MPX[family] * megapixels, size, pixels);
  const decodeOneMs = pick('time.vaeDecode', CALIBRATION_KEYS.vaeDecodeMs, VAE_DECODE_GPU_MS_PER_MPX * megapixels, size, pixels);
  const decodeCpuOneMs = pick('time.vaeDecodeCpu', CALIBRATION_KEYS.vaeDecodeCpuMs, VAE_DECODE_CPU_FIXED_MS + VAE_DECODE_CPU_MS_PER_MPX * megapixels, size, pixels);
  const textEncodeCpuMs = pick('time.textEncodeCpu', CALIBRATION_KEYS.textEncodeCpuMs, TEXT_ENCODE_CPU_MS[family], '');
  const tiles = tilesAlong(latent.width) * tilesAlong(latent.height);
  const bandwidth = options.hostToDeviceBytesPerMs ?? PCIE4_BYTES_PER_MS;

  return {
    family,
    width: job.width,
    height: job.height,
    batch,
    frames,
    weights,
    compute,
    time: {
      textEncodeMs,
      samplingMs: Math.round(stepMs * steps * batch),
      vaeDecodeMs: Math.round(decodeOneMs * batch),
      vaeTiledExtraMs: Math.round((decodeOneMs * (tileCoverage(latent.width, latent.height) - 1) + tiles * frames * VAE_TILE_OVERHEAD_MS) * batch),
      vaeCpuExtraMs: Math.round(Math.max(0, decodeCpuOneMs - decodeOneMs) * batch),
      textEncoderCpuExtraMs: Math.max(0, textEncodeCpuMs - textEncodeMs),
      // Assumed: --offload-to-cpu moves the diffusion weights to the device once per sampling run.
      offloadExtraMs: Math.round((weights.diffusion / bandwidth) * batch),
    },
    calibrated,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Published figures against the estimator, for the accuracy table (memory-facts.md)

/** A model description with only the family's layout, for figures published without weights. */
export function familyModel(family: ImageModelFamily, modelPath = `published:${family}`): ImageModelInfo {
  return {
    modelPath,
    family,
    files: [],
    weights: { textEncoder: 0, diffusion: 0, vae: 0 },
    latentChannels: LATENT_CHANNELS[family],
    vaeScaleFactor: VAE_SPATIAL_SCALE,
    vaeTemporalScaleFactor: family === 'wan' ? VAE_TEMPORAL_SCALE_WAN : 1,
    hasTaesd: false,
  };
}

interface PublishedCase {
  family: ImageModelFamily;
  backend: ImageBackend;
  size: number;
  key: string;
  measuredMB: number;
  source: string;
  convDirect?: boolean;
  /** Which figure of the estimate the measurement is. */
  figure: (costs: ImageJobCosts) => number;
}

const PUBLISHED_CASES: PublishedCase[] = [
  { family: 'sd1', backend: 'cuda', size: 512, key: 'vae.compute', measuredMB: 1664.0, source: 'memory-facts.md:9', figure: (c) => c.compute.vaeDecode },
  { family: 'sdxl', backend: 'cuda', size: 1024, key: 'vae.compute', measuredMB: 6656.25, source: 'memory-facts.md:10', figure: (c) => c.compute.vaeDecode },
  { family: 'sdxl', backend: 'vulkan', size: 1024, key: 'vae.compute', measuredMB: 2560.25, source: 'memory-facts.md:12', figure: (c) => c.compute.vaeDecode },
  {
    family: 'sdxl',
    backend: 'vulkan',
    size: 1024,
    key: 'vae.computeTiled',
    measuredMB: 176,
    convDirect: true,
    source: 'memory-facts.md:12 (--vae-conv-direct and tiling)',
    figure: (c) => c.compute.vaeDecodeTiled,
  },
  {
    family: 'sd1',
    backend: 'vulkan',
    size: 1024,
    key: 'vae.compute',
    measuredMB: 2944.25,
    convDirect: true,
    source: 'memory-facts.md:13 (--vae-conv-direct)',
    figure: (c) => c.compute.vaeDecode,
  },
  {
    family: 'sdxl',
    backend: 'cuda',
    size: 1024,
    key: 'vae.compute',
    measuredMB: 7680.25,
    source: 'memory-facts.md:11 (an older build; the estimate follows current builds)',
    figure: (c) => c.compute.vaeDecode,
  },
  {
    family: 'sd1',
    backend: 'rocm',
    size: 1024,
    key: 'diffusion.compute',
    measuredMB: 8360.93,
    source: 'memory-facts.md:16 (KoboldCpp; the unet compute buffer of SD1.5 at 1024x1024, no flash attention)',
    figure: (c) => c.compute.diffusion,
  },
  {
    family: 'flux',
    backend: 'cuda',
    size: 768,
    key: 'diffusion.flashSaving',
    measuredMB: 600,
    source: 'memory-facts.md:29 (--diffusion-fa saves about 600 MB, Flux 768x768)',
    figure: (c) => c.compute.diffusion - c.compute.diffusionFlash,
  },
  {
    family: 'sd2',
    backend: 'cuda',
    size: 768,
    key: 'diffusion.flashSaving',
    measuredMB: 1400,
    source: 'memory-facts.md:29 (--diffusion-fa saves about 1400 MB, SD2 768x768)',
    figure: (c) => c.compute.diffusion - c.compute.diffusionFlash,
  },
];

/** Every published buffer figure of memory-facts.md next to what the estimator says for the same case. */
export function publishedImageComparisons(): EstimateRow[] {
  return PUBLISHED_CASES.map((entry) => {
    const costs = estimateImageJob(familyModel(entry.family), { width: entry.size, height: entry.size, batch: 1, frames: 1 }, { backend: entry.backend, vaeConvDirect: entry.convDirect });
    return estimateRow({
      model: `published:${entry.family}`,
      backend: entry.backend,
      key: entry.key,
      setting: imageSizeSetting(entry.size, entry.size),
      estimate: entry.figure(costs),
      measured: Math.round(entry.measuredMB * LOG_MB),
      unit: 'bytes',
      source: entry.source,
    });
  });
}
