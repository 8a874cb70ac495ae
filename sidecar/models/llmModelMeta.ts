/**
 * The shape of an LLM, read from its GGUF header: what the LLM estimator needs to size weights per layer, the KV
 * cache and the compute buffers, without loading the model.
 */

import type { Bytes } from '../core/types';
import { ModelFileError } from './modelFileError';
import { numberOrArray, readGgufFile, type GgufFile, type GgufTensor } from './ggufTensors';

export interface LlmModelMeta {
  path: string;
  architecture: string;
  name?: string;
  /** Transformer blocks (llama.cpp's n_layer). llama.cpp offloads `blockCount + 1` layers: the blocks, then the output. */
  blockCount: number;
  embeddingLength: number;
  /** Feed-forward width (the largest, when it varies per layer). */
  feedForwardLength: number;
  headCount: number;
  /** Key/value heads (the largest, when it varies per layer). */
  headCountKv: number;
  /** Key/value heads of each block (grouped-query attention; some architectures vary it per layer). */
  headCountKvByLayer: number[];
  /** Per-head key and value widths (usually both = headDim). */
  keyLength: number;
  valueLength: number;
  headDim: number;
  contextLengthTrained: number;
  vocabSize: number;
  fileSize: Bytes;
  /** Sum of every tensor's data. */
  tensorBytes: Bytes;
  /** Tensor bytes of each block `blk.N.*`, by N. */
  layerBytes: Bytes[];
  /**
   * The output layer (`output.*`, `output_norm.*`): on the GPU only when every layer is. When the model ties its
   * output to the token embedding (no `output.weight`), llama.cpp uses the embedding matrix there, so it counts here.
   */
  outputBytes: Bytes;
  outputTiedToEmbedding: boolean;
  /** `token_embd.*`: llama.cpp keeps the input layer in host memory. */
  tokenEmbeddingBytes: Bytes;
  /** Everything else (rope factors, ...). Stays in host memory. */
  otherBytes: Bytes;
  /** `general.file_type`, e.g. `MOSTLY_Q4_K_M`. */
  fileType?: string;
  /** The tensor type holding most bytes, e.g. `Q4_K`. */
  dominantTensorType?: string;
  /** Sliding-window size, when the model has one (not modelled: the KV estimate stays on the safe side). */
  slidingWindow?: number;
}

/** Far above any released model (a few hundred blocks at most). */
const MAX_BLOCKS = 65_536;

/** Reads the header of a GGUF LLM. Throws ModelFileError with a message that says what to do. */
export async function readLlmModelMeta(path: string): Promise<LlmModelMeta> {
  return llmModelMetaFromGguf(await readGgufFile(path));
}

/** LlmModelMeta from a parsed header (pure). */
export function llmModelMetaFromGguf(file: GgufFile): LlmModelMeta {
  const arch = file.archMetadata;
  const attention = (arch.attention ?? {}) as Record<string, unknown>;
  const blockCount = positive(numberOrArray(arch.block_count), file, 'block_count');
  // Per-layer arrays are sized by it: a damaged header must not ask for billions of entries.
  if (blockCount > MAX_BLOCKS || !Number.isInteger(blockCount)) {
    throw new ModelFileError('notModel', file.path, `${file.path} is damaged: its header says the model has ${blockCount} layers. Download the model again, or pick another .gguf file.`);
  }
  const embeddingLength = positive(numberOrArray(arch.embedding_length), file, 'embedding_length');
  const headCount = maxOf(numberOrArray(attention.head_count)) || 1;
  const headCountKvByLayer = perLayer(numberOrArray(attention.head_count_kv) ?? headCount, blockCount);
  const headDim = Math.floor(embeddingLength / headCount);
  const sizes = tensorGroups(file.tensors);
  const embedding = file.tensors.find((tensor) => tensor.name === 'token_embd.weight');
  const slidingWindow = numberOrArray(attention.sliding_window);
  return {
    path: file.path,
    architecture: file.architecture ?? 'unknown',
    name: typeof file.general.name === 'string' ? file.general.name : undefined,
    blockCount,
    embeddingLength,
    feedForwardLength: maxOf(numberOrArray(arch.feed_forward_length)) || 4 * embeddingLength,
    headCount,
    headCountKv: maxOf(headCountKvByLayer),
    headCountKvByLayer,
    keyLength: maxOf(numberOrArray(attention.key_length)) || headDim,
    valueLength: maxOf(numberOrArray(attention.value_length)) || headDim,
    headDim,
    contextLengthTrained: maxOf(numberOrArray(arch.context_length)) || 0,
    vocabSize: maxOf(numberOrArray(arch.vocab_size)) || file.tokenCount || embedding?.dims[1] || 0,
    fileSize: file.fileSize,
    ...sizes,
    layerBytes: Array.from({ length: blockCount }, (_, index) => sizes.layerBytes[index] ?? 0),
    fileType: file.fileTypeName,
    dominantTensorType: dominantType(file.tensors),
    slidingWindow: typeof slidingWindow === 'number' ? slidingWindow : undefined,
  };
}

/** Splits tensor bytes into blocks, output, token embedding and the rest, by llama.cpp's tensor names. */
function tensorGroups(tensors: readonly GgufTensor[]) {
  const layerBytes: number[] = [];
  let outputBytes = 0;
  let tokenEmbeddingBytes = 0;
  let otherBytes = 0;
  let hasOutputMatrix = false;
  for (const tensor of tensors) {
    const block = /^blk\.(\d+)\./.exec(tensor.name);
    if (block) {
      const index = Number(block[1]);
      layerBytes[index] = (layerBytes[index] ?? 0) + tensor.bytes;
    } else if (tensor.name.startsWith('output.') || tensor.name.startsWith('output_norm.')) {
      outputBytes += tensor.bytes;
      hasOutputMatrix ||= tensor.name === 'output.weight';
    } else if (tensor.name.startsWith('token_embd.')) {
      tokenEmbeddingBytes += tensor.bytes;
    } else {
      otherBytes += tensor.bytes;
    }
  }
  const embeddingMatrix = tensors.find((tensor) => tensor.name === 'token_embd.weight')?.bytes ?? 0;
  const outputTiedToEmbedding = !hasOutputMatrix && embeddingMatrix > 0;
  return {
    tensorBytes: tensors.reduce((sum, tensor) => sum + tensor.bytes, 0),
    layerBytes,
    outputBytes: outputBytes + (outputTiedToEmbedding ? embeddingMatrix : 0),
    outputTiedToEmbedding,
    tokenEmbeddingBytes,
    otherBytes,
  };
}

function dominantType(tensors: readonly GgufTensor[]): string | undefined {
  const bytesByType = new Map<string, number>();
  for (const tensor of tensors) bytesByType.set(tensor.typeName, (bytesByType.get(tensor.typeName) ?? 0) + tensor.bytes);
  return [...bytesByType].sort((a, b) => b[1] - a[1])[0]?.[0];
}

function positive(value: number | number[] | undefined, file: GgufFile, key: string): number {
  const number = maxOf(value);
  if (!(number > 0)) {
    const what = file.architecture ? `a "${file.architecture}" GGUF without ${file.architecture}.${key}` : 'a GGUF without an architecture';
    throw new ModelFileError('unsupported', file.path, `${file.path} is ${what}: it is not a language model llama.cpp can run. Pick an LLM .gguf file.`);
  }
  return number;
}

/** The largest value (a loop, not a spread: a header array may hold more items than a call takes arguments). */
function maxOf(value: number | number[] | undefined): number {
  if (value === undefined) return 0;
  return Array.isArray(value) ? value.reduce((max, item) => (item > max ? item : max), 0) : value;
}

function perLayer(value: number | number[], layers: number): number[] {
  return Array.from({ length: layers }, (_, index) => (Array.isArray(value) ? (value[index] ?? value.at(-1) ?? 0) : value));
}
