/**
 * GGUF headers through node-llama-cpp's reader (`readGgufFileInfo`), plus what the reader leaves to us:
 * the byte size of every tensor, and checks that the file is a GGUF and is complete.
 *
 * node-llama-cpp is ESM-only and uses top-level await, so it cannot be `require`d; the sidecar bundle is CJS and
 * keeps the package external. A dynamic `import()` of an external package survives esbuild's CJS output as a real
 * `import()` (a unit test bundles this file and checks), and works under tsx too.
 */

import type { GgufFileInfo, GgufTensorInfo } from 'node-llama-cpp';
import { checkGgufLayout, ggufPartPaths } from './ggufLayout';
import { ModelFileError, modelFileSize, truncatedMessage } from './modelFileError';

type NodeLlamaCpp = typeof import('node-llama-cpp');
let nodeLlamaCpp: Promise<NodeLlamaCpp> | undefined;

/** node-llama-cpp, loaded once on first use. */
export function loadNodeLlamaCpp(): Promise<NodeLlamaCpp> {
  nodeLlamaCpp ??= import('node-llama-cpp');
  return nodeLlamaCpp;
}

/**
 * ggml tensor types: [elements per block, bytes per block] (ggml's type traits). A tensor row of `ne0` elements
 * takes ne0 / blockElements * blockBytes bytes. Types missing here fall back to the gap between tensor offsets.
 */
const GGML_TYPE_BLOCKS: Record<number, readonly [number, number]> = {
  0: [1, 4], // F32
  1: [1, 2], // F16
  2: [32, 18], // Q4_0
  3: [32, 20], // Q4_1
  6: [32, 22], // Q5_0
  7: [32, 24], // Q5_1
  8: [32, 34], // Q8_0
  9: [32, 36], // Q8_1
  10: [256, 84], // Q2_K
  11: [256, 110], // Q3_K
  12: [256, 144], // Q4_K
  13: [256, 176], // Q5_K
  14: [256, 210], // Q6_K
  15: [256, 292], // Q8_K
  16: [256, 66], // IQ2_XXS
  17: [256, 74], // IQ2_XS
  18: [256, 98], // IQ3_XXS
  19: [256, 50], // IQ1_S
  20: [32, 18], // IQ4_NL
  21: [256, 110], // IQ3_S
  22: [256, 82], // IQ2_S
  23: [256, 136], // IQ4_XS
  24: [1, 1], // I8
  25: [1, 2], // I16
  26: [1, 4], // I32
  27: [1, 8], // I64
  28: [1, 8], // F64
  29: [256, 56], // IQ1_M
  30: [1, 2], // BF16
  34: [256, 54], // TQ1_0
  35: [256, 66], // TQ2_0
  39: [32, 17], // MXFP4
};

export interface GgufTensor {
  name: string;
  /** ggml order: dims[0] is the contiguous (row) dimension, i.e. PyTorch's shape reversed. */
  dims: number[];
  ggmlType: number;
  /** ggml's name of the type, e.g. `Q4_K`. */
  typeName: string;
  /** Bytes of data this tensor occupies. */
  bytes: number;
  /** 1-based part of a split GGUF. */
  filePart: number;
  /** Offset of the data from the start of its part's data section. */
  offset: number;
}

/** What the estimators need from a GGUF header, as plain data. */
export interface GgufFile {
  path: string;
  /** Total size of the file (all parts of a split GGUF). */
  fileSize: number;
  /** `general.architecture`, when the file declares one (image GGUFs may not). */
  architecture?: string;
  /** The `general.*` keys. */
  general: Record<string, unknown>;
  /** The `<architecture>.*` keys, nested as node-llama-cpp returns them (e.g. `attention.head_count`). */
  archMetadata: Record<string, unknown>;
  /** `general.file_type` as ggml names it, e.g. `MOSTLY_Q4_K_M`. */
  fileTypeName?: string;
  /** Entries of `tokenizer.ggml.tokens`, when present. */
  tokenCount?: number;
  tensors: GgufTensor[];
}

/** Bytes of a tensor from its type and dimensions, or undefined for a type this table does not know. */
export function ggmlTensorBytes(ggmlType: number, dims: readonly number[]): number | undefined {
  const block = GGML_TYPE_BLOCKS[ggmlType];
  if (!block) return undefined;
  const elements = dims.reduce((product, dim) => product * dim, 1);
  return Math.ceil(elements / block[0]) * block[1];
}

/**
 * Reads a GGUF header and sizes its tensors. Throws ModelFileError when the file (or a part of a split file) is
 * missing, is not a GGUF, or is shorter or stranger than its header says.
 */
export async function readGgufFile(path: string): Promise<GgufFile> {
  // node-llama-cpp trusts the header's counts and lengths: check every part's header against its size first.
  for (const partPath of ggufPartPaths(path)) {
    const size = await modelFileSize(partPath, '.gguf').catch((error: unknown) => {
      if (partPath === path || !(error instanceof ModelFileError) || error.kind !== 'missing') throw error;
      throw new ModelFileError('missing', partPath, `${partPath}, a part of the split model ${path}, is missing: put every part in the same folder.`);
    });
    await checkGgufLayout(partPath, size);
  }
  const { readGgufFileInfo, GgmlType, GgufFileType } = await loadNodeLlamaCpp();
  let info: GgufFileInfo;
  try {
    info = await readGgufFileInfo(path, { logWarnings: false, sourceType: 'filesystem' });
  } catch (error) {
    const message = (error as Error).message;
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new ModelFileError('missing', path, `A part of the split model ${path} is missing (${message}): put every part in the same folder.`);
    }
    throw new ModelFileError('notModel', path, `${path} is not a readable GGUF model file (${message}): pick a .gguf file.`);
  }
  const parts = info.sourceData.flatMap((source) => (source.type === 'path' ? [source] : []));
  const partPaths = parts.length > 0 ? parts.map((part) => part.path) : [path];
  const dataStarts = parts.length > 0 ? parts.map((part) => part.length) : [info.infoEndOffset ?? 0];
  const partSizes = await Promise.all(partPaths.map((partPath) => modelFileSize(partPath, '.gguf')));
  const tensors = sizeTensors(info.fullTensorInfo ?? info.tensorInfo ?? [], partSizes, dataStarts, (type) => GgmlType[type] ?? `type ${type}`);
  checkComplete(partPaths, partSizes, dataStarts, tensors);
  const metadata = info.metadata as unknown as Record<string, Record<string, unknown> | undefined>;
  const general = metadata.general ?? {};
  const architecture = typeof general.architecture === 'string' ? general.architecture : undefined;
  const fileType = numberOrArray(general.file_type);
  const tokens = metadata.tokenizer?.ggml as Record<string, unknown> | undefined;
  return {
    path,
    fileSize: partSizes.reduce((sum, size) => sum + size, 0),
    architecture,
    general,
    archMetadata: (architecture ? metadata[architecture] : undefined) ?? {},
    fileTypeName: typeof fileType === 'number' ? GgufFileType[fileType] : undefined,
    tokenCount: Array.isArray(tokens?.tokens) ? tokens.tokens.length : undefined,
    tensors,
  };
}

function sizeTensors(
  infos: readonly GgufTensorInfo[],
  partSizes: number[],
  dataStarts: number[],
  typeName: (type: number) => string,
): GgufTensor[] {
  const tensors: GgufTensor[] = infos.map((tensor) => {
    const dims = tensor.dimensions.map(Number);
    const bytes = ggmlTensorBytes(tensor.ggmlType, dims) ?? -1;
    const filePart = tensor.filePart ?? 1;
    return { name: tensor.name, dims, ggmlType: tensor.ggmlType, typeName: typeName(tensor.ggmlType), bytes, filePart, offset: Number(tensor.offset) };
  });
  // Types the table does not know: the gap to the next tensor of the same part (or to the end of the part).
  const unknown = tensors.filter((tensor) => tensor.bytes < 0);
  if (unknown.length === 0) return tensors;
  // Sorted offsets per part, so that a header listing many such tensors costs n log n, not n squared.
  const offsetsByPart = new Map<number, number[]>();
  for (const tensor of tensors) {
    const offsets = offsetsByPart.get(tensor.filePart) ?? [];
    offsets.push(tensor.offset);
    offsetsByPart.set(tensor.filePart, offsets);
  }
  for (const offsets of offsetsByPart.values()) offsets.sort((a, b) => a - b);
  for (const tensor of unknown) {
    const dataEnd = (partSizes[tensor.filePart - 1] ?? 0) - (dataStarts[tensor.filePart - 1] ?? 0);
    const next = Math.min(dataEnd, firstAbove(offsetsByPart.get(tensor.filePart) ?? [], tensor.offset));
    tensor.bytes = Math.max(0, next - tensor.offset);
  }
  return tensors;
}

/** The smallest value above `value` in an ascending list (Infinity when there is none). */
function firstAbove(sorted: readonly number[], value: number): number {
  let low = 0;
  let high = sorted.length;
  while (low < high) {
    const middle = (low + high) >>> 1;
    if (sorted[middle] <= value) low = middle + 1;
    else high = middle;
  }
  return sorted[low] ?? Infinity;
}

/** Every part must hold its header and the data of every tensor its header lists. */
function checkComplete(paths: string[], sizes: number[], dataStarts: number[], tensors: GgufTensor[]): void {
  const needed = dataStarts.slice();
  for (const tensor of tensors) {
    const part = tensor.filePart - 1;
    needed[part] = Math.max(needed[part] ?? 0, (dataStarts[part] ?? 0) + tensor.offset + tensor.bytes);
  }
  sizes.forEach((size, index) => {
    if (size < (needed[index] ?? 0)) throw new ModelFileError('truncated', paths[index], truncatedMessage(paths[index], size, needed[index]));
  });
}

/** A metadata value as a number, or the values of a per-layer array. */
export function numberOrArray(value: unknown): number | number[] | undefined {
  if (typeof value === 'number') return value;
  if (typeof value === 'bigint') return Number(value);
  if (Array.isArray(value) && value.every((item) => typeof item === 'number' || typeof item === 'bigint')) return value.map(Number);
  return undefined;
}
