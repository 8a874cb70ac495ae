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
import { CALIBRATION_KEYS, calibratedValue, imageSizeSetting, tileSetting, type CalibrationLookup, type Calibrated } from '../calibration';
import { MiB, type Bytes, type ImageComponent, type ImageJobCosts, type ImageModelFamily, type SdCapabilities } from '../types';
import {
  ACTIVATION_DTYPE_BYTES,
  ACTIVATION_FACTOR,
  ATTENTION_LAYOUT,
  ATTENTION_SCORE_BYTES,
  COMFY_ACTIVATION_MIB_PER_AREA_PER_DTYPE_BYTE,
  DEFAULT_STEPS,
  KL_VAE_DECODER,
  LATENT_CHANNELS,
  PCIE4_BYTES_PER_MS,
  SAMPLING_MS_PER_STEP_PER_MPX,
  TEXT_ENCODE_CPU_MS,
  TEXT_ENCODE_MS,
  TEXT_ENCODER_COMPUTE,
  UNET_FIRST_LEVELS,
  SD_ACTIVATION_BYTES,
  VAE_ATTENTION_SCORE_BYTES,
  VAE_CONV_LOWERING,
  VAE_DECODE_CPU_FIXED_MS,
  VAE_DECODE_CPU_MS_PER_MPX,
  VAE_DECODE_GPU_MS_PER_MPX,
  SD_IM2COL_BYTES,
  VAE_SPATIAL_SCALE,
  VAE_TEMPORAL_SCALE_WAN,
  VAE_TILE_LATENT,
  VAE_TILE_OVERHEAD_MS,
  VAE_TILE_OVERLAP,
  type ConvLowering,
  type VaeDecoderShape,
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

/** How the VAE's convolutions run: `--vae-conv-direct` asks for direct kernels, otherwise the backend's default. */
export function convLowering(backend: ImageBackend, convDirect = false): ConvLowering {
  return convDirect ? 'direct' : (VAE_CONV_LOWERING[backend] ?? 'im2col');
}

/**
 * The resolution-linear part of a KL VAE decode, bytes per output pixel: the most bytes alive at one step of the
 * decoder (figures.ts, KL_VAE_DECODER). At every 3x3 convolution ggml holds the block's input (kept for the
 * residual), the normalised activations the convolution reads, and the convolution's own buffer: the im2col matrix
 * (C_in * 9 values in the weights' type) or, for a direct kernel, only its output (C_out f32). Each level runs at a
 * quarter of the next level's pixels. For the SD/Flux decoder the peak is the first full-resolution resnet
 * (256 -> 128 channels): 256*4 + 256*4 + 256*9*2 = 6656 B/px with im2col, 256*4 + 256*4 + 128*4 = 2560 B/px direct.
 */
export function vaeDecodeBytesPerPixel(lowering: ConvLowering, decoder: VaeDecoderShape = KL_VAE_DECODER): number {
  const act = SD_ACTIVATION_BYTES;
  const taps = decoder.kernel * decoder.kernel;
  const convBuffer = (cin: number, cout: number) => (lowering === 'im2col' ? cin * taps * SD_IM2COL_BYTES : cout * act);
  const levels = decoder.channelMult.length;
  let channels = decoder.baseChannels * decoder.channelMult[levels - 1];
  let peak = 0;
  for (let level = levels - 1; level >= 0; level--) {
    const pixelFraction = 1 / 4 ** level;
    const out = decoder.baseChannels * decoder.channelMult[level];
    for (let block = 0; block < decoder.resnetsPerLevel; block++) {
      peak = Math.max(peak, pixelFraction * (2 * channels * act + convBuffer(channels, out)));
      peak = Math.max(peak, pixelFraction * (channels * act + out * act + convBuffer(out, out)));
      channels = out;
    }
    // 2x nearest upsample, then a 3x3 conv at the next level's resolution (the small input is freed by then).
    if (level > 0) peak = Math.max(peak, (pixelFraction * 4) * (channels * act + convBuffer(channels, channels)));
  }
  return peak;
}

/**
 * The middle attention block of the decoder at `latentPixels` tokens: the f32 score matrix (one head, no flash
 * attention) beside the block input, q, k and v. Quadratic in pixels: it overtakes the convolutions above about
 * 1600x1600 with direct kernels and 2600x2600 with im2col.
 */
export function vaeAttentionBytes(latentPixels: number, decoder: VaeDecoderShape = KL_VAE_DECODER): Bytes {
  const channels = decoder.baseChannels * decoder.channelMult[decoder.channelMult.length - 1];
  return latentPixels * latentPixels * VAE_ATTENTION_SCORE_BYTES + 4 * latentPixels * channels * SD_ACTIVATION_BYTES;
}

/** Whole-image VAE decode compute buffer for `images` images of `pixels` output pixels decoded at once. */
export function vaeDecodeBytes(pixels: number, backend: ImageBackend, convDirect = false, images = 1): Bytes {
  const linear = vaeDecodeBytesPerPixel(convLowering(backend, convDirect)) * pixels;
  const attention = vaeAttentionBytes(pixels / (VAE_SPATIAL_SCALE * VAE_SPATIAL_SCALE));
  return Math.round(Math.max(linear, attention) * Math.max(1, images));
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
  /**
   * UNets only: the largest convolution step, which no attention setting removes (0 for DiTs). See
   * `unetConvolutionBytesPerLatentPixel`.
   */
  convolution: Bytes;
  tokens: number;
  heads: number;
}

/**
 * A UNet's largest convolution step, bytes per latent pixel: the first output block at full latent resolution
 * reads the level-1 output joined to a level-0 skip (cin = width * (mult[0] + mult[1]) channels) and holds, as
 * the VAE decoder does, its input, the normalised input (f32) and the im2col matrix (cin * 9 values, f16 weights),
 * while the two other level-0 skips wait for their output blocks. SD1.x, SD2 and SDXL (width 320): 27520 B.
 */
export function unetConvolutionBytesPerLatentPixel(width: number, layout: { firstLevels: readonly number[]; kernel: number } = UNET_FIRST_LEVELS): number {
  const channelsIn = width * (layout.firstLevels[0] + layout.firstLevels[1]);
  const liveSkips = 2 * width * layout.firstLevels[0];
  return 2 * channelsIn * SD_ACTIVATION_BYTES + channelsIn * layout.kernel * layout.kernel * SD_IM2COL_BYTES + liveSkips * SD_ACTIVATION_BYTES;
}

/** Diffusion compute buffer parts for one pass over a latent of `latentArea` pixels (times latent frames). */
export function diffusionActivation(family: ImageModelFamily, latentArea: number, width?: number): DiffusionActivation {
  const layout = ATTENTION_LAYOUT[family];
  const linearMiB = latentArea * ACTIVATION_DTYPE_BYTES * COMFY_ACTIVATION_MIB_PER_AREA_PER_DTYPE_BYTE * ACTIVATION_FACTOR[family];
  const tokens = Math.ceil(latentArea * layout.tokensPerLatentPixel) + layout.textTokens;
  const heads = attentionHeads(family, width);
  const unet = family === 'sd1' || family === 'sd2' || family === 'sdxl';
  const convolution = unet ? Math.round(latentArea * unetConvolutionBytesPerLatentPixel(width ?? layout.defaultWidth)) : 0;
  return { linear: Math.round(linearMiB * MiB), scores: tokens * tokens * heads * ATTENTION_SCORE_BYTES, convolution, tokens, heads };
}

/** The diffusion buffer without flash attention: the attention step (linear part + scores) or the convolution step. */
export function diffusionBytes(activation: DiffusionActivation): Bytes {
  return Math.max(activation.linear + activation.scores, activation.convolution);
}

/** With flash attention the scores are gone; the convolutions remain. */
export function diffusionFlashBytes(activation: DiffusionActivation): Bytes {
  return Math.max(activation.linear, activation.convolution);
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
    diffusion: pick('compute.diffusion', CALIBRATION_KEYS.diffusionCompute, diffusionBytes(activation) * parallel),
    diffusionFlash: pick('compute.diffusionFlash', CALIBRATION_KEYS.diffusionComputeFlash, diffusionFlashBytes(activation) * parallel),
    vaeDecode: pick('compute.vaeDecode', CALIBRATION_KEYS.vaeCompute, vaeDecodeBytes(job.width * job.height, backend, options.vaeConvDirect, frames * parallel), size, decodedPixels),
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
// Models known only by their family

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
