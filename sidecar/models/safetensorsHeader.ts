/**
 * Reads the header of a .safetensors file: 8 bytes little-endian header length N, then N bytes of JSON mapping each
 * tensor name to `{dtype, shape, data_offsets: [begin, end]}` (offsets relative to the data after the header),
 * plus an optional `__metadata__` map of strings. Only the header is read, never the weights.
 */

import { open } from 'node:fs/promises';
import { ModelFileError, modelFileSize, truncatedMessage } from './modelFileError';

/** The format caps the header at 100 MB; real headers are a few hundred KB. */
export const SAFETENSORS_MAX_HEADER_BYTES = 100_000_000;

/** Bits per element of every safetensors dtype. */
const DTYPE_BITS: Record<string, number> = {
  BOOL: 8,
  U8: 8,
  I8: 8,
  F8_E5M2: 8,
  F8_E4M3: 8,
  F8_E8M0: 8,
  I16: 16,
  U16: 16,
  F16: 16,
  BF16: 16,
  I32: 32,
  U32: 32,
  F32: 32,
  I64: 64,
  U64: 64,
  F64: 64,
  F6_E2M3: 6,
  F6_E3M2: 6,
  F4: 4,
};

export interface SafetensorsTensor {
  name: string;
  dtype: string;
  /** PyTorch order: outermost dimension first. */
  shape: number[];
  bytes: number;
}

export interface SafetensorsHeader {
  path: string;
  fileSize: number;
  /** 8 + header length: where the tensor data starts. */
  dataStart: number;
  metadata: Record<string, string>;
  tensors: SafetensorsTensor[];
}

/** Reads and validates a safetensors header. Throws ModelFileError with a message that says what to do. */
export async function readSafetensorsHeader(path: string): Promise<SafetensorsHeader> {
  const fileSize = await modelFileSize(path, '.safetensors');
  if (fileSize < 8) throw notSafetensors(path, 'it is shorter than the 8-byte header length');
  const handle = await open(path, 'r');
  try {
    const lengthBytes = Buffer.alloc(8);
    await handle.read(lengthBytes, 0, 8, 0);
    const headerLength = Number(lengthBytes.readBigUInt64LE(0));
    if (headerLength < 2 || headerLength > SAFETENSORS_MAX_HEADER_BYTES) {
      throw notSafetensors(path, `its header length field (${headerLength}) is out of range`);
    }
    // A header is a JSON object: anything else after the length is another kind of file, not a cut one.
    const opening = Buffer.alloc(1);
    const { bytesRead } = await handle.read(opening, 0, 1, 8);
    if (bytesRead === 1 && opening[0] !== 0x7b) throw notSafetensors(path, 'its header is not a JSON object');
    if (8 + headerLength > fileSize) throw new ModelFileError('truncated', path, truncatedMessage(path, fileSize, 8 + headerLength));
    const json = Buffer.alloc(headerLength);
    await handle.read(json, 0, headerLength, 8);
    return parseSafetensorsHeader(path, fileSize, json);
  } finally {
    await handle.close();
  }
}

/** Validates the JSON header bytes (pure, given the file size). */
export function parseSafetensorsHeader(path: string, fileSize: number, json: Buffer): SafetensorsHeader {
  if (json[0] !== 0x7b) throw notSafetensors(path, 'its header is not a JSON object');
  let parsed: unknown;
  try {
    parsed = JSON.parse(json.toString('utf8'));
  } catch {
    throw notSafetensors(path, 'its header is not valid JSON');
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw notSafetensors(path, 'its header is not a JSON object');

  const dataStart = 8 + json.length;
  const dataLength = fileSize - dataStart;
  const tensors: SafetensorsTensor[] = [];
  let metadata: Record<string, string> = {};
  let dataEnd = 0;
  for (const [name, entry] of Object.entries(parsed as Record<string, unknown>)) {
    if (name === '__metadata__') {
      metadata = stringMap(entry);
      continue;
    }
    const tensor = tensorEntry(path, name, entry);
    tensors.push(tensor.tensor);
    dataEnd = Math.max(dataEnd, tensor.end);
  }
  if (dataEnd > dataLength) throw new ModelFileError('truncated', path, truncatedMessage(path, fileSize, dataStart + dataEnd));
  return { path, fileSize, dataStart, metadata, tensors };
}

function tensorEntry(path: string, name: string, entry: unknown): { tensor: SafetensorsTensor; end: number } {
  const bad = (what: string) => notSafetensors(path, `tensor "${name}" has ${what}`);
  if (typeof entry !== 'object' || entry === null) throw bad('no description');
  const { dtype, shape, data_offsets: offsets } = entry as Record<string, unknown>;
  if (typeof dtype !== 'string') throw bad('no dtype');
  if (!Array.isArray(shape) || !shape.every(isCount)) throw bad('an invalid shape');
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount) || offsets[0] > offsets[1]) throw bad('invalid data offsets');
  const [begin, end] = offsets as [number, number];
  const bits = DTYPE_BITS[dtype];
  if (bits !== undefined) {
    const elements = (shape as number[]).reduce((product, dim) => product * dim, 1);
    // Sub-byte types pack their elements; the stored byte count rounds up.
    if (Math.ceil((elements * bits) / 8) !== end - begin) throw bad(`${end - begin} bytes of data where its ${dtype} shape needs ${Math.ceil((elements * bits) / 8)}`);
  }
  return { tensor: { name, dtype, shape: shape as number[], bytes: end - begin }, end };
}

function isCount(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

function stringMap(value: unknown): Record<string, string> {
  if (typeof value !== 'object' || value === null) return {};
  return Object.fromEntries(Object.entries(value).filter((pair): pair is [string, string] => typeof pair[1] === 'string'));
}

function notSafetensors(path: string, why: string): ModelFileError {
  return new ModelFileError('notModel', path, `${path} is not a safetensors model file (${why}): pick a .safetensors or .gguf model file.`);
}
