/**
 * A bounds check of a GGUF header before node-llama-cpp parses it.
 *
 * node-llama-cpp's reader trusts the counts and lengths in the header: it pads a short file with zeros and reads on,
 * so a tensor count of 2^63 loops for ever, and a string length of 2^31 makes Node abort inside `fs.read` (the
 * whole sidecar dies). This walk reads only the fixed-size fields (lengths, counts, types), skips over strings and
 * arrays without reading them, and refuses any field that would end past the end of the file. It allocates one
 * small window, whatever the header claims. The limits are llama.cpp's own (gguf.cpp): versions 2 and 3, no nested
 * arrays, at most 4 dimensions, a power-of-two `general.alignment`.
 */

import { open, type FileHandle } from 'node:fs/promises';
import { ModelFileError } from './modelFileError';

/** Bytes of each scalar GGUF value type (gguf.md): uint8..float64, bool. 8 is string, 9 is array. */
const SCALAR_BYTES: Record<number, number> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };
const STRING_TYPE = 8;
const ARRAY_TYPE = 9;
const UINT32_TYPE = 4;
/** The smallest key-value: an empty key (8-byte length), its type (4) and a one-byte value. */
const MIN_KV_BYTES = 13;
/** The smallest tensor info: an empty name (8), no dimensions (4), its type (4) and its offset (8). */
const MIN_TENSOR_BYTES = 24;
const GGML_MAX_DIMS = 4;
const ALIGNMENT_KEY = 'general.alignment';
const WINDOW_BYTES = 64 * 1024;

export interface GgufLayout {
  version: number;
  tensorCount: number;
  kvCount: number;
  /** Where the tensor infos end (before alignment padding). */
  headerEnd: number;
}

/** The parts of a split GGUF (`name-00001-of-00003.gguf`), named as llama.cpp's gguf-split names them. */
export function ggufPartPaths(path: string): string[] {
  const match = /-(\d{5})-of-(\d{5})\.gguf$/.exec(path);
  if (!match) return [path];
  const part = Number(match[1]);
  const parts = Number(match[2]);
  if (part === 0 || parts === 0 || part > parts) return [path];
  const stem = path.slice(0, path.length - match[0].length);
  return Array.from({ length: parts }, (_, index) => `${stem}-${String(index + 1).padStart(5, '0')}-of-${match[2]}.gguf`);
}

/** Walks the header of the GGUF at `path` (`fileSize` bytes long). Throws ModelFileError when it cannot be right. */
export async function checkGgufLayout(path: string, fileSize: number): Promise<GgufLayout> {
  const handle = await open(path, 'r');
  try {
    return await walk(new WindowReader(handle, path, fileSize));
  } finally {
    await handle.close();
  }
}

async function walk(reader: WindowReader): Promise<GgufLayout> {
  const { path, size } = reader;
  if (size < 4 || (await reader.fixed(4)).toString('latin1') !== 'GGUF') {
    throw new ModelFileError('notModel', path, `${path} is not a GGUF model file: pick a .gguf file.`);
  }
  if (size < 24) throw reader.pastEnd('the 24-byte GGUF preamble');
  const version = (await reader.fixed(4)).readUInt32LE(0);
  if (version === 1) {
    throw new ModelFileError('unsupported', path, `${path} is a GGUF version 1 file, which llama.cpp no longer reads: download a current GGUF of the model.`);
  }
  if (version !== 2 && version !== 3) {
    throw new ModelFileError('notModel', path, `${path} is not a readable GGUF model file (unknown GGUF version ${version}): pick a .gguf file.`);
  }
  const tensorCount = await reader.u64();
  const kvCount = await reader.u64();
  const room = BigInt(size - reader.offset);
  if (kvCount * BigInt(MIN_KV_BYTES) > room) throw reader.pastEnd(`its header's list of ${kvCount} metadata entries`);
  if (tensorCount * BigInt(MIN_TENSOR_BYTES) > room) throw reader.pastEnd(`its header's list of ${tensorCount} tensors`);

  for (let kv = 0n; kv < kvCount; kv++) {
    const keyAt = reader.offset;
    const keyLength = await reader.skipString('a metadata key');
    const type = (await reader.fixed(4)).readUInt32LE(0);
    if (keyLength === ALIGNMENT_KEY.length && (await reader.textAt(keyAt + 8, keyLength)) === ALIGNMENT_KEY) {
      await checkAlignment(reader, type);
      continue;
    }
    await skipValue(reader, type, `the value of metadata entry ${kv}`);
  }
  for (let tensor = 0n; tensor < tensorCount; tensor++) {
    await reader.skipString(`the name of tensor ${tensor}`);
    const dims = (await reader.fixed(4)).readUInt32LE(0);
    if (dims > GGML_MAX_DIMS) throw reader.damaged(`tensor ${tensor} has ${dims} dimensions (ggml allows ${GGML_MAX_DIMS})`);
    await reader.skip(BigInt(dims * 8 + 4 + 8), `the shape of tensor ${tensor}`);
  }
  return { version, tensorCount: Number(tensorCount), kvCount: Number(kvCount), headerEnd: reader.offset };
}

async function checkAlignment(reader: WindowReader, type: number): Promise<void> {
  if (type !== UINT32_TYPE) throw reader.damaged(`its ${ALIGNMENT_KEY} is not a uint32`);
  const alignment = (await reader.fixed(4)).readUInt32LE(0);
  if (alignment === 0 || (alignment & (alignment - 1)) !== 0) throw reader.damaged(`its ${ALIGNMENT_KEY} is ${alignment}, not a power of two`);
}

async function skipValue(reader: WindowReader, type: number, what: string): Promise<void> {
  const scalar = SCALAR_BYTES[type];
  if (scalar !== undefined) return reader.skip(BigInt(scalar), what);
  if (type === STRING_TYPE) {
    await reader.skipString(what);
    return;
  }
  if (type !== ARRAY_TYPE) throw reader.damaged(`${what} has the unknown type ${type}`);
  const itemType = (await reader.fixed(4)).readUInt32LE(0);
  const count = await reader.u64();
  const itemBytes = SCALAR_BYTES[itemType];
  if (itemBytes !== undefined) return reader.skip(count * BigInt(itemBytes), what);
  if (itemType === ARRAY_TYPE) throw reader.damaged(`${what} is an array of arrays, which llama.cpp does not read`);
  if (itemType !== STRING_TYPE) throw reader.damaged(`${what} is an array of the unknown type ${itemType}`);
  // Each string takes at least its 8-byte length.
  if (count * 8n > BigInt(reader.size - reader.offset)) throw reader.pastEnd(`${what} (${count} strings)`);
  for (let item = 0n; item < count; item++) await reader.skipString(what);
}

/** Reads fixed-size fields through one small window of the file; never reads or allocates past the file's end. */
class WindowReader {
  offset = 0;
  private readonly backing = Buffer.alloc(WINDOW_BYTES);
  private window = Buffer.alloc(0);
  private windowStart = 0;

  constructor(
    private readonly handle: FileHandle,
    readonly path: string,
    readonly size: number,
  ) {}

  /** The next `length` (at most 8) bytes. */
  async fixed(length: number): Promise<Buffer> {
    const start = this.offset;
    if (start + length > this.size) throw this.pastEnd(`a ${length}-byte field at byte ${start}`);
    if (start < this.windowStart || start + length > this.windowStart + this.window.length) await this.load(start, length);
    this.offset += length;
    return this.window.subarray(start - this.windowStart, start - this.windowStart + length);
  }

  async u64(): Promise<bigint> {
    return (await this.fixed(8)).readBigUInt64LE(0);
  }

  /** Skips a string (8-byte length, then its bytes); returns its length. */
  async skipString(what: string): Promise<number> {
    const length = await this.u64();
    await this.skip(length, `${what} (a string of ${length} bytes)`);
    return Number(length);
  }

  async skip(bytes: bigint, what: string): Promise<void> {
    if (BigInt(this.offset) + bytes > BigInt(this.size)) throw this.pastEnd(what);
    this.offset += Number(bytes);
  }

  /** Text of a short field already walked over (a key). */
  async textAt(offset: number, length: number): Promise<string> {
    const bytes = Buffer.alloc(length);
    await this.handle.read(bytes, 0, length, offset);
    return bytes.toString('latin1');
  }

  pastEnd(what: string): ModelFileError {
    return new ModelFileError(
      'truncated',
      this.path,
      `${this.path} is truncated: ${what} would end past the end of the file (${this.size} bytes). ` +
        'The download or copy did not finish, or the file is damaged: download the model again.',
    );
  }

  damaged(why: string): ModelFileError {
    return new ModelFileError('notModel', this.path, `${this.path} is damaged: ${why}. Download the model again, or pick another .gguf file.`);
  }

  private async load(start: number, needed: number): Promise<void> {
    const { bytesRead } = await this.handle.read(this.backing, 0, Math.min(WINDOW_BYTES, this.size - start), start);
    // The file shrank since it was measured.
    if (bytesRead < needed) throw this.pastEnd(`a ${needed}-byte field at byte ${start}`);
    this.windowStart = start;
    this.window = this.backing.subarray(0, bytesRead);
  }
}
