// The test helper that writes random-weight llama GGUF files, read back with node-llama-cpp's own GGUF reader.

import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { writeLlamaGguf } from '../../../helpers/ggufWriter';

describe('writeLlamaGguf', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vram-relay-gguf-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test('the default model: llama, 2 layers, 64 wide, 260-token SPM vocabulary, under 1 MB', async () => {
    const { readGgufFileInfo } = await import('node-llama-cpp');
    const path = join(dir, 'default.gguf');
    const written = await writeLlamaGguf(path);
    assert.ok(written.bytes < 1024 * 1024);
    assert.equal(written.vocabularySize, 260);

    const info = await readGgufFileInfo(path);
    assert.equal(info.metadata.general.architecture, 'llama');
    const llama = info.metadata.llama!;
    assert.equal(llama.block_count, 2);
    assert.equal(llama.embedding_length, 64);
    assert.equal(llama.attention.head_count, 4);
    assert.equal(llama.feed_forward_length, 128);
    const tokenizer = info.metadata.tokenizer.ggml;
    assert.equal(tokenizer.model, 'llama');
    assert.equal(tokenizer.tokens.length, 260);
    assert.equal(tokenizer.tokens[3], '<0x00>');
    assert.equal(tokenizer.bos_token_id, 1);
    assert.equal(tokenizer.eos_token_id, 2);
    assert.equal(info.tensorInfo?.length, 2 + 2 * 9 + 1);
    const embedding = info.tensorInfo!.find((t) => t.name === 'token_embd.weight')!;
    assert.deepEqual(embedding.dimensions.map(Number), [64, 260]);
    assert.equal(Number(embedding.offset) % 32, 0, 'tensor data is aligned');
  });

  test('shapes follow the options: grouped-query attention, q4_0 and f16 weights, FIM tokens', async () => {
    const { readGgufFileInfo } = await import('node-llama-cpp');
    const path = join(dir, 'shaped.gguf');
    await writeLlamaGguf(path, { layers: 3, embeddingLength: 128, headCount: 8, headCountKv: 2, feedForwardLength: 256, contextLength: 1024, weightType: 'q4_0', fimTokens: true });
    const info = await readGgufFileInfo(path);
    const k = info.tensorInfo!.find((t) => t.name === 'blk.2.attn_k.weight')!;
    assert.deepEqual(k.dimensions.map(Number), [128, 32], 'k projection is 2 of 8 heads wide');
    assert.equal(k.ggmlType, 2, 'q4_0');
    assert.equal(info.tensorInfo!.find((t) => t.name === 'blk.0.attn_norm.weight')!.ggmlType, 0, 'norms stay f32');
    assert.equal(info.metadata.llama!.context_length, 1024);
    assert.equal(info.metadata.tokenizer.ggml.tokens.length, 264);
    assert.equal((info.metadata.tokenizer.ggml as Record<string, unknown>).fim_pre_token_id, 260);

    const half = join(dir, 'half.gguf');
    const f16 = await writeLlamaGguf(half, { weightType: 'f16' });
    const f32 = await writeLlamaGguf(join(dir, 'full.gguf'));
    assert.ok(f16.weightBytes < f32.weightBytes * 0.55);
  });

  test('the same options give the same bytes; another seed other weights', async () => {
    const a = await writeLlamaGguf(join(dir, 'a.gguf'), { seed: 5 });
    const b = await writeLlamaGguf(join(dir, 'b.gguf'), { seed: 5 });
    const c = await writeLlamaGguf(join(dir, 'c.gguf'), { seed: 6 });
    const [bytesA, bytesB, bytesC] = await Promise.all([a, b, c].map((w) => readFile(w.path)));
    assert.ok(bytesA.equals(bytesB));
    assert.equal(bytesA.length, bytesC.length);
    assert.ok(!bytesA.equals(bytesC));
  });

  test('bad shapes are refused before anything is written', async () => {
    const sub = await mkdtemp(join(dir, 'bad-'));
    await assert.rejects(writeLlamaGguf(join(sub, 'x.gguf'), { embeddingLength: 60, headCount: 8 }), /divisible by headCount/);
    await assert.rejects(writeLlamaGguf(join(sub, 'x.gguf'), { weightType: 'q4_0', embeddingLength: 48, headCount: 4 }), /q4_0/);
    await assert.rejects(writeLlamaGguf(join(sub, 'x.gguf'), { layers: 0 }), /layers must be a positive integer/);
    assert.deepEqual(await readdir(sub), [], 'no file, not even a partial one');
  });
});
