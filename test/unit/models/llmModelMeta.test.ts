import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as esbuild from 'esbuild';
import type { GgufFile, GgufTensor } from '../../../sidecar/models/ggufTensors';
import { ggmlTensorBytes } from '../../../sidecar/models/ggufTensors';
import { llmModelMetaFromGguf, readLlmModelMeta } from '../../../sidecar/models/llmModelMeta';
import { ModelFileError } from '../../../sidecar/models/modelFileError';
import { writeLlamaGguf } from '../../helpers/ggufWriter';
import { writeHeaderOnlyGguf } from './imageCheckpoints';

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'vram-relay-llm-meta-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('readLlmModelMeta', () => {
  it('reads the shape and per-layer bytes of a tiny llama GGUF', { timeout: 30_000 }, async () => {
    const written = await writeLlamaGguf(join(dir, 'tiny.gguf'), { layers: 3, embeddingLength: 64, headCount: 4, headCountKv: 2, feedForwardLength: 96 });
    const meta = await readLlmModelMeta(written.path);
    assert.equal(meta.architecture, 'llama');
    assert.equal(meta.blockCount, 3);
    assert.equal(meta.embeddingLength, 64);
    assert.equal(meta.headCount, 4);
    assert.equal(meta.headCountKv, 2);
    assert.deepEqual(meta.headCountKvByLayer, [2, 2, 2]);
    assert.equal(meta.headDim, 16);
    assert.equal(meta.keyLength, 16);
    assert.equal(meta.valueLength, 16);
    assert.equal(meta.feedForwardLength, 96);
    assert.equal(meta.contextLengthTrained, 512);
    assert.equal(meta.vocabSize, written.vocabularySize);
    assert.equal(meta.fileSize, written.bytes);
    assert.equal(meta.tensorBytes, written.weightBytes);
    const f32 = 4;
    const n = 64;
    const kv = 32;
    const layer = (2 * n + n * n * 2 + n * kv * 2 + n * 96 * 3) * f32;
    assert.deepEqual(meta.layerBytes, [layer, layer, layer]);
    assert.equal(meta.tokenEmbeddingBytes, n * written.vocabularySize * f32);
    assert.equal(meta.outputBytes, (n + n * written.vocabularySize) * f32);
    assert.equal(meta.outputTiedToEmbedding, false);
    assert.equal(meta.otherBytes, 0);
    assert.equal(meta.fileType, 'ALL_F32');
    assert.equal(meta.dominantTensorType, 'F32');
  });

  it('sizes q4_0 tensors by their blocks (18 bytes per 32 weights)', { timeout: 30_000 }, async () => {
    const written = await writeLlamaGguf(join(dir, 'tiny-q4.gguf'), { layers: 1, embeddingLength: 64, headCount: 2, weightType: 'q4_0' });
    const meta = await readLlmModelMeta(written.path);
    assert.equal(meta.tensorBytes, written.weightBytes);
    const q4 = (count: number) => (count / 32) * 18;
    assert.equal(meta.layerBytes[0], 2 * 64 * 4 + q4(64 * 64) * 4 + q4(64 * 128) * 3);
    assert.equal(meta.fileType, 'MOSTLY_Q4_0');
    assert.equal(meta.dominantTensorType, 'Q4_0');
  });

  it('says a missing file is missing and a non-GGUF is not a GGUF', async () => {
    await assert.rejects(readLlmModelMeta(join(dir, 'absent.gguf')), (error: unknown) => error instanceof ModelFileError && error.kind === 'missing' && /not found/.test(error.message));
    const text = join(dir, 'readme.gguf');
    await writeFile(text, 'just text, not a model');
    await assert.rejects(readLlmModelMeta(text), (error: unknown) => error instanceof ModelFileError && error.message === `${text} is not a GGUF model file: pick a .gguf file.`);
    const empty = join(dir, 'empty.gguf');
    await writeFile(empty, '');
    await assert.rejects(readLlmModelMeta(empty), /is not a GGUF model file: pick a \.gguf file/);
  });

  it('says a GGUF cut in its data or in its header is truncated', { timeout: 30_000 }, async () => {
    const written = await writeLlamaGguf(join(dir, 'whole.gguf'), { layers: 1 });
    const bytes = await readFile(written.path);
    for (const [name, length] of [['cut-data.gguf', bytes.length - 100], ['cut-header.gguf', 2000], ['cut-start.gguf', 12]] as const) {
      const path = join(dir, name);
      await writeFile(path, bytes.subarray(0, length));
      await assert.rejects(readLlmModelMeta(path), (error: unknown) => {
        assert.ok(error instanceof ModelFileError, `${name}: ${String(error)}`);
        assert.equal(error.kind, 'truncated', `${name}: ${error.message}`);
        assert.match(error.message, /is truncated: .*download the model again/);
        return true;
      });
    }
  });

  it('says which part of a split GGUF is missing', { timeout: 30_000 }, async () => {
    const first = join(dir, 'split-00001-of-00002.gguf');
    await writeLlamaGguf(first, { layers: 1 });
    await assert.rejects(readLlmModelMeta(first), (error: unknown) => error instanceof ModelFileError && error.kind === 'missing' && /split-00002-of-00002\.gguf/.test(error.message));
  });

  it('says an image GGUF is not a language model', async () => {
    const path = join(dir, 'flux.gguf');
    await writeHeaderOnlyGguf(path, [{ name: 'img_in.weight', dims: [64, 3072], type: 1 }], 'flux');
    await assert.rejects(readLlmModelMeta(path), (error: unknown) => error instanceof ModelFileError && error.kind === 'unsupported' && /not a language model/.test(error.message));
  });
});

describe('llmModelMetaFromGguf (pure)', () => {
  const tensor = (name: string, dims: number[], ggmlType = 0): GgufTensor => ({
    name,
    dims,
    ggmlType,
    typeName: ggmlType === 0 ? 'F32' : 'Q8_0',
    bytes: ggmlTensorBytes(ggmlType, dims)!,
    filePart: 1,
    offset: 0,
  });
  const file = (archMetadata: Record<string, unknown>, tensors: GgufTensor[]): GgufFile => ({
    path: 'm.gguf',
    fileSize: 1,
    architecture: 'gemma',
    general: { name: 'm' },
    archMetadata,
    tensors,
  });

  it('counts a tied output as the embedding matrix, and reads per-layer KV heads and key/value widths', () => {
    const meta = llmModelMetaFromGguf(
      file({ block_count: 2, embedding_length: 64, attention: { head_count: [4, 4], head_count_kv: [1, 2], key_length: 32, value_length: 16 } }, [
        tensor('token_embd.weight', [64, 100], 8),
        tensor('blk.0.attn_q.weight', [64, 64]),
        tensor('blk.1.attn_q.weight', [64, 64]),
        tensor('output_norm.weight', [64]),
        tensor('rope_freqs.weight', [8]),
      ]),
    );
    assert.equal(meta.outputTiedToEmbedding, true);
    assert.equal(meta.outputBytes, 64 * 4 + (6400 / 32) * 34);
    assert.deepEqual(meta.headCountKvByLayer, [1, 2]);
    assert.equal(meta.headCountKv, 2);
    assert.equal(meta.keyLength, 32);
    assert.equal(meta.valueLength, 16);
    assert.equal(meta.vocabSize, 100);
    assert.equal(meta.otherBytes, 32);
    assert.equal(meta.dominantTensorType, 'F32');
  });
});

describe('loading node-llama-cpp from the CJS sidecar bundle', () => {
  it('stays a real dynamic import() after esbuild bundles the reader as CJS', async () => {
    const result = await esbuild.build({
      entryPoints: ['sidecar/models/llmModelMeta.ts'],
      bundle: true,
      write: false,
      platform: 'node',
      target: 'node20',
      format: 'cjs',
      external: ['vscode', 'node-llama-cpp', '@node-llama-cpp/*'],
      logLevel: 'silent',
    });
    const code = result.outputFiles[0].text;
    assert.match(code, /import\(\s*"node-llama-cpp"\s*\)/);
    assert.doesNotMatch(code, /require\(\s*"node-llama-cpp"\s*\)/);
  });
});
