/**
 * Synthetic image checkpoints for the header readers: the real tensor names and shapes of SD1.5, SD2, SDXL, SD3,
 * Flux and WAN (built from each architecture's configuration), written as safetensors or GGUF files whose data is
 * a sparse hole: only the header is real, yet the file has the size the header describes.
 */

import { open } from 'node:fs/promises';

export interface TensorSpec {
  name: string;
  /** PyTorch order (outermost first). */
  shape: number[];
}

const elements = (shape: number[]) => shape.reduce((product, dim) => product * dim, 1);
export const parameterCount = (tensors: TensorSpec[]) => tensors.reduce((sum, tensor) => sum + elements(tensor.shape), 0);

// ---------------------------------------------------------------------------------------------------------------
// Architectures

interface UnetConfig {
  channels: number;
  mult: number[];
  /** Transformer depth per level (0 = no attention at that level). */
  depth: number[];
  middleDepth: number;
  context: number;
  linearProjection: boolean;
  /** Width of SDXL's pooled/size conditioning vector. */
  adm?: number;
  /** Heads are not part of the weights; kept out. */
}

export const SD1_UNET: UnetConfig = { channels: 320, mult: [1, 2, 4, 4], depth: [1, 1, 1, 0], middleDepth: 1, context: 768, linearProjection: false };
export const SD2_UNET: UnetConfig = { ...SD1_UNET, context: 1024, linearProjection: true };
export const SDXL_UNET: UnetConfig = { channels: 320, mult: [1, 2, 4], depth: [0, 2, 10], middleDepth: 10, context: 2048, linearProjection: true, adm: 2816 };

/** ldm's UNetModel (openaimodel.py layout). */
export function unetTensors(prefix: string, config: UnetConfig): TensorSpec[] {
  const out: TensorSpec[] = [];
  const add = (name: string, shape: number[]) => out.push({ name: prefix + name, shape });
  const C = config.channels;
  const temb = 4 * C;
  const linear = (name: string, o: number, i: number, bias = true) => {
    add(`${name}.weight`, [o, i]);
    if (bias) add(`${name}.bias`, [o]);
  };
  const conv = (name: string, o: number, i: number, k: number) => {
    add(`${name}.weight`, [o, i, k, k]);
    add(`${name}.bias`, [o]);
  };
  const norm = (name: string, c: number) => {
    add(`${name}.weight`, [c]);
    add(`${name}.bias`, [c]);
  };
  const resblock = (name: string, i: number, o: number) => {
    norm(`${name}.in_layers.0`, i);
    conv(`${name}.in_layers.2`, o, i, 3);
    linear(`${name}.emb_layers.1`, o, temb);
    norm(`${name}.out_layers.0`, o);
    conv(`${name}.out_layers.3`, o, o, 3);
    if (i !== o) conv(`${name}.skip_connection`, o, i, 1);
  };
  const transformer = (name: string, c: number, depth: number) => {
    norm(`${name}.norm`, c);
    if (config.linearProjection) linear(`${name}.proj_in`, c, c);
    else conv(`${name}.proj_in`, c, c, 1);
    for (let d = 0; d < depth; d++) {
      const block = `${name}.transformer_blocks.${d}`;
      for (const part of ['to_q', 'to_k', 'to_v']) linear(`${block}.attn1.${part}`, c, c, false);
      linear(`${block}.attn1.to_out.0`, c, c);
      linear(`${block}.ff.net.0.proj`, c * 8, c);
      linear(`${block}.ff.net.2`, c, c * 4);
      linear(`${block}.attn2.to_q`, c, c, false);
      linear(`${block}.attn2.to_k`, c, config.context, false);
      linear(`${block}.attn2.to_v`, c, config.context, false);
      linear(`${block}.attn2.to_out.0`, c, c);
      for (const n of ['norm1', 'norm2', 'norm3']) norm(`${block}.${n}`, c);
    }
    if (config.linearProjection) linear(`${name}.proj_out`, c, c);
    else conv(`${name}.proj_out`, c, c, 1);
  };

  linear('time_embed.0', temb, C);
  linear('time_embed.2', temb, temb);
  if (config.adm) {
    linear('label_emb.0.0', temb, config.adm);
    linear('label_emb.0.2', temb, temb);
  }
  conv('input_blocks.0.0', C, 4, 3);
  const skips = [C];
  let ch = C;
  let index = 1;
  config.mult.forEach((mult, level) => {
    for (let r = 0; r < 2; r++) {
      resblock(`input_blocks.${index}.0`, ch, mult * C);
      ch = mult * C;
      if (config.depth[level] > 0) transformer(`input_blocks.${index}.1`, ch, config.depth[level]);
      skips.push(ch);
      index++;
    }
    if (level !== config.mult.length - 1) {
      conv(`input_blocks.${index}.0.op`, ch, ch, 3);
      skips.push(ch);
      index++;
    }
  });
  resblock('middle_block.0', ch, ch);
  transformer('middle_block.1', ch, config.middleDepth);
  resblock('middle_block.2', ch, ch);
  index = 0;
  for (let level = config.mult.length - 1; level >= 0; level--) {
    for (let r = 0; r < 3; r++) {
      const skip = skips.pop()!;
      resblock(`output_blocks.${index}.0`, ch + skip, config.mult[level] * C);
      ch = config.mult[level] * C;
      let sub = 1;
      if (config.depth[level] > 0) transformer(`output_blocks.${index}.${sub++}`, ch, config.depth[level]);
      if (level !== 0 && r === 2) conv(`output_blocks.${index}.${sub}.conv`, ch, ch, 3);
      index++;
    }
  }
  norm('out.0', C);
  conv('out.2', 4, C, 3);
  return out;
}

/** ldm's KL autoencoder (128 channels, mult 1,2,4,4). `quantConv` is false for the SD3/Flux VAE. */
export function klVaeTensors(prefix: string, latentChannels: number, quantConv = true): TensorSpec[] {
  const out: TensorSpec[] = [];
  const add = (name: string, shape: number[]) => out.push({ name: prefix + name, shape });
  const conv = (name: string, o: number, i: number, k: number) => {
    add(`${name}.weight`, [o, i, k, k]);
    add(`${name}.bias`, [o]);
  };
  const norm = (name: string, c: number) => {
    add(`${name}.weight`, [c]);
    add(`${name}.bias`, [c]);
  };
  const resnet = (name: string, i: number, o: number) => {
    norm(`${name}.norm1`, i);
    conv(`${name}.conv1`, o, i, 3);
    norm(`${name}.norm2`, o);
    conv(`${name}.conv2`, o, o, 3);
    if (i !== o) conv(`${name}.nin_shortcut`, o, i, 1);
  };
  const middle = (name: string) => {
    resnet(`${name}.mid.block_1`, 512, 512);
    norm(`${name}.mid.attn_1.norm`, 512);
    for (const part of ['q', 'k', 'v', 'proj_out']) conv(`${name}.mid.attn_1.${part}`, 512, 512, 1);
    resnet(`${name}.mid.block_2`, 512, 512);
  };
  const mult = [1, 2, 4, 4];
  conv('encoder.conv_in', 128, 3, 3);
  let ch = 128;
  mult.forEach((m, level) => {
    for (let b = 0; b < 2; b++) {
      resnet(`encoder.down.${level}.block.${b}`, ch, 128 * m);
      ch = 128 * m;
    }
    if (level !== mult.length - 1) conv(`encoder.down.${level}.downsample.conv`, ch, ch, 3);
  });
  middle('encoder');
  norm('encoder.norm_out', 512);
  conv('encoder.conv_out', 2 * latentChannels, 512, 3);
  conv('decoder.conv_in', 512, latentChannels, 3);
  middle('decoder');
  ch = 512;
  for (let level = mult.length - 1; level >= 0; level--) {
    for (let b = 0; b < 3; b++) {
      resnet(`decoder.up.${level}.block.${b}`, ch, 128 * mult[level]);
      ch = 128 * mult[level];
    }
    if (level !== 0) conv(`decoder.up.${level}.upsample.conv`, ch, ch, 3);
  }
  norm('decoder.norm_out', 128);
  conv('decoder.conv_out', 3, 128, 3);
  if (quantConv) {
    conv('quant_conv', 2 * latentChannels, 2 * latentChannels, 1);
    conv('post_quant_conv', latentChannels, latentChannels, 1);
  }
  return out;
}

/** Hugging Face CLIPTextModel (CLIP-L: width 768, 12 layers). */
export function clipTextTensors(prefix: string, width = 768, layers = 12): TensorSpec[] {
  const out: TensorSpec[] = [];
  const add = (name: string, shape: number[]) => out.push({ name: prefix + name, shape });
  add('embeddings.token_embedding.weight', [49408, width]);
  add('embeddings.position_embedding.weight', [77, width]);
  for (let l = 0; l < layers; l++) {
    const layer = `encoder.layers.${l}`;
    for (const part of ['q_proj', 'k_proj', 'v_proj', 'out_proj']) {
      add(`${layer}.self_attn.${part}.weight`, [width, width]);
      add(`${layer}.self_attn.${part}.bias`, [width]);
    }
    for (const n of ['layer_norm1', 'layer_norm2']) {
      add(`${layer}.${n}.weight`, [width]);
      add(`${layer}.${n}.bias`, [width]);
    }
    add(`${layer}.mlp.fc1.weight`, [4 * width, width]);
    add(`${layer}.mlp.fc1.bias`, [4 * width]);
    add(`${layer}.mlp.fc2.weight`, [width, 4 * width]);
    add(`${layer}.mlp.fc2.bias`, [width]);
  }
  add('final_layer_norm.weight', [width]);
  add('final_layer_norm.bias', [width]);
  return out;
}

/** OpenCLIP text transformer (SD2: ViT-H width 1024, 24 layers; SDXL: bigG width 1280, 32 layers). */
export function openClipTensors(prefix: string, width: number, layers: number): TensorSpec[] {
  const out: TensorSpec[] = [];
  const add = (name: string, shape: number[]) => out.push({ name: prefix + name, shape });
  add('token_embedding.weight', [49408, width]);
  add('positional_embedding', [77, width]);
  for (let l = 0; l < layers; l++) {
    const block = `transformer.resblocks.${l}`;
    add(`${block}.ln_1.weight`, [width]);
    add(`${block}.ln_1.bias`, [width]);
    add(`${block}.attn.in_proj_weight`, [3 * width, width]);
    add(`${block}.attn.in_proj_bias`, [3 * width]);
    add(`${block}.attn.out_proj.weight`, [width, width]);
    add(`${block}.attn.out_proj.bias`, [width]);
    add(`${block}.ln_2.weight`, [width]);
    add(`${block}.ln_2.bias`, [width]);
    add(`${block}.mlp.c_fc.weight`, [4 * width, width]);
    add(`${block}.mlp.c_fc.bias`, [4 * width]);
    add(`${block}.mlp.c_proj.weight`, [width, 4 * width]);
    add(`${block}.mlp.c_proj.bias`, [width]);
  }
  add('ln_final.weight', [width]);
  add('ln_final.bias', [width]);
  add('text_projection', [width, width]);
  return out;
}

/** T5-XXL encoder (Hugging Face names), `blocks` layers of width 4096. */
export function t5EncoderTensors(prefix: string, blocks = 24): TensorSpec[] {
  const out: TensorSpec[] = [{ name: `${prefix}shared.weight`, shape: [32128, 4096] }];
  for (let b = 0; b < blocks; b++) {
    const block = `${prefix}encoder.block.${b}.layer`;
    for (const part of ['q', 'k', 'v', 'o']) out.push({ name: `${block}.0.SelfAttention.${part}.weight`, shape: [4096, 4096] });
    if (b === 0) out.push({ name: `${block}.0.SelfAttention.relative_attention_bias.weight`, shape: [32, 64] });
    out.push({ name: `${block}.0.layer_norm.weight`, shape: [4096] });
    out.push({ name: `${block}.1.DenseReluDense.wi_0.weight`, shape: [10240, 4096] });
    out.push({ name: `${block}.1.DenseReluDense.wi_1.weight`, shape: [10240, 4096] });
    out.push({ name: `${block}.1.DenseReluDense.wo.weight`, shape: [4096, 10240] });
    out.push({ name: `${block}.1.layer_norm.weight`, shape: [4096] });
  }
  out.push({ name: `${prefix}encoder.final_layer_norm.weight`, shape: [4096] });
  return out;
}

/** Flux.1 transformer (bare names, as in flux1-dev.safetensors): 19 double and 38 single blocks, width 3072. */
export function fluxTensors(prefix = '', doubleBlocks = 19, singleBlocks = 38): TensorSpec[] {
  const out: TensorSpec[] = [];
  const h = 3072;
  const linear = (name: string, o: number, i: number) => {
    out.push({ name: `${prefix}${name}.weight`, shape: [o, i] }, { name: `${prefix}${name}.bias`, shape: [o] });
  };
  linear('img_in', h, 64);
  linear('txt_in', h, 4096);
  linear('time_in.in_layer', h, 256);
  linear('time_in.out_layer', h, h);
  linear('vector_in.in_layer', h, 768);
  linear('vector_in.out_layer', h, h);
  linear('guidance_in.in_layer', h, 256);
  linear('guidance_in.out_layer', h, h);
  for (let b = 0; b < doubleBlocks; b++) {
    for (const stream of ['img', 'txt']) {
      const block = `double_blocks.${b}.${stream}`;
      linear(`${block}_mod.lin`, 6 * h, h);
      linear(`${block}_attn.qkv`, 3 * h, h);
      out.push({ name: `${prefix}${block}_attn.norm.query_norm.scale`, shape: [128] }, { name: `${prefix}${block}_attn.norm.key_norm.scale`, shape: [128] });
      linear(`${block}_attn.proj`, h, h);
      linear(`${block}_mlp.0`, 4 * h, h);
      linear(`${block}_mlp.2`, h, 4 * h);
    }
  }
  for (let b = 0; b < singleBlocks; b++) {
    const block = `single_blocks.${b}`;
    linear(`${block}.linear1`, 3 * h + 4 * h, h);
    linear(`${block}.linear2`, h, h + 4 * h);
    linear(`${block}.modulation.lin`, 3 * h, h);
    out.push({ name: `${prefix}${block}.norm.query_norm.scale`, shape: [128] }, { name: `${prefix}${block}.norm.key_norm.scale`, shape: [128] });
  }
  linear('final_layer.linear', 64, h);
  linear('final_layer.adaLN_modulation.1', 2 * h, h);
  return out;
}

/** SD3 Medium MMDiT (24 joint blocks, width 1536). */
export function sd3Tensors(prefix: string, depth = 24): TensorSpec[] {
  const out: TensorSpec[] = [];
  const h = 64 * depth;
  const linear = (name: string, o: number, i: number) => {
    out.push({ name: `${prefix}${name}.weight`, shape: [o, i] }, { name: `${prefix}${name}.bias`, shape: [o] });
  };
  out.push({ name: `${prefix}pos_embed`, shape: [1, 192 * 192, h] });
  out.push({ name: `${prefix}x_embedder.proj.weight`, shape: [h, 16, 2, 2] }, { name: `${prefix}x_embedder.proj.bias`, shape: [h] });
  linear('context_embedder', h, 4096);
  linear('t_embedder.mlp.0', h, 256);
  linear('t_embedder.mlp.2', h, h);
  linear('y_embedder.mlp.0', h, 2048);
  linear('y_embedder.mlp.2', h, h);
  for (let b = 0; b < depth; b++) {
    for (const stream of ['x_block', 'context_block']) {
      const block = `joint_blocks.${b}.${stream}`;
      const preOnly = stream === 'context_block' && b === depth - 1;
      linear(`${block}.attn.qkv`, 3 * h, h);
      linear(`${block}.adaLN_modulation.1`, (preOnly ? 2 : 6) * h, h);
      if (!preOnly) {
        linear(`${block}.attn.proj`, h, h);
        linear(`${block}.mlp.fc1`, 4 * h, h);
        linear(`${block}.mlp.fc2`, h, 4 * h);
      }
    }
  }
  linear('final_layer.linear', 64, h);
  linear('final_layer.adaLN_modulation.1', 2 * h, h);
  return out;
}

/** WAN 2.1 text-to-video DiT (1.3B: width 1536, 30 blocks, FFN 8960, 16 latent channels). */
export function wanTensors(prefix = '', width = 1536, blocks = 30, ffn = 8960): TensorSpec[] {
  const out: TensorSpec[] = [];
  const linear = (name: string, o: number, i: number) => {
    out.push({ name: `${prefix}${name}.weight`, shape: [o, i] }, { name: `${prefix}${name}.bias`, shape: [o] });
  };
  out.push({ name: `${prefix}patch_embedding.weight`, shape: [width, 16, 1, 2, 2] }, { name: `${prefix}patch_embedding.bias`, shape: [width] });
  linear('text_embedding.0', width, 4096);
  linear('text_embedding.2', width, width);
  linear('time_embedding.0', width, 256);
  linear('time_embedding.2', width, width);
  linear('time_projection.1', 6 * width, width);
  for (let b = 0; b < blocks; b++) {
    for (const attention of ['self_attn', 'cross_attn']) {
      for (const part of ['q', 'k', 'v', 'o']) linear(`blocks.${b}.${attention}.${part}`, width, width);
      out.push({ name: `${prefix}blocks.${b}.${attention}.norm_q.weight`, shape: [width] }, { name: `${prefix}blocks.${b}.${attention}.norm_k.weight`, shape: [width] });
    }
    out.push({ name: `${prefix}blocks.${b}.norm3.weight`, shape: [width] }, { name: `${prefix}blocks.${b}.norm3.bias`, shape: [width] });
    linear(`blocks.${b}.ffn.0`, ffn, width);
    linear(`blocks.${b}.ffn.2`, width, ffn);
    out.push({ name: `${prefix}blocks.${b}.modulation`, shape: [1, 6, width] });
  }
  linear('head.head', 64, width);
  out.push({ name: `${prefix}head.modulation`, shape: [1, 2, width] });
  return out;
}

/** The start of WAN 2.1's causal video VAE (standalone file names): enough for the reader's rules. */
export function wanVaeTensors(): TensorSpec[] {
  return [
    { name: 'conv1.weight', shape: [32, 32, 1, 1, 1] },
    { name: 'conv2.weight', shape: [16, 16, 1, 1, 1] },
    { name: 'encoder.conv1.weight', shape: [96, 3, 3, 3, 3] },
    { name: 'decoder.conv1.weight', shape: [384, 16, 3, 3, 3] },
    { name: 'decoder.head.2.weight', shape: [3, 96, 3, 3, 3] },
  ];
}

// ---------------------------------------------------------------------------------------------------------------
// Writers

const SAFETENSORS_DTYPE_BYTES: Record<string, number> = { F32: 4, F16: 2, BF16: 2, F8_E4M3: 1 };

/** Writes a safetensors file: a real header, then a sparse hole of the size the header describes. */
export async function writeSafetensors(path: string, tensors: TensorSpec[], dtype = 'F16', metadata?: Record<string, string>): Promise<number> {
  const header: Record<string, unknown> = metadata ? { __metadata__: metadata } : {};
  let offset = 0;
  for (const tensor of tensors) {
    const bytes = elements(tensor.shape) * SAFETENSORS_DTYPE_BYTES[dtype];
    header[tensor.name] = { dtype, shape: tensor.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  const handle = await open(path, 'w');
  try {
    await handle.write(Buffer.concat([length, Buffer.from(json)]), 0, undefined, 0);
    await handle.truncate(8 + Buffer.byteLength(json) + offset);
  } finally {
    await handle.close();
  }
  return offset;
}

export interface GgufTensorSpec {
  name: string;
  /** ggml order (PyTorch's shape reversed). */
  dims: number[];
  /** ggml type id: 0 F32, 1 F16, 8 Q8_0. */
  type: 0 | 1 | 8;
}

const GGML_BYTES = { 0: (n: number) => n * 4, 1: (n: number) => n * 2, 8: (n: number) => (n / 32) * 34 } as const;

/** Writes a GGUF with an arbitrary architecture (or none) and no real data: header, then a sparse hole. */
export async function writeHeaderOnlyGguf(path: string, tensors: GgufTensorSpec[], architecture?: string, truncateTo?: number): Promise<number> {
  const parts: Buffer[] = [];
  const u32 = (value: number) => {
    const bytes = Buffer.alloc(4);
    bytes.writeUInt32LE(value);
    parts.push(bytes);
  };
  const u64 = (value: number) => {
    const bytes = Buffer.alloc(8);
    bytes.writeBigUInt64LE(BigInt(value));
    parts.push(bytes);
  };
  const text = (value: string) => {
    u64(Buffer.byteLength(value));
    parts.push(Buffer.from(value));
  };
  parts.push(Buffer.from('GGUF'));
  u32(3);
  u64(tensors.length);
  u64(architecture ? 2 : 1);
  text('general.alignment');
  u32(4); // uint32
  u32(32);
  if (architecture) {
    text('general.architecture');
    u32(8); // string
    text(architecture);
  }
  let offset = 0;
  for (const tensor of tensors) {
    text(tensor.name);
    u32(tensor.dims.length);
    for (const dim of tensor.dims) u64(dim);
    u32(tensor.type);
    u64(offset);
    offset += Math.ceil(GGML_BYTES[tensor.type](elements(tensor.dims)) / 32) * 32;
  }
  const header = Buffer.concat(parts);
  const dataStart = Math.ceil(header.length / 32) * 32;
  const handle = await open(path, 'w');
  try {
    await handle.write(header, 0, header.length, 0);
    await handle.truncate(truncateTo ?? dataStart + offset);
  } finally {
    await handle.close();
  }
  return offset;
}
