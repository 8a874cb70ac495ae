import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ModelFileError } from '../../../sidecar/models/modelFileError';
import { parseSafetensorsHeader, readSafetensorsHeader } from '../../../sidecar/models/safetensorsHeader';

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'vram-relay-safetensors-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A safetensors file from a header object and a data length (zeros). */
function fileBytes(header: unknown, dataBytes: number, lengthOverride?: bigint): Buffer {
  const json = Buffer.from(JSON.stringify(header));
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(lengthOverride ?? BigInt(json.length));
  return Buffer.concat([length, json, Buffer.alloc(dataBytes)]);
}

async function write(name: string, bytes: Buffer): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, bytes);
  return path;
}

const valid = {
  __metadata__: { format: 'pt', note: 'x' },
  'a.weight': { dtype: 'F16', shape: [4, 8], data_offsets: [0, 64] },
  'b.bias': { dtype: 'F32', shape: [4], data_offsets: [64, 80] },
  'c.packed': { dtype: 'F4', shape: [3], data_offsets: [80, 82] },
  'd.custom': { dtype: 'Q_WEIRD', shape: [7], data_offsets: [82, 90] },
};

describe('readSafetensorsHeader', () => {
  it('reads names, dtypes, shapes, byte sizes and metadata', async () => {
    const path = await write('ok.safetensors', fileBytes(valid, 90));
    const header = await readSafetensorsHeader(path);
    assert.deepEqual(
      header.tensors.map((tensor) => [tensor.name, tensor.dtype, tensor.shape, tensor.bytes]),
      [
        ['a.weight', 'F16', [4, 8], 64],
        ['b.bias', 'F32', [4], 16],
        ['c.packed', 'F4', [3], 2],
        ['d.custom', 'Q_WEIRD', [7], 8],
      ],
    );
    assert.deepEqual(header.metadata, { format: 'pt', note: 'x' });
    assert.equal(header.dataStart, 8 + Buffer.byteLength(JSON.stringify(valid)));
  });

  it('says a file cut inside its data is truncated', async () => {
    const path = await write('cut.safetensors', fileBytes(valid, 50));
    await assert.rejects(readSafetensorsHeader(path), (error: unknown) => error instanceof ModelFileError && error.kind === 'truncated' && /download the model again/.test(error.message));
  });

  it('says a file cut inside its header is truncated', async () => {
    const whole = fileBytes(valid, 90);
    const path = await write('cut-header.safetensors', whole.subarray(0, 40));
    await assert.rejects(readSafetensorsHeader(path), (error: unknown) => error instanceof ModelFileError && error.kind === 'truncated');
  });

  const notSafetensors: [string, Buffer][] = [
    ['empty', Buffer.alloc(0)],
    ['too short', Buffer.from('abc')],
    ['text', Buffer.from('hello, this is a text file and not a model')],
    ['zero length', fileBytes({}, 0, 0n)],
    ['huge length', fileBytes(valid, 90, 1n << 40n)],
    ['not JSON', Buffer.concat([fileBytes({}, 0, 9n).subarray(0, 8), Buffer.from('{not json')])],
    ['a JSON array', Buffer.concat([fileBytes({}, 0, 5n).subarray(0, 8), Buffer.from('[1,2]')])],
    ['no dtype', fileBytes({ t: { shape: [1], data_offsets: [0, 2] } }, 2)],
    ['a bad shape', fileBytes({ t: { dtype: 'F16', shape: [-1], data_offsets: [0, 2] } }, 2)],
    ['reversed offsets', fileBytes({ t: { dtype: 'F16', shape: [1], data_offsets: [2, 0] } }, 2)],
    ['a size that does not match the shape', fileBytes({ t: { dtype: 'F32', shape: [2, 2], data_offsets: [0, 8] } }, 8)],
  ];
  for (const [what, bytes] of notSafetensors) {
    it(`rejects ${what} with a message that says what to do`, async () => {
      const path = await write(`bad-${what.replace(/\W+/g, '-')}.safetensors`, bytes);
      await assert.rejects(readSafetensorsHeader(path), (error: unknown) => {
        assert.ok(error instanceof ModelFileError, String(error));
        assert.equal(error.kind, 'notModel');
        assert.match(error.message, /is not a safetensors model file \(.+\): pick a \.safetensors or \.gguf model file\./);
        return true;
      });
    });
  }

  it('says a missing file is missing', async () => {
    await assert.rejects(readSafetensorsHeader(join(dir, 'absent.safetensors')), (error: unknown) => error instanceof ModelFileError && error.kind === 'missing');
  });
});

describe('parseSafetensorsHeader under mutation', () => {
  it('never throws anything but a ModelFileError for 2000 mutated headers', () => {
    const json = Buffer.from(JSON.stringify(valid));
    let state = 12345;
    const random = () => {
      state = (Math.imul(state, 1103515245) + 12345) >>> 0;
      return state / 2 ** 32;
    };
    let accepted = 0;
    for (let round = 0; round < 2000; round++) {
      const mutated = Buffer.from(json);
      const edits = 1 + Math.floor(random() * 4);
      for (let edit = 0; edit < edits; edit++) mutated[Math.floor(random() * mutated.length)] = Math.floor(random() * 256);
      try {
        const header = parseSafetensorsHeader('fuzz.safetensors', 8 + mutated.length + 90, mutated);
        for (const tensor of header.tensors) assert.ok(Number.isSafeInteger(tensor.bytes) && tensor.bytes >= 0);
        accepted++;
      } catch (error) {
        assert.ok(error instanceof ModelFileError, `round ${round}: ${String(error)}`);
      }
    }
    assert.ok(accepted < 2000, 'some mutations must be rejected');
  });
});
