/**
 * Fuzzing of the model header readers through the functions the sidecar calls: readGgufFile (our checks around
 * node-llama-cpp's reader), readSafetensorsHeader, and readImageModelFile (which picks the reader from the first
 * bytes), plus what is built from their results (llmModelMetaFromGguf, imageModelInfoFromFiles).
 *
 * Properties: a file is either read, with finite, non-negative sizes, or refused with a ModelFileError whose
 * message names the file and says what to do; nothing else is thrown; no read allocates more than a few MB,
 * whatever lengths the header claims; no input pollutes Object.prototype; every input ends (the test timeout).
 */

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readGgufFile, type GgufFile } from '../../../sidecar/models/ggufTensors';
import { imageModelInfoFromFiles, readImageModelFile } from '../../../sidecar/models/imageModelInfo';
import { llmModelMetaFromGguf } from '../../../sidecar/models/llmModelMeta';
import { ModelFileError } from '../../../sidecar/models/modelFileError';
import { readSafetensorsHeader } from '../../../sidecar/models/safetensorsHeader';
import { assertFiniteNumbers, cases, describeCase, fuzz, INTERESTING_U64, mutateBytes, type Random } from './fuzzKit';
import { llamaGgufSeed, safetensorsSeed, type SeedFile } from './modelSeeds';

/** The largest single allocation any read may make (node-llama-cpp reads ahead 4 MiB at a time). */
const MAX_ALLOCATION = 32 * 1024 * 1024;
const ADVICE = /download|pick|use|check|put|convert/i;

let dir: string;
before(async () => {
  // Thousands of small files are written: memory-backed /dev/shm where there is one, the temp folder elsewhere.
  dir = await mkdtemp(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'vram-relay-fuzz-models-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/**
 * Runs `read` while recording the largest Buffer allocation it asks for. Node allocates through these functions,
 * and so does node-llama-cpp's reader, so a header that talks a reader into a huge buffer shows here.
 */
async function largestAllocation<T>(read: () => Promise<T>): Promise<{ result: PromiseSettledResult<T>; largest: number }> {
  const original = { alloc: Buffer.alloc, allocUnsafe: Buffer.allocUnsafe, allocUnsafeSlow: Buffer.allocUnsafeSlow };
  let largest = 0;
  const spy =
    <A extends unknown[], R>(fn: (size: number, ...rest: A) => R) =>
    (size: number, ...rest: A): R => {
      largest = Math.max(largest, size);
      if (size > MAX_ALLOCATION) throw new Error(`refused to allocate ${size} bytes`);
      return fn(size, ...rest);
    };
  Buffer.alloc = spy(original.alloc) as typeof Buffer.alloc;
  Buffer.allocUnsafe = spy(original.allocUnsafe) as typeof Buffer.allocUnsafe;
  Buffer.allocUnsafeSlow = spy(original.allocUnsafeSlow) as typeof Buffer.allocUnsafeSlow;
  try {
    const [result] = await Promise.allSettled([read()]);
    return { result, largest };
  } finally {
    Object.assign(Buffer, original);
  }
}

/** A refusal must be a ModelFileError about this file that says what to do. */
function checkRefusal(reason: unknown, path: string, where: string): void {
  assert.ok(reason instanceof ModelFileError, `${where}: threw ${reason instanceof Error ? reason.stack : String(reason)}`);
  assert.ok(reason.message.includes(path), `${where}: message does not name the file: ${reason.message}`);
  assert.match(reason.message, ADVICE, `${where}: message does not say what to do: ${reason.message}`);
}

function checkGguf(file: GgufFile, size: number, where: string): void {
  assert.equal(file.fileSize, size, where);
  for (const tensor of file.tensors) {
    assert.ok(Number.isFinite(tensor.bytes) && tensor.bytes >= 0, `${where}: tensor ${tensor.name} has ${tensor.bytes} bytes`);
    assert.ok(Number.isFinite(tensor.offset) && tensor.offset >= 0, `${where}: tensor ${tensor.name} at ${tensor.offset}`);
    assert.ok(tensor.offset + tensor.bytes <= size, `${where}: tensor ${tensor.name} ends past the file`);
  }
  // What the estimators build from it is finite too, or refused the same clear way.
  try {
    assertFiniteNumbers(llmModelMetaFromGguf(file), `${where} (LLM shape)`);
  } catch (error) {
    if (!(error instanceof ModelFileError)) throw error;
    checkRefusal(error, file.path, `${where} (LLM shape)`);
  }
}

/** A copy of `seed` with one length or count field set to an absurd value. */
function hugeField(random: Random, seed: SeedFile): Buffer {
  const bytes = Buffer.from(seed.bytes);
  if (seed.u32Fields.length > 0 && random.chance(0.3)) {
    bytes.writeUInt32LE(Number(random.pick(INTERESTING_U64) & 0xffffffffn), random.pick(seed.u32Fields));
  } else {
    bytes.writeBigUInt64LE(random.pick(INTERESTING_U64), random.pick(seed.u64Fields));
  }
  return bytes;
}

/** Cases for one seed: every truncation, one absurd field, and random mutations (one to three). */
function variant(random: Random, seed: SeedFile, index: number): Buffer {
  if (index <= seed.bytes.length) return seed.bytes.subarray(0, index);
  if (random.chance(0.35)) return hugeField(random, seed);
  let bytes = seed.bytes;
  const edits = 1 + random.int(3);
  for (let edit = 0; edit < edits; edit++) bytes = mutateBytes(random, bytes, [Buffer.from('__proto__'), Buffer.from('GGUF'), Buffer.from('{"a":')]);
  return bytes;
}

describe('fuzz: GGUF header reader', () => {
  it('reads every cut and mutated GGUF, or refuses it clearly, without big allocations', { timeout: 120_000 }, async () => {
    const seed = llamaGgufSeed();
    const path = join(dir, 'fuzz.gguf');
    const outcomes = { read: 0, refused: 0 };
    await fuzz('gguf', seed.bytes.length + 1 + cases(1200), async (random, index) => {
      const bytes = variant(random, seed, index);
      const where = describeCase('gguf', index, bytes);
      await writeFile(path, bytes);
      const { result, largest } = await largestAllocation(() => readGgufFile(path));
      assert.ok(largest <= MAX_ALLOCATION, `${where}: allocated ${largest} bytes`);
      if (result.status === 'fulfilled') {
        outcomes.read++;
        checkGguf(result.value, bytes.length, where);
      } else {
        outcomes.refused++;
        checkRefusal(result.reason, path, where);
      }
      assert.equal(({} as Record<string, unknown>).polluted, undefined, `${where}: Object.prototype was changed`);
    });
    assert.ok(outcomes.read > 0 && outcomes.refused > 0, `both outcomes seen: ${JSON.stringify(outcomes)}`);
  });

  it('refuses absurd counts and lengths before node-llama-cpp sees them (it would loop or abort the process)', { timeout: 60_000 }, async () => {
    const seed = llamaGgufSeed();
    const path = join(dir, 'huge.gguf');
    const [tensorCount, kvCount] = seed.u64Fields;
    for (const field of seed.lengthFields) {
      for (const value of [2n ** 31n, 2n ** 40n, 2n ** 63n, 2n ** 64n - 1n]) {
        const bytes = Buffer.from(seed.bytes);
        bytes.writeBigUInt64LE(value, field);
        await writeFile(path, bytes);
        const where = `field at byte ${field} = ${value}`;
        const { result, largest } = await largestAllocation(() => readGgufFile(path));
        assert.ok(largest <= MAX_ALLOCATION, `${where}: allocated ${largest} bytes`);
        assert.equal(result.status, 'rejected', `${where}: was read`);
        if (result.status === 'rejected') {
          checkRefusal(result.reason, path, where);
          if (field === tensorCount || field === kvCount) assert.match((result.reason as Error).message, /is truncated: its header's list of \d+/);
        }
      }
    }
  });

  it('refuses what llama.cpp refuses: odd alignments, unknown types, nested arrays, old and unknown versions', { timeout: 30_000 }, async () => {
    const seed = llamaGgufSeed();
    const after = (key: string) => seed.bytes.indexOf(key) + key.length;
    const patches: [string, (bytes: Buffer) => void, RegExp][] = [
      ['alignment 0', (b) => b.writeUInt32LE(0, after('general.alignment') + 4), /general\.alignment is 0, not a power of two/],
      ['alignment 24', (b) => b.writeUInt32LE(24, after('general.alignment') + 4), /general\.alignment is 24, not a power of two/],
      ['alignment as int32', (b) => b.writeUInt32LE(5, after('general.alignment')), /general\.alignment is not a uint32/],
      ['an unknown value type', (b) => b.writeUInt32LE(77, after('general.name')), /has the unknown type 77/],
      ['an array of arrays', (b) => b.writeUInt32LE(9, after('tokenizer.ggml.tokens') + 4), /array of arrays/],
      ['five dimensions', (b) => b.writeUInt32LE(5, after('output_norm.weight')), /has 5 dimensions \(ggml allows 4\)/],
      ['version 1', (b) => b.writeUInt32LE(1, 4), /GGUF version 1 file, which llama\.cpp no longer reads: download a current GGUF/],
      ['version 7', (b) => b.writeUInt32LE(7, 4), /unknown GGUF version 7/],
    ];
    const path = join(dir, 'odd.gguf');
    for (const [what, patch, expected] of patches) {
      const bytes = Buffer.from(seed.bytes);
      patch(bytes);
      await writeFile(path, bytes);
      await assert.rejects(readGgufFile(path), (error: unknown) => {
        checkRefusal(error, path, what);
        assert.match((error as Error).message, expected, what);
        return true;
      });
    }
  });

  it('checks every part of a split GGUF, and names a missing one', { timeout: 30_000 }, async () => {
    const seed = llamaGgufSeed();
    const first = join(dir, 'split-00001-of-00002.gguf');
    await writeFile(first, seed.bytes);
    await assert.rejects(readGgufFile(first), /split-00002-of-00002\.gguf, a part of the split model .* is missing: put every part in the same folder/);
    const damaged = Buffer.from(seed.bytes);
    damaged.writeBigUInt64LE(2n ** 62n, seed.lengthFields[0]);
    await writeFile(join(dir, 'split-00002-of-00002.gguf'), damaged);
    await assert.rejects(readGgufFile(first), /split-00002-of-00002\.gguf is truncated/);
  });

  it('refuses a header whose layer count would size billions of per-layer entries', { timeout: 30_000 }, async () => {
    const seed = llamaGgufSeed();
    const at = seed.bytes.indexOf('llama.block_count') + 'llama.block_count'.length + 4;
    const bytes = Buffer.from(seed.bytes);
    bytes.writeUInt32LE(2 ** 31, at);
    const path = join(dir, 'layers.gguf');
    await writeFile(path, bytes);
    const file = await readGgufFile(path);
    assert.throws(() => llmModelMetaFromGguf(file), (error: unknown) => error instanceof ModelFileError && /2147483648 layers/.test(error.message) && error.message.includes(path));
  });

  it('takes the largest of a per-layer array of any length (no spread into Math.max)', () => {
    const file: GgufFile = {
      path: '/models/wide.gguf',
      fileSize: 1,
      architecture: 'llama',
      general: {},
      archMetadata: { block_count: 2, embedding_length: 8, attention: { head_count: Array.from({ length: 300_000 }, (_, i) => (i === 299_999 ? 4 : 2)) } },
      tensors: [],
    };
    assert.equal(llmModelMetaFromGguf(file).headCount, 4);
  });
});

describe('fuzz: safetensors header reader', () => {
  it('reads every cut and mutated safetensors file, or refuses it clearly, without big allocations', { timeout: 120_000 }, async () => {
    const seed = safetensorsSeed();
    const path = join(dir, 'fuzz.safetensors');
    const outcomes = { read: 0, refused: 0 };
    await fuzz('safetensors', seed.bytes.length + 1 + cases(2000), async (random, index) => {
      const bytes = variant(random, seed, index);
      const where = describeCase('safetensors', index, bytes);
      await writeFile(path, bytes);
      const { result, largest } = await largestAllocation(() => readSafetensorsHeader(path));
      assert.ok(largest <= MAX_ALLOCATION, `${where}: allocated ${largest} bytes`);
      if (result.status === 'fulfilled') {
        outcomes.read++;
        const header = result.value;
        assertFiniteNumbers(header.tensors, where);
        for (const tensor of header.tensors) assert.ok(tensor.bytes >= 0 && header.dataStart + tensor.bytes <= bytes.length, `${where}: ${tensor.name}`);
      } else {
        outcomes.refused++;
        checkRefusal(result.reason, path, where);
      }
      assert.equal(({} as Record<string, unknown>).polluted, undefined, `${where}: Object.prototype was changed`);
    });
    assert.ok(outcomes.read > 0 && outcomes.refused > 0, `both outcomes seen: ${JSON.stringify(outcomes)}`);
  });

  it('refuses a header length larger than the file, or than any header can be, before allocating it', { timeout: 30_000 }, async () => {
    const seed = safetensorsSeed();
    const path = join(dir, 'long.safetensors');
    for (const length of [BigInt(seed.bytes.length), 50_000_000n, 2n ** 40n, 2n ** 63n]) {
      const bytes = Buffer.from(seed.bytes);
      bytes.writeBigUInt64LE(length, 0);
      await writeFile(path, bytes);
      const { result, largest } = await largestAllocation(() => readSafetensorsHeader(path));
      assert.ok(largest < 1024 * 1024, `header length ${length}: allocated ${largest} bytes`);
      assert.equal(result.status, 'rejected', `header length ${length}`);
      if (result.status === 'rejected') checkRefusal(result.reason, path, `header length ${length}`);
    }
  });
});

describe('fuzz: image model files (reader chosen from the first bytes)', () => {
  it('sizes mutated GGUF and safetensors checkpoints with finite figures, or refuses them clearly', { timeout: 120_000 }, async () => {
    const seeds = [llamaGgufSeed(), safetensorsSeed()];
    const outcomes = { read: 0, refused: 0 };
    await fuzz('imageModel', cases(600), async (random, index) => {
      const seed = random.pick(seeds);
      const bytes = variant(random, seed, seed.bytes.length + 1);
      // The extension does not decide the reader: a .gguf name may hold safetensors bytes and the other way round.
      const path = join(dir, random.chance(0.5) ? 'model.gguf' : 'model.safetensors');
      const where = describeCase('imageModel', index, bytes);
      await writeFile(path, bytes);
      const { result, largest } = await largestAllocation(() => readImageModelFile(path, 'checkpoint'));
      assert.ok(largest <= MAX_ALLOCATION, `${where}: allocated ${largest} bytes`);
      if (result.status === 'fulfilled') {
        outcomes.read++;
        assertFiniteNumbers(result.value.tensors.map((tensor) => tensor.bytes), where);
        const info = imageModelInfoFromFiles([result.value]);
        assertFiniteNumbers({ weights: info.weights, latent: info.latentChannels, files: info.files }, where);
      } else {
        outcomes.refused++;
        checkRefusal(result.reason, path, where);
      }
    });
    assert.ok(outcomes.read > 0 && outcomes.refused > 0, `both outcomes seen: ${JSON.stringify(outcomes)}`);
  });

  it('refuses a text file renamed to a model name, and an empty one', { timeout: 30_000 }, async () => {
    for (const name of ['notes.gguf', 'notes.safetensors', 'empty.gguf']) {
      const path = join(dir, name);
      await writeFile(path, name.startsWith('empty') ? '' : 'These are my notes, not a model.\n');
      await assert.rejects(readImageModelFile(path, 'checkpoint'), (error: unknown) => {
        checkRefusal(error, path, name);
        assert.equal((error as ModelFileError).kind, 'notModel', name);
        return true;
      });
    }
  });
});
