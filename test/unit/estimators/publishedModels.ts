/**
 * Models with the tensor shapes of published architectures, for holding the estimators to published figures:
 * image checkpoints from their architecture configurations (test/unit/models/imageCheckpoints.ts) and 7B LLMs with
 * the GGUF tensor layout of a Q4_K_M file. Only shapes and types: no file is written, no weight exists.
 */

import type { PublishedModels } from '../../../sidecar/core/estimators/publishedFigures';
import type { ImagePartRole } from '../../../sidecar/models/imageModelInfo';
import { imageModelInfoFromFiles, type ImageModelFile } from '../../../sidecar/models/imageModelInfo';
import { ggmlTensorBytes, type GgufTensor } from '../../../sidecar/models/ggufTensors';
import { llmModelMetaFromGguf, type LlmModelMeta } from '../../../sidecar/models/llmModelMeta';
import {
  SD1_UNET,
  SDXL_UNET,
  clipTextTensors,
  fluxTensors,
  klVaeTensors,
  openClipTensors,
  t5EncoderTensors,
  unetTensors,
  type TensorSpec,
} from '../models/imageCheckpoints';

const elements = (shape: number[]) => shape.reduce((product, dim) => product * dim, 1);

/** One file of `bytesPerValue`-byte values, as the header readers would describe it. */
function file(path: string, role: 'checkpoint' | ImagePartRole, tensors: TensorSpec[], bytesPerValue: number): ImageModelFile {
  const described = tensors.map(({ name, shape }) => ({ name, shape, bytes: elements(shape) * bytesPerValue }));
  return { path, role, format: 'safetensors', fileSize: described.reduce((sum, tensor) => sum + tensor.bytes, 0), tensors: described };
}

const FP16 = 2;
const FP8 = 1;

export function sd15Fp16() {
  return imageModelInfoFromFiles([
    file(
      'published:sd15.safetensors',
      'checkpoint',
      [
        ...unetTensors('model.diffusion_model.', SD1_UNET),
        ...clipTextTensors('cond_stage_model.transformer.text_model.'),
        ...klVaeTensors('first_stage_model.', 4),
      ],
      FP16,
    ),
  ]);
}

export function sdxlBaseFp16() {
  return imageModelInfoFromFiles([
    file(
      'published:sdxl-base.safetensors',
      'checkpoint',
      [
        ...unetTensors('model.diffusion_model.', SDXL_UNET),
        ...clipTextTensors('conditioner.embedders.0.transformer.text_model.'),
        ...openClipTensors('conditioner.embedders.1.model.', 1280, 32),
        ...klVaeTensors('first_stage_model.', 4),
      ],
      FP16,
    ),
  ]);
}

/** Flux.1-dev as released at fp8: transformer and T5-XXL in fp8, CLIP-L and the VAE in fp16. */
export function fluxDevFp8() {
  return imageModelInfoFromFiles([
    file('published:flux1-dev-fp8.safetensors', 'checkpoint', fluxTensors(), FP8),
    file('published:t5xxl_fp8.safetensors', 't5xxl', t5EncoderTensors(''), FP8),
    file('published:clip_l.safetensors', 'clipL', clipTextTensors('text_model.'), FP16),
    file('published:ae.safetensors', 'vae', klVaeTensors('', 16, false), FP16),
  ]);
}

const F32 = 0;
const Q4_K = 12;
const Q6_K = 14;
const TYPE_NAMES: Record<number, string> = { [F32]: 'F32', [Q4_K]: 'Q4_K', [Q6_K]: 'Q6_K' };

function tensor(name: string, dims: number[], ggmlType: number): GgufTensor {
  return { name, dims, ggmlType, typeName: TYPE_NAMES[ggmlType], bytes: ggmlTensorBytes(ggmlType, dims)!, filePart: 1, offset: 0 };
}

/**
 * A 7B llama-architecture model at Q4_K_M with the tensor layout of Mistral 7B (8 KV heads) or Llama 2 7B (32):
 * 32 blocks, 4096 wide, 32 heads of 128, vocabulary 32000, FFN 14336 (Mistral) or 11008 (Llama 2). Q4_K_M keeps
 * attn_v and ffn_down at Q6_K on the first and last eighth of the blocks and every third block between, and the
 * output at Q6_K.
 */
export function sevenBQ4KM(headCountKv = 8, feedForwardLength = headCountKv === 8 ? 14336 : 11008): LlmModelMeta {
  const blocks = 32;
  const n = 4096;
  const kv = 128 * headCountKv;
  const moreBits = (i: number) => i < blocks / 8 || i >= (7 * blocks) / 8 || (i - blocks / 8) % 3 === 2;
  const tensors: GgufTensor[] = [tensor('token_embd.weight', [n, 32000], Q4_K)];
  for (let i = 0; i < blocks; i++) {
    tensors.push(
      tensor(`blk.${i}.attn_norm.weight`, [n], F32),
      tensor(`blk.${i}.attn_q.weight`, [n, n], Q4_K),
      tensor(`blk.${i}.attn_k.weight`, [n, kv], Q4_K),
      tensor(`blk.${i}.attn_v.weight`, [n, kv], moreBits(i) ? Q6_K : Q4_K),
      tensor(`blk.${i}.attn_output.weight`, [n, n], Q4_K),
      tensor(`blk.${i}.ffn_norm.weight`, [n], F32),
      tensor(`blk.${i}.ffn_gate.weight`, [n, feedForwardLength], Q4_K),
      tensor(`blk.${i}.ffn_up.weight`, [n, feedForwardLength], Q4_K),
      tensor(`blk.${i}.ffn_down.weight`, [feedForwardLength, n], moreBits(i) ? Q6_K : Q4_K),
    );
  }
  tensors.push(tensor('output_norm.weight', [n], F32), tensor('output.weight', [n, 32000], Q6_K));
  const tensorBytes = tensors.reduce((sum, t) => sum + t.bytes, 0);
  return llmModelMetaFromGguf({
    path: `/models/7b-kv${headCountKv}-q4_k_m.gguf`,
    fileSize: tensorBytes + 800_000,
    architecture: 'llama',
    general: { name: '7B' },
    archMetadata: {
      block_count: blocks,
      embedding_length: n,
      feed_forward_length: feedForwardLength,
      context_length: 32768,
      vocab_size: 32000,
      attention: { head_count: 32, head_count_kv: headCountKv },
    },
    fileTypeName: 'MOSTLY_Q4_K_M',
    tensors,
  });
}

export function publishedModels(): PublishedModels {
  return {
    sd15: sd15Fp16(),
    sdxl: sdxlBaseFp16(),
    fluxDevFp8: fluxDevFp8(),
    mistral7b: sevenBQ4KM(8),
    llama2_7b: sevenBQ4KM(32),
  };
}
