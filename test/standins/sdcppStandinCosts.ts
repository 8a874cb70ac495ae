/**
 * The memory the sd.cpp stand-in allocates for a run, from published sd.cpp figures (see
 * ../shared/reference/memory-facts.md). Exported so that tests can predict exactly what a run will need on the
 * simulated device, and so that the figures live in one place.
 *
 * - VAE decode, KL VAE: 6656 bytes per output pixel (1664.00 MB at 512x512, 6656 MB at 1024x1024);
 *   with --vae-conv-direct 2944 bytes per pixel (SD1.5 1024x1024 on Vulkan: 2944.25 MB).
 *   Tiled: one 32x32-latent tile (256x256 px) at the same rate, whatever the image size (~416 MB).
 * - Video VAE (Wan): 1563.6 bytes per pixel and frame (19349.82 MB for 512x768x33); temporal tiling decodes 4 frames
 *   at a time.
 * - Diffusion compute: latent area * 0.15 MiB * factor without flash attention, * 0.02 MiB with it (ComfyUI's
 *   figures for attention without/with an efficient kernel; --diffusion-fa then saves ~530 MB at 512x512 SD1.5 and
 *   ~1200 MB at 768x768, in line with the 600-1400 MB sd.cpp users report).
 * - Weights: the model files' sizes. A single checkpoint is split between the parts in the proportions sd.cpp
 *   logs for that family (SD1.5: text encoder 235.06, diffusion 1640.25, VAE 94.47 MB).
 */

import type { Bytes } from '../../sidecar/core/types';
import { MiB } from '../../sidecar/core/types';

export type StandinFamily = 'sd1' | 'sdxl' | 'flux' | 'wan';
export type StandinModule = 'te' | 'diffusion' | 'vae';

interface FamilyFigures {
  /** Module names sd.cpp uses in its buffer lines. */
  names: Record<StandinModule, string>;
  /** Weight proportions of a single checkpoint (MB as sd.cpp logs them). */
  weightsMb: Record<StandinModule, number>;
  /** Text encoder compute buffer (MB), independent of the image size. */
  teComputeMb: number;
  /** Diffusion compute factor (ComfyUI: 1.0 for SD1.5, 0.8 for SDXL). */
  diffusionFactor: number;
  version: string;
}

export const FAMILIES: Record<StandinFamily, FamilyFigures> = {
  sd1: {
    names: { te: 'clip', diffusion: 'unet', vae: 'vae' },
    weightsMb: { te: 235.06, diffusion: 1640.25, vae: 94.47 },
    teComputeMb: 2.33,
    diffusionFactor: 1.0,
    version: 'SD 1.x',
  },
  sdxl: {
    names: { te: 'clip', diffusion: 'unet', vae: 'vae' },
    weightsMb: { te: 1564.36, diffusion: 4900.07, vae: 94.47 },
    teComputeMb: 10.22,
    diffusionFactor: 0.8,
    version: 'SDXL',
  },
  flux: {
    names: { te: 't5', diffusion: 'flux', vae: 'vae' },
    weightsMb: { te: 9318.83, diffusion: 3732.51, vae: 94.57 },
    teComputeMb: 28.5,
    diffusionFactor: 1.0,
    version: 'Flux',
  },
  wan: {
    names: { te: 't5', diffusion: 'wan', vae: 'wan_vae' },
    weightsMb: { te: 5236.0, diffusion: 2700.0, vae: 242.0 },
    teComputeMb: 28.5,
    diffusionFactor: 1.0,
    version: 'Wan 2.x',
  },
};

export const VAE_BYTES_PER_PIXEL = 6656;
export const VAE_CONV_DIRECT_BYTES_PER_PIXEL = 2944;
export const VIDEO_VAE_BYTES_PER_PIXEL_FRAME = 1563.6;
/** sd.cpp's default tile: 32x32 latent = 256x256 pixels. */
export const VAE_TILE_PIXELS = 256;
export const TEMPORAL_TILE_FRAMES = 4;

export interface StandinRun {
  family: StandinFamily;
  width: number;
  height: number;
  frames: number;
  vaeTiling: boolean;
  temporalTiling: boolean;
  vaeConvDirect: boolean;
  flashAttention: boolean;
}

/** Bytes of the text encoder's compute buffer. */
export function teComputeBytes(run: StandinRun): Bytes {
  return Math.round(FAMILIES[run.family].teComputeMb * MiB);
}

/** Bytes of the diffusion model's compute buffer for one image (sd.cpp samples a batch one image at a time). */
export function diffusionComputeBytes(run: StandinRun): Bytes {
  const area = (run.width / 8) * (run.height / 8) * Math.max(1, run.frames);
  const perArea = run.flashAttention ? 0.02 : 0.15;
  return Math.round(area * perArea * FAMILIES[run.family].diffusionFactor * MiB);
}

/** Bytes of the VAE decode's compute buffer for one latent (one image, or a whole video). */
export function vaeDecodeBytes(run: StandinRun): Bytes {
  const tile = (side: number) => (run.vaeTiling ? Math.min(side, VAE_TILE_PIXELS) : side);
  const pixels = tile(run.width) * tile(run.height);
  if (run.frames > 1) {
    const frames = run.temporalTiling ? Math.min(run.frames, TEMPORAL_TILE_FRAMES) : run.frames;
    return Math.round(pixels * frames * VIDEO_VAE_BYTES_PER_PIXEL_FRAME);
  }
  return pixels * (run.vaeConvDirect ? VAE_CONV_DIRECT_BYTES_PER_PIXEL : VAE_BYTES_PER_PIXEL);
}

/**
 * Weights per module, from the model files' sizes: a checkpoint (`-m`) is divided in the family's proportions;
 * split files (`--diffusion-model`, text encoders summed, `--vae`) replace their part of it.
 */
export function weightBytes(
  family: StandinFamily,
  files: { checkpoint?: Bytes } & Partial<Record<StandinModule, Bytes>>,
): Record<StandinModule, Bytes> {
  const w = FAMILIES[family].weightsMb;
  const total = w.te + w.diffusion + w.vae;
  const checkpoint = files.checkpoint ?? 0;
  const te = Math.round((checkpoint * w.te) / total);
  const vae = Math.round((checkpoint * w.vae) / total);
  return {
    te: files.te ?? te,
    diffusion: files.diffusion ?? checkpoint - te - vae,
    vae: files.vae ?? vae,
  };
}

/** MB as sd.cpp prints it (MiB, two decimals). */
export function mbText(bytes: Bytes): string {
  return (bytes / MiB).toFixed(2);
}
