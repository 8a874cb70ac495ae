/**
 * Writes small (or real-shaped) llama-architecture GGUF files with random weights, so that tests can load a real
 * model into llama.cpp without downloading one.
 *
 * The vocabulary is a byte-level SentencePiece one: <unk>, <s>, </s>, the 256 byte tokens <0x00>..<0xFF> and the
 * word-boundary piece "▁" (260 tokens). Any text tokenizes through byte fallback. The output layer only ever
 * favours printable ASCII, newline and "▁", so generated text is readable and never ends early on a chance
 * end-of-sequence. Optional CodeLlama-style <PRE>/<SUF>/<MID>/<EOT> tokens make the model fill-in-the-middle capable.
 *
 * Memory use depends on shapes, not values, so a model with the shape of a real one (e.g. 7B at q4_0) exercises
 * real memory sizes on a GPU. Tensor data is streamed to disk, and the file is written under a temporary name and
 * renamed, so a large model never sits whole in memory and a reader never sees half a file.
 */

import { open, rename, rm } from 'node:fs/promises';

/** GGUF metadata value types (gguf.md). */
const enum ValueType {
  Uint32 = 4,
  Int32 = 5,
  Float32 = 6,
  Bool = 7,
  String = 8,
  Array = 9,
}

/** The ggml tensor types this writer can produce, with their GGUF ids. */
const TENSOR_TYPES = {
  f32: { id: 0, fileType: 0 },
  f16: { id: 1, fileType: 1 },
  q4_0: { id: 2, fileType: 2 },
} as const;
export type GgufWeightType = keyof typeof TENSOR_TYPES;

/** Token types of llama.cpp's SentencePiece vocabulary. */
const enum TokenType {
  Normal = 1,
  Unknown = 2,
  Control = 3,
  Byte = 6,
}

const ALIGNMENT = 32;
const Q4_0_BLOCK = 32;
const Q4_0_BLOCK_BYTES = 18;
const CHUNK_ELEMENTS = 1 << 20;

export interface LlamaGgufOptions {
  /** Transformer blocks. Default 2. */
  layers?: number;
  /** Embedding width (n_embd). Default 64. */
  embeddingLength?: number;
  /** Attention heads. Default 4. */
  headCount?: number;
  /** Key/value heads (grouped-query attention when below headCount). Default: headCount. */
  headCountKv?: number;
  /** Feed-forward width. Default 2 * embeddingLength. */
  feedForwardLength?: number;
  /** Training context length the model declares. Default 512. */
  contextLength?: number;
  /** Seed of the random weights: the same options give the same file. Default 1. */
  seed?: number;
  /** Type of the 2-D weight matrices (norms stay f32). q4_0 needs widths divisible by 32. Default f32. */
  weightType?: GgufWeightType;
  /** Add <PRE>, <SUF>, <MID>, <EOT> so that fill-in-the-middle is supported. Default false. */
  fimTokens?: boolean;
  /** general.name. */
  name?: string;
}

export interface WrittenGguf {
  path: string;
  /** Size of the file in bytes. */
  bytes: number;
  vocabularySize: number;
  tensorCount: number;
  /** Bytes of tensor data (the weights llama.cpp will load). */
  weightBytes: number;
  options: Required<Omit<LlamaGgufOptions, 'name'>> & { name: string };
}

interface TensorSpec {
  name: string;
  /** ggml order: dims[0] is the contiguous (row) dimension. */
  dims: number[];
  type: GgufWeightType;
  /** Value of every element (norm weights), or random when absent. */
  constant?: number;
  /** Half-width of the uniform distribution of random values. */
  scale: number;
  /** Rows (index along dims[1]) written as zeros. */
  zeroRows?: ReadonlySet<number>;
}

/** Writes a llama GGUF to `filePath` (via a temporary file in the same folder). */
export async function writeLlamaGguf(filePath: string, options: LlamaGgufOptions = {}): Promise<WrittenGguf> {
  const resolved = resolveOptions(options);
  const vocabulary = buildVocabulary(resolved.fimTokens);
  const tensors = buildTensorSpecs(resolved, vocabulary.tokens.length, silencedTokenIds(vocabulary));
  const header = buildHeader(resolved, vocabulary, tensors);

  const temporary = `${filePath}.${process.pid}.${Date.now()}.partial`;
  const handle = await open(temporary, 'w');
  let position = 0;
  let weightBytes = 0;
  try {
    await handle.write(header.bytes, 0, header.bytes.length, position);
    position += header.bytes.length;
    for (let index = 0; index < tensors.length; index++) {
      const tensor = tensors[index];
      const padding = header.offsets[index] + header.dataStart - position;
      if (padding > 0) {
        await handle.write(Buffer.alloc(padding), 0, padding, position);
        position += padding;
      }
      const random = mulberry32(hashSeed(resolved.seed, tensor.name));
      for (const chunk of tensorChunks(tensor, random)) {
        await handle.write(chunk, 0, chunk.length, position);
        position += chunk.length;
        weightBytes += chunk.length;
      }
    }
    await handle.sync();
  } catch (error) {
    await handle.close().catch(() => undefined);
    await rm(temporary, { force: true });
    throw error;
  }
  await handle.close();
  await rename(temporary, filePath);

  return {
    path: filePath,
    bytes: position,
    vocabularySize: vocabulary.tokens.length,
    tensorCount: tensors.length,
    weightBytes,
    options: resolved,
  };
}

function resolveOptions(options: LlamaGgufOptions): WrittenGguf['options'] {
  const embeddingLength = options.embeddingLength ?? 64;
  const headCount = options.headCount ?? 4;
  const resolved = {
    layers: options.layers ?? 2,
    embeddingLength,
    headCount,
    headCountKv: options.headCountKv ?? headCount,
    feedForwardLength: options.feedForwardLength ?? embeddingLength * 2,
    contextLength: options.contextLength ?? 512,
    seed: options.seed ?? 1,
    weightType: options.weightType ?? 'f32',
    fimTokens: options.fimTokens ?? false,
    name: options.name ?? 'random-weight test llama',
  };
  const positive = ['layers', 'embeddingLength', 'headCount', 'headCountKv', 'feedForwardLength', 'contextLength'] as const;
  for (const key of positive) {
    if (!Number.isInteger(resolved[key]) || resolved[key] < 1) throw new Error(`GGUF option ${key} must be a positive integer, got ${resolved[key]}`);
  }
  if (embeddingLength % headCount !== 0) throw new Error(`embeddingLength (${embeddingLength}) must be divisible by headCount (${headCount})`);
  if (headCount % resolved.headCountKv !== 0) throw new Error(`headCount (${headCount}) must be divisible by headCountKv (${resolved.headCountKv})`);
  if (!(resolved.weightType in TENSOR_TYPES)) throw new Error(`weightType must be one of ${Object.keys(TENSOR_TYPES).join(', ')}`);
  if (resolved.weightType === 'q4_0' && (embeddingLength % Q4_0_BLOCK !== 0 || resolved.feedForwardLength % Q4_0_BLOCK !== 0)) {
    throw new Error(`q4_0 weights need embeddingLength and feedForwardLength divisible by ${Q4_0_BLOCK}`);
  }
  return resolved;
}

interface Vocabulary {
  tokens: string[];
  scores: number[];
  types: number[];
  ids: Record<string, number>;
}

function buildVocabulary(fimTokens: boolean): Vocabulary {
  const tokens: string[] = ['<unk>', '<s>', '</s>'];
  const types: number[] = [TokenType.Unknown, TokenType.Control, TokenType.Control];
  for (let byte = 0; byte < 256; byte++) {
    tokens.push(`<0x${byte.toString(16).toUpperCase().padStart(2, '0')}>`);
    types.push(TokenType.Byte);
  }
  tokens.push('\u2581');
  types.push(TokenType.Normal);
  const ids: Record<string, number> = { unk: 0, bos: 1, eos: 2 };
  if (fimTokens) {
    for (const [key, text] of [['prefix', '<PRE>'], ['suffix', '<SUF>'], ['middle', '<MID>'], ['eot', '<EOT>']] as const) {
      ids[key] = tokens.length;
      tokens.push(text);
      types.push(TokenType.Control);
    }
  }
  const scores = tokens.map((_, index) => (types[index] === TokenType.Normal ? -1 : 0));
  return { tokens, scores, types, ids };
}

/** Every token except printable ASCII bytes, newline and "▁": the tokens generation should never pick. */
function silencedTokenIds(vocabulary: Vocabulary): Set<number> {
  const ids = new Set<number>();
  vocabulary.tokens.forEach((text, id) => {
    const byte = /^<0x([0-9A-F]{2})>$/.exec(text);
    const printable = byte ? (parseInt(byte[1], 16) >= 0x20 && parseInt(byte[1], 16) < 0x7f) || byte[1] === '0A' : vocabulary.types[id] === TokenType.Normal;
    if (!printable) ids.add(id);
  });
  return ids;
}

function buildTensorSpecs(options: WrittenGguf['options'], vocabularySize: number, silencedTokens: ReadonlySet<number>): TensorSpec[] {
  const n = options.embeddingLength;
  const kv = (n / options.headCount) * options.headCountKv;
  const ff = options.feedForwardLength;
  const type = options.weightType;
  const matrix = (name: string, columns: number, rows: number): TensorSpec => ({ name, dims: [columns, rows], type, scale: 1 / Math.sqrt(columns) });
  const norm = (name: string): TensorSpec => ({ name, dims: [n], type: 'f32', constant: 1, scale: 0 });

  const tensors: TensorSpec[] = [{ name: 'token_embd.weight', dims: [n, vocabularySize], type, scale: 0.5 }];
  for (let layer = 0; layer < options.layers; layer++) {
    const block = `blk.${layer}`;
    tensors.push(
      norm(`${block}.attn_norm.weight`),
      matrix(`${block}.attn_q.weight`, n, n),
      matrix(`${block}.attn_k.weight`, n, kv),
      matrix(`${block}.attn_v.weight`, n, kv),
      matrix(`${block}.attn_output.weight`, n, n),
      norm(`${block}.ffn_norm.weight`),
      matrix(`${block}.ffn_gate.weight`, n, ff),
      matrix(`${block}.ffn_up.weight`, n, ff),
      matrix(`${block}.ffn_down.weight`, ff, n),
    );
  }
  // A zero output row gives its token a logit of 0 while the best of the ~96 random printable rows is almost
  // always positive: generation yields readable ASCII (whole UTF-8 characters, so text streams out token by token)
  // and never stops early on a chance end-of-sequence; maxTokens bounds it.
  const output = matrix('output.weight', n, vocabularySize);
  output.zeroRows = silencedTokens;
  tensors.push(norm('output_norm.weight'), output);
  return tensors;
}

function tensorByteLength(tensor: TensorSpec): number {
  const elements = tensor.dims.reduce((product, dim) => product * dim, 1);
  switch (tensor.type) {
    case 'f32':
      return elements * 4;
    case 'f16':
      return elements * 2;
    case 'q4_0':
      return (elements / Q4_0_BLOCK) * Q4_0_BLOCK_BYTES;
  }
}

function buildHeader(options: WrittenGguf['options'], vocabulary: Vocabulary, tensors: TensorSpec[]): { bytes: Buffer; offsets: number[]; dataStart: number } {
  const out = new ByteWriter();
  const headDim = options.embeddingLength / options.headCount;
  const keyValues: [string, (w: ByteWriter) => void][] = [
    ['general.architecture', (w) => w.stringValue('llama')],
    ['general.name', (w) => w.stringValue(options.name)],
    ['general.alignment', (w) => w.uint32Value(ALIGNMENT)],
    ['general.file_type', (w) => w.uint32Value(TENSOR_TYPES[options.weightType].fileType)],
    ['llama.context_length', (w) => w.uint32Value(options.contextLength)],
    ['llama.embedding_length', (w) => w.uint32Value(options.embeddingLength)],
    ['llama.block_count', (w) => w.uint32Value(options.layers)],
    ['llama.feed_forward_length', (w) => w.uint32Value(options.feedForwardLength)],
    ['llama.attention.head_count', (w) => w.uint32Value(options.headCount)],
    ['llama.attention.head_count_kv', (w) => w.uint32Value(options.headCountKv)],
    ['llama.attention.layer_norm_rms_epsilon', (w) => w.float32Value(1e-5)],
    ['llama.rope.dimension_count', (w) => w.uint32Value(headDim)],
    ['llama.rope.freq_base', (w) => w.float32Value(10000)],
    ['llama.vocab_size', (w) => w.uint32Value(vocabulary.tokens.length)],
    ['tokenizer.ggml.model', (w) => w.stringValue('llama')],
    ['tokenizer.ggml.tokens', (w) => w.stringArray(vocabulary.tokens)],
    ['tokenizer.ggml.scores', (w) => w.float32Array(vocabulary.scores)],
    ['tokenizer.ggml.token_type', (w) => w.int32Array(vocabulary.types)],
    ['tokenizer.ggml.unknown_token_id', (w) => w.uint32Value(vocabulary.ids.unk)],
    ['tokenizer.ggml.bos_token_id', (w) => w.uint32Value(vocabulary.ids.bos)],
    ['tokenizer.ggml.eos_token_id', (w) => w.uint32Value(vocabulary.ids.eos)],
    ['tokenizer.ggml.add_bos_token', (w) => w.boolValue(true)],
    ['tokenizer.ggml.add_eos_token', (w) => w.boolValue(false)],
  ];
  if (options.fimTokens) {
    keyValues.push(
      ['tokenizer.ggml.fim_pre_token_id', (w) => w.uint32Value(vocabulary.ids.prefix)],
      ['tokenizer.ggml.fim_suf_token_id', (w) => w.uint32Value(vocabulary.ids.suffix)],
      ['tokenizer.ggml.fim_mid_token_id', (w) => w.uint32Value(vocabulary.ids.middle)],
      ['tokenizer.ggml.eot_token_id', (w) => w.uint32Value(vocabulary.ids.eot)],
    );
  }

  out.raw(Buffer.from('GGUF', 'ascii'));
  out.uint32(3);
  out.uint64(tensors.length);
  out.uint64(keyValues.length);
  for (const [key, writeValue] of keyValues) {
    out.string(key);
    writeValue(out);
  }

  const offsets: number[] = [];
  let offset = 0;
  for (const tensor of tensors) {
    offset = alignUp(offset);
    offsets.push(offset);
    out.string(tensor.name);
    out.uint32(tensor.dims.length);
    for (const dim of tensor.dims) out.uint64(dim);
    out.uint32(TENSOR_TYPES[tensor.type].id);
    out.uint64(offset);
    offset += tensorByteLength(tensor);
  }

  const bytes = out.toBuffer();
  const dataStart = alignUp(bytes.length);
  return { bytes: Buffer.concat([bytes, Buffer.alloc(dataStart - bytes.length)]), offsets, dataStart };
}

/** Yields a tensor's data in chunks of at most CHUNK_ELEMENTS elements. */
function* tensorChunks(tensor: TensorSpec, random: () => number): Generator<Buffer> {
  const elements = tensor.dims.reduce((product, dim) => product * dim, 1);
  for (let start = 0; start < elements; start += CHUNK_ELEMENTS) {
    const count = Math.min(CHUNK_ELEMENTS, elements - start);
    const rowLength = tensor.dims[0];
    const zeroed = (element: number) => tensor.zeroRows?.has(Math.floor(element / rowLength)) ?? false;
    const value = (element: number) => (zeroed(element) ? 0 : (tensor.constant ?? (random() * 2 - 1) * tensor.scale));
    switch (tensor.type) {
      case 'f32': {
        const data = new Float32Array(count);
        for (let i = 0; i < count; i++) data[i] = value(start + i);
        yield Buffer.from(data.buffer);
        break;
      }
      case 'f16': {
        const data = new Uint16Array(count);
        for (let i = 0; i < count; i++) data[i] = toHalf(value(start + i));
        yield Buffer.from(data.buffer);
        break;
      }
      case 'q4_0': {
        // Each block: an f16 scale and 32 4-bit values centred on 8; random nibbles give values in [-8d, 7d].
        const blocks = count / Q4_0_BLOCK;
        const data = Buffer.alloc(blocks * Q4_0_BLOCK_BYTES);
        for (let block = 0; block < blocks; block++) {
          const base = block * Q4_0_BLOCK_BYTES;
          if (zeroed(start + block * Q4_0_BLOCK)) continue; // scale 0: every value is 0
          data.writeUInt16LE(toHalf((tensor.scale / 8) * (0.5 + random())), base);
          for (let byte = 2; byte < Q4_0_BLOCK_BYTES; byte += 4) {
            const bits = (random() * 0x100000000) >>> 0;
            data.writeUInt32LE(bits, base + byte);
          }
        }
        yield data;
        break;
      }
    }
  }
}

function alignUp(value: number): number {
  return Math.ceil(value / ALIGNMENT) * ALIGNMENT;
}

/** IEEE 754 half precision, round to nearest (the values written here are small and finite). */
function toHalf(value: number): number {
  const floats = new Float32Array([value]);
  const bits = new Uint32Array(floats.buffer)[0];
  const sign = (bits >>> 16) & 0x8000;
  const exponent = ((bits >>> 23) & 0xff) - 127 + 15;
  const mantissa = bits & 0x7fffff;
  if (exponent <= 0) return sign; // too small for a normal half: flush to zero
  if (exponent >= 0x1f) return sign | 0x7bff; // clamp to the largest finite half
  const rounded = (exponent << 10) | (mantissa >>> 13);
  return sign | (rounded + ((mantissa >>> 12) & 1));
}

/** Small fast deterministic PRNG (uniform in [0, 1)). */
function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function hashSeed(seed: number, name: string): number {
  let hash = (seed ^ 0x811c9dc5) >>> 0;
  for (let i = 0; i < name.length; i++) hash = Math.imul(hash ^ name.charCodeAt(i), 16777619) >>> 0;
  return hash;
}

/** Little-endian writer for the GGUF header. */
class ByteWriter {
  private readonly parts: Buffer[] = [];

  toBuffer(): Buffer {
    return Buffer.concat(this.parts);
  }

  raw(bytes: Buffer): void {
    this.parts.push(bytes);
  }

  uint32(value: number): void {
    const bytes = Buffer.alloc(4);
    bytes.writeUInt32LE(value);
    this.parts.push(bytes);
  }

  uint64(value: number): void {
    const bytes = Buffer.alloc(8);
    bytes.writeBigUInt64LE(BigInt(value));
    this.parts.push(bytes);
  }

  string(value: string): void {
    const bytes = Buffer.from(value, 'utf8');
    this.uint64(bytes.length);
    this.parts.push(bytes);
  }

  uint32Value(value: number): void {
    this.uint32(ValueType.Uint32);
    this.uint32(value);
  }

  float32Value(value: number): void {
    this.uint32(ValueType.Float32);
    const bytes = Buffer.alloc(4);
    bytes.writeFloatLE(value);
    this.parts.push(bytes);
  }

  boolValue(value: boolean): void {
    this.uint32(ValueType.Bool);
    this.parts.push(Buffer.from([value ? 1 : 0]));
  }

  stringValue(value: string): void {
    this.uint32(ValueType.String);
    this.string(value);
  }

  stringArray(values: string[]): void {
    this.arrayHeader(ValueType.String, values.length);
    for (const value of values) this.string(value);
  }

  float32Array(values: number[]): void {
    this.arrayHeader(ValueType.Float32, values.length);
    const bytes = Buffer.alloc(values.length * 4);
    values.forEach((value, index) => bytes.writeFloatLE(value, index * 4));
    this.parts.push(bytes);
  }

  int32Array(values: number[]): void {
    this.arrayHeader(ValueType.Int32, values.length);
    const bytes = Buffer.alloc(values.length * 4);
    values.forEach((value, index) => bytes.writeInt32LE(value, index * 4));
    this.parts.push(bytes);
  }

  private arrayHeader(elementType: ValueType, count: number): void {
    this.uint32(ValueType.Array);
    this.uint32(elementType);
    this.uint64(count);
  }
}
