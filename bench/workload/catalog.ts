/**
 * The models of the workload, as their file headers describe them: what the real estimators read (tensor bytes per
 * component, family, widths). Sizes are parameter counts times bytes per weight of public checkpoints, checked
 * against memory-facts.md ("Whole-model sizes people quote").
 *
 * Flux comes in the quantisation a user of each card would pick: the largest common one whose diffusion weights are
 * at most 60% of the card (fp8 on 24 GB, Q5_K_S on 16 GB, Q4_0 on 12 GB, Q2_K on 8 GB), with a T5 encoder to match.
 */

import type { ImageModelInfo } from '../../sidecar/models/imageModelInfo';
import type { LlmModelMeta } from '../../sidecar/models/llmModelMeta';
import { LATENT_CHANNELS, VAE_SPATIAL_SCALE } from '../../sidecar/core/estimators/figures';
import { GiB, MiB, type Bytes, type ImageComponent, type ImageModelFamily } from '../../sidecar/core/types';

export type ImageModelKind = 'sd15' | 'sdxl' | 'flux';

export interface ImageModel {
  kind: ImageModelKind;
  family: ImageModelFamily;
  /** What the report calls it, e.g. `Flux.1-dev Q4_0`. */
  label: string;
  path: string;
  /** Tensor bytes per component, as the headers list them. */
  weights: Record<ImageComponent, Bytes>;
  /** UNet model channels or DiT hidden size. */
  diffusionWidth: number;
  steps: number;
}

const CLIP_L = 246e6; // 123 M parameters, fp16: "CLIP-L ~235 MB"
const CLIP_G = 1389e6; // 694.7 M parameters, fp16
const KL_VAE = 167e6; // 83.7 M parameters, fp16: "VAE ~160 MB weights"

const SD15: ImageModel = {
  kind: 'sd15',
  family: 'sd1',
  label: 'SD1.5 fp16',
  path: '/models/sd15-fp16.safetensors',
  weights: { textEncoder: CLIP_L, diffusion: 1719e6, vae: KL_VAE }, // UNet 859.5 M parameters: "UNet ~1.7 GB"
  diffusionWidth: 320,
  steps: 25,
};

const SDXL: ImageModel = {
  kind: 'sdxl',
  family: 'sdxl',
  label: 'SDXL fp16',
  path: '/models/sdxl-base-fp16.safetensors',
  weights: { textEncoder: CLIP_L + CLIP_G, diffusion: 5135e6, vae: KL_VAE }, // UNet 2.57 B parameters: "~7 GB base weights"
  diffusionWidth: 320,
  steps: 25,
};

/** Flux.1-dev (11.9 B parameters) and T5-XXL encoder (4.76 B) files by quantisation. */
const FLUX_VARIANTS = [
  { quant: 'fp8', diffusion: 11.9e9, t5: 4.89e9, t5Label: 'T5 fp8' },
  { quant: 'Q5_K_S', diffusion: 8.29e9, t5: 4.89e9, t5Label: 'T5 fp8' },
  { quant: 'Q4_0', diffusion: 6.79e9, t5: 2.9e9, t5Label: 'T5 Q4_K_M' },
  { quant: 'Q2_K', diffusion: 4.03e9, t5: 2.9e9, t5Label: 'T5 Q4_K_M' },
] as const;

export function fluxFor(budget: Bytes): ImageModel {
  const variant = FLUX_VARIANTS.find((v) => v.diffusion <= 0.6 * budget) ?? FLUX_VARIANTS[FLUX_VARIANTS.length - 1];
  return {
    kind: 'flux',
    family: 'flux',
    label: `Flux.1-dev ${variant.quant} + ${variant.t5Label}`,
    path: `/models/flux1-dev-${variant.quant.toLowerCase()}.gguf`,
    weights: { textEncoder: variant.t5 + CLIP_L, diffusion: variant.diffusion, vae: KL_VAE },
    diffusionWidth: 3072,
    steps: 20,
  };
}

/** The image models a user of a card of `budget` bytes has. */
export function imageModelsFor(budget: Bytes): Record<ImageModelKind, ImageModel> {
  return { sd15: SD15, sdxl: SDXL, flux: fluxFor(budget) };
}

/** What `readImageModelInfo` would return for the model's files. */
export function modelInfo(model: ImageModel): ImageModelInfo {
  const total = model.weights.textEncoder + model.weights.diffusion + model.weights.vae;
  return {
    modelPath: model.path,
    family: model.family,
    files: [{ path: model.path, role: 'checkpoint', format: model.path.endsWith('.gguf') ? 'gguf' : 'safetensors', fileSize: total + 1e5, tensorBytes: total }],
    weights: { ...model.weights },
    latentChannels: LATENT_CHANNELS[model.family],
    vaeScaleFactor: VAE_SPATIAL_SCALE,
    vaeTemporalScaleFactor: 1,
    diffusionWidth: model.diffusionWidth,
    hasTaesd: false,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// The LLM: a 7B model at Q4_K_M with grouped-query attention (Mistral-7B layout), 8k context.

export const LLM_CONTEXT = 8192;
const LLM_BLOCKS = 32;
const LLM_FILE = 4.37e9; // mistral-7b Q4_K_M
const TOKEN_EMBD = 72e6; // 32000 x 4096 at Q4_K
const OUTPUT = 108e6; // 32000 x 4096 at Q6_K, plus the output norm

export const LLM_META: LlmModelMeta = {
  path: '/models/mistral-7b-instruct-q4_k_m.gguf',
  architecture: 'llama',
  name: 'Mistral 7B Instruct (Q4_K_M)',
  blockCount: LLM_BLOCKS,
  embeddingLength: 4096,
  feedForwardLength: 14336,
  headCount: 32,
  headCountKv: 8,
  headCountKvByLayer: Array.from({ length: LLM_BLOCKS }, () => 8),
  keyLength: 128,
  valueLength: 128,
  headDim: 128,
  contextLengthTrained: 32768,
  vocabSize: 32000,
  fileSize: LLM_FILE,
  tensorBytes: LLM_FILE - 1e6,
  layerBytes: Array.from({ length: LLM_BLOCKS }, () => Math.round((LLM_FILE - 1e6 - TOKEN_EMBD - OUTPUT) / LLM_BLOCKS)),
  outputBytes: OUTPUT,
  outputTiedToEmbedding: false,
  tokenEmbeddingBytes: TOKEN_EMBD,
  otherBytes: 0,
  fileType: 'MOSTLY_Q4_K_M',
  dominantTensorType: 'Q4_K',
};

/** Budgets (device totals) of the benchmark. */
export const BUDGETS: readonly Bytes[] = [8 * GiB, 12 * GiB, 16 * GiB, 24 * GiB];

/** The safety margin VRAM Relay keeps (the `vramRelay.memory.safetyMarginMiB` default). */
export const RELAY_MARGIN = 512 * MiB;
