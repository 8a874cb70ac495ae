/**
 * What an image (or video) model is made of, from its file headers: bytes per component (text encoder, diffusion
 * model, VAE), its family, and the latent layout the estimators need. Reads safetensors and GGUF checkpoints (sd.cpp
 * accepts both), as one file or as split parts (`--diffusion-model`, `--vae`, `--clip_l`, ...). Never reads weights.
 */

import { open } from 'node:fs/promises';
import { LATENT_CHANNELS, VAE_SPATIAL_SCALE, VAE_TEMPORAL_SCALE_WAN } from '../core/estimators/figures';
import type { Bytes, ImageComponent, ImageJobSpec, ImageModelFamily } from '../core/types';
import { readGgufFile } from './ggufTensors';
import { ModelFileError, modelFileSize } from './modelFileError';
import { readSafetensorsHeader } from './safetensorsHeader';

export type ImagePartRole = keyof NonNullable<ImageJobSpec['parts']>;
/** `checkpoint` is the file given as the model path: a whole checkpoint, or the diffusion model of a split set. */
export type ImageFileRole = 'checkpoint' | ImagePartRole;

export interface ImageModelTensor {
  name: string;
  /** PyTorch order: outermost dimension first (GGUF dims are reversed into this order). */
  shape: number[];
  bytes: Bytes;
}

export interface ImageModelFile {
  path: string;
  role: ImageFileRole;
  format: 'safetensors' | 'gguf';
  fileSize: Bytes;
  tensors: ImageModelTensor[];
}

export interface ImageModelInfo {
  modelPath: string;
  family: ImageModelFamily;
  files: { path: string; role: ImageFileRole; format: 'safetensors' | 'gguf'; fileSize: Bytes; tensorBytes: Bytes }[];
  /** Weight bytes of each component as stored in the files. */
  weights: Record<ImageComponent, Bytes>;
  /** Channels of the latent the VAE decodes. */
  latentChannels: number;
  /** Pixels per latent pixel along each side. */
  vaeScaleFactor: number;
  /** Frames per latent frame (video VAEs); 1 for image models. */
  vaeTemporalScaleFactor: number;
  /** Base width of the diffusion model (UNet model channels or DiT hidden size), when its tensors show it. */
  diffusionWidth?: number;
  /** A TAESD part replaces the VAE for decoding. */
  hasTaesd: boolean;
}

/** Reads the headers of an image model (one checkpoint, or a diffusion model plus split parts). */
export async function readImageModelInfo(modelPath: string, parts?: ImageJobSpec['parts']): Promise<ImageModelInfo> {
  const roles: [string, ImageFileRole][] = [[modelPath, 'checkpoint']];
  for (const [role, path] of Object.entries(parts ?? {}) as [ImagePartRole, string | undefined][]) {
    if (path) roles.push([path, role]);
  }
  const files = await Promise.all(roles.map(([path, role]) => readImageModelFile(path, role)));
  return imageModelInfoFromFiles(files);
}

/** Reads one file's tensor list, choosing the reader from the file's first bytes. */
export async function readImageModelFile(path: string, role: ImageFileRole): Promise<ImageModelFile> {
  const fileSize = await modelFileSize(path, '.safetensors or .gguf');
  const magic = await firstBytes(path, 4);
  if (magic.toString('latin1') === 'GGUF') {
    const gguf = await readGgufFile(path);
    const tensors = gguf.tensors.map((tensor) => ({ name: tensor.name, shape: tensor.dims.slice().reverse(), bytes: tensor.bytes }));
    return { path, role, format: 'gguf', fileSize: gguf.fileSize, tensors };
  }
  const header = await readSafetensorsHeader(path).catch((error: unknown) => {
    // .ckpt/.pt files are zip archives (or bare pickles) that only a Python unpickler can size.
    const pickled = magic.subarray(0, 2).toString('latin1') === 'PK' || magic[0] === 0x80;
    if (!pickled || !(error instanceof ModelFileError) || error.kind !== 'notModel') throw error;
    throw new ModelFileError(
      'unsupported',
      path,
      `${path} looks like a pickled PyTorch checkpoint (.ckpt/.pt), which cannot be read safely: use the .safetensors or .gguf version of the model.`,
    );
  });
  const tensors = header.tensors.map(({ name, shape, bytes }) => ({ name, shape, bytes }));
  return { path, role, format: 'safetensors', fileSize, tensors };
}

/** ImageModelInfo from tensor lists (pure). */
export function imageModelInfoFromFiles(files: ImageModelFile[]): ImageModelInfo {
  const weights: Record<ImageComponent, Bytes> = { textEncoder: 0, diffusion: 0, vae: 0 };
  const byComponent: Record<ImageComponent, ImageModelTensor[]> = { textEncoder: [], diffusion: [], vae: [] };
  for (const file of files) {
    for (const tensor of file.tensors) {
      const component = componentOfFile(file.role) ?? classifyTensor(tensor.name);
      weights[component] += tensor.bytes;
      byComponent[component].push(tensor);
    }
  }
  const diffusion = byComponent.diffusion.map((tensor) => ({ ...tensor, name: stripDiffusionPrefix(tensor.name) }));
  const family = detectFamily(diffusion);
  return {
    modelPath: files[0]?.path ?? '',
    family,
    files: files.map(({ path, role, format, fileSize, tensors }) => ({
      path,
      role,
      format,
      fileSize,
      tensorBytes: tensors.reduce((sum, tensor) => sum + tensor.bytes, 0),
    })),
    weights,
    latentChannels: latentChannelsOf(byComponent.vae) ?? LATENT_CHANNELS[family],
    vaeScaleFactor: VAE_SPATIAL_SCALE,
    vaeTemporalScaleFactor: family === 'wan' ? VAE_TEMPORAL_SCALE_WAN : 1,
    diffusionWidth: diffusionWidthOf(family, diffusion),
    hasTaesd: files.some((file) => file.role === 'taesd'),
  };
}

/** A split part belongs to its component whatever its tensors are called. */
function componentOfFile(role: ImageFileRole): ImageComponent | undefined {
  switch (role) {
    case 'vae':
    case 'taesd':
      return 'vae';
    case 'clipL':
    case 'clipG':
    case 't5xxl':
    case 'llm':
      return 'textEncoder';
    case 'checkpoint':
      return undefined;
  }
}

// Tensor name prefixes, checked in this order (first match wins):
// - diffusion: ldm/sgm checkpoints nest the UNet/DiT under `model.diffusion_model.`; bare diffusion files use no
//   prefix at all (Flux `double_blocks.`, UNet `input_blocks.`, WAN `blocks.`), so "no rule matched" means diffusion.
// - text encoders: SD1 `cond_stage_model.`, SDXL `conditioner.embedders.`, SD3 single files `text_encoders.`;
//   standalone CLIP `text_model.`; T5/UMT5 `encoder.block.`, `encoder.final_layer_norm.`, `shared.`; llama.cpp-style
//   T5 GGUF `enc.`; LLM text encoders `model.layers.`, `model.embed_tokens.`, `model.norm.`, `lm_head.`.
// - VAE: `first_stage_model.` (ldm checkpoints), `vae.`; standalone VAEs `encoder.`, `decoder.`, `quant_conv.`,
//   `post_quant_conv.` (after the T5 rules, which also start with `encoder.`).
const DIFFUSION_PREFIXES = ['model.diffusion_model.', 'diffusion_model.', 'unet.'];
const TEXT_ENCODER_PREFIXES = [
  'cond_stage_model.',
  'conditioner.',
  'text_encoders.',
  'text_encoder.',
  'text_model.',
  'encoder.block.',
  'encoder.final_layer_norm.',
  'shared.',
  'enc.',
  'model.layers.',
  'model.embed_tokens.',
  'model.norm.',
  'lm_head.',
];
const VAE_PREFIXES = ['first_stage_model.', 'vae.', 'encoder.', 'decoder.', 'quant_conv.', 'post_quant_conv.'];

/** The component a tensor of a whole checkpoint belongs to, from its name. */
export function classifyTensor(name: string): ImageComponent {
  if (DIFFUSION_PREFIXES.some((prefix) => name.startsWith(prefix))) return 'diffusion';
  if (TEXT_ENCODER_PREFIXES.some((prefix) => name.startsWith(prefix))) return 'textEncoder';
  if (VAE_PREFIXES.some((prefix) => name.startsWith(prefix))) return 'vae';
  return 'diffusion';
}

function stripDiffusionPrefix(name: string): string {
  const prefix = DIFFUSION_PREFIXES.find((candidate) => name.startsWith(candidate));
  return prefix ? name.slice(prefix.length) : name;
}

/**
 * The family, from the diffusion model's characteristic tensors (names without the checkpoint prefix):
 * - flux: `double_blocks.*` (Flux.1 dev/schnell/Kontext and derivatives);
 * - sd3: `joint_blocks.*` (MMDiT);
 * - wan: `patch_embedding.*` with `blocks.N.self_attn.*` / `cross_attn.*` (WAN 2.x video DiT);
 * - UNets (`input_blocks.*`): sdxl has `label_emb.*` (its pooled-text/size conditioning); otherwise the
 *   cross-attention context width (in-features of any `attn2.to_k.weight`) tells SD1.x (768, CLIP-L) from SD2
 *   (1024, OpenCLIP-H);
 * - anything else (no diffusion tensors, other architectures) is unknown.
 */
export function detectFamily(diffusion: readonly ImageModelTensor[]): ImageModelFamily {
  const has = (prefix: string) => diffusion.some((tensor) => tensor.name.startsWith(prefix));
  if (has('double_blocks.')) return 'flux';
  if (has('joint_blocks.')) return 'sd3';
  if (has('patch_embedding.') && diffusion.some((tensor) => /^blocks\.\d+\.(self|cross)_attn\./.test(tensor.name))) return 'wan';
  if (!has('input_blocks.')) return 'unknown';
  if (has('label_emb.')) return 'sdxl';
  const contextKey = diffusion.find((tensor) => tensor.name.endsWith('attn2.to_k.weight'));
  const contextWidth = contextKey?.shape[1];
  if (contextWidth === 768) return 'sd1';
  if (contextWidth === 1024) return 'sd2';
  return 'unknown';
}

/** Latent channels from the VAE's decoder input (`decoder.conv_in` for KL VAEs, `decoder.conv1` for WAN). */
function latentChannelsOf(vae: readonly ImageModelTensor[]): number | undefined {
  const input = vae.find((tensor) => /(^|\.)decoder\.conv(_in|1)\.weight$/.test(tensor.name));
  const channels = input?.shape[1];
  return channels && channels > 0 && channels <= 128 ? channels : undefined;
}

/** The tensor whose first dimension is the model's base width, per family. */
const WIDTH_TENSORS: Partial<Record<ImageModelFamily, string>> = {
  sd1: 'input_blocks.0.0.weight',
  sd2: 'input_blocks.0.0.weight',
  sdxl: 'input_blocks.0.0.weight',
  sd3: 'x_embedder.proj.weight',
  flux: 'img_in.weight',
  wan: 'patch_embedding.weight',
};

function diffusionWidthOf(family: ImageModelFamily, diffusion: readonly ImageModelTensor[]): number | undefined {
  const name = WIDTH_TENSORS[family];
  return diffusion.find((tensor) => tensor.name === name)?.shape[0];
}

async function firstBytes(path: string, count: number): Promise<Buffer> {
  const handle = await open(path, 'r');
  try {
    const bytes = Buffer.alloc(count);
    await handle.read(bytes, 0, count, 0);
    return bytes;
  } finally {
    await handle.close();
  }
}
