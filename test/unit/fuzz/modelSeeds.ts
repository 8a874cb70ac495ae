/**
 * Small, valid model headers to mutate: a GGUF LLM of every metadata value type and a few tensor types, and a
 * safetensors checkpoint. Each builder also says where its length and count fields are, so that the fuzzer can set
 * exactly those to absurd values.
 */

/** A GGUF under construction, remembering the offsets of its length and count fields. */
class GgufBuilder {
  private readonly parts: Buffer[] = [];
  private length = 0;
  /** Offsets of 8-byte fields: counts, lengths, dimensions and offsets. */
  readonly u64Fields: number[] = [];
  /** The subset that are counts or lengths: an absurd value there can only be refused. */
  readonly lengthFields: number[] = [];
  /** Offsets of 4-byte fields that are types or dimension counts. */
  readonly u32Fields: number[] = [];

  raw(bytes: Buffer): void {
    this.parts.push(bytes);
    this.length += bytes.length;
  }

  u32(value: number, remember = false): void {
    if (remember) this.u32Fields.push(this.length);
    const bytes = Buffer.alloc(4);
    bytes.writeUInt32LE(value);
    this.raw(bytes);
  }

  u64(value: bigint | number, remember: false | 'length' | 'other' = false): void {
    if (remember) this.u64Fields.push(this.length);
    if (remember === 'length') this.lengthFields.push(this.length);
    const bytes = Buffer.alloc(8);
    bytes.writeBigUInt64LE(BigInt(value));
    this.raw(bytes);
  }

  string(text: string): void {
    const bytes = Buffer.from(text, 'utf8');
    this.u64(bytes.length, 'length');
    this.raw(bytes);
  }

  /** A key and a typed value: [type, writer]. */
  kv(key: string, type: number, write: () => void): void {
    this.string(key);
    this.u32(type, true);
    write();
  }

  pad(alignment: number): void {
    const padding = (alignment - (this.length % alignment)) % alignment;
    this.raw(Buffer.alloc(padding));
  }

  get size(): number {
    return this.length;
  }

  bytes(): Buffer {
    return Buffer.concat(this.parts);
  }
}

export interface SeedFile {
  bytes: Buffer;
  u64Fields: number[];
  lengthFields: number[];
  u32Fields: number[];
}

/** A 2-block llama GGUF of about 1.2 KB with f32, f16, q8_0 and one unknown tensor type. */
export function llamaGgufSeed(): SeedFile {
  const g = new GgufBuilder();
  const tensors: { name: string; dims: number[]; type: number; bytes: number }[] = [
    { name: 'token_embd.weight', dims: [4, 2], type: 0, bytes: 4 * 2 * 4 },
    { name: 'blk.0.attn_q.weight', dims: [4, 2], type: 1, bytes: 4 * 2 * 2 },
    { name: 'blk.1.attn_q.weight', dims: [32], type: 8, bytes: 34 },
    { name: 'blk.1.ffn_up.weight', dims: [8], type: 200, bytes: 8 },
    { name: 'output_norm.weight', dims: [4], type: 0, bytes: 4 * 4 },
  ];
  g.raw(Buffer.from('GGUF'));
  g.u32(3);
  g.u64(tensors.length, 'length');
  g.u64(14, 'length');
  g.kv('general.architecture', 8, () => g.string('llama'));
  g.kv('general.name', 8, () => g.string('fuzz seed \u00e9'));
  g.kv('general.alignment', 4, () => g.u32(32));
  g.kv('general.file_type', 4, () => g.u32(1));
  g.kv('llama.block_count', 4, () => g.u32(2));
  g.kv('llama.embedding_length', 4, () => g.u32(8));
  g.kv('llama.context_length', 10, () => g.u64(512));
  g.kv('llama.attention.head_count', 5, () => g.u32(2));
  g.kv('llama.attention.head_count_kv', 9, () => {
    g.u32(5, true);
    g.u64(2, 'length');
    g.u32(2);
    g.u32(1);
  });
  g.kv('llama.rope.freq_base', 6, () => g.raw(Buffer.from([0, 0, 0x1c, 0x46])));
  g.kv('llama.use_parallel_residual', 7, () => g.raw(Buffer.from([1])));
  g.kv('tokenizer.ggml.tokens', 9, () => {
    g.u32(8, true);
    g.u64(4, 'length');
    for (const token of ['<unk>', '<s>', 'a', '\u2581b']) g.string(token);
  });
  g.kv('tokenizer.ggml.scores', 9, () => {
    g.u32(6, true);
    g.u64(4, 'length');
    g.raw(Buffer.alloc(16));
  });
  g.kv('general.size_label', 12, () => g.raw(Buffer.alloc(8)));
  let offset = 0;
  for (const tensor of tensors) {
    g.string(tensor.name);
    g.u32(tensor.dims.length, true);
    for (const dim of tensor.dims) g.u64(dim, 'other');
    g.u32(tensor.type, true);
    g.u64(offset, 'other');
    offset += Math.ceil(tensor.bytes / 32) * 32;
  }
  g.pad(32);
  g.raw(Buffer.alloc(offset, 0x3c));
  return { bytes: g.bytes(), u64Fields: g.u64Fields, lengthFields: g.lengthFields, u32Fields: g.u32Fields };
}

/** A safetensors checkpoint with a text encoder, a UNet and a VAE tensor, and metadata. */
export function safetensorsSeed(): SeedFile {
  const header = {
    __metadata__: { format: 'pt' },
    'cond_stage_model.transformer.text_model.embeddings.token_embedding.weight': { dtype: 'F16', shape: [4, 8], data_offsets: [0, 64] },
    'model.diffusion_model.input_blocks.0.0.weight': { dtype: 'F32', shape: [4, 4, 1, 1], data_offsets: [64, 128] },
    'first_stage_model.decoder.conv_in.weight': { dtype: 'BF16', shape: [8, 4, 1, 1], data_offsets: [128, 192] },
    'model.diffusion_model.label_emb.0.0.weight': { dtype: 'F8_E4M3', shape: [16], data_offsets: [192, 208] },
  };
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  return { bytes: Buffer.concat([length, Buffer.from(json), Buffer.alloc(208, 7)]), u64Fields: [0], lengthFields: [0], u32Fields: [] };
}
