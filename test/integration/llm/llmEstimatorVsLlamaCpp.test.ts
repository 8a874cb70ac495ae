// The LLM estimator against llama.cpp itself: node-llama-cpp on the CPU loads small models written by the test and
// logs the size of every buffer it allocates; the KV cache must match exactly and the compute buffer closely.

import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { estimateLlm } from '../../../sidecar/core/estimators/llmEstimator';
import { MiB } from '../../../sidecar/core/types';
import { readLlmModelMeta } from '../../../sidecar/models/llmModelMeta';
import { writeLlamaGguf } from '../../helpers/ggufWriter';

const SHAPES = [
  { layers: 2, embeddingLength: 512, headCount: 8, headCountKv: 2, feedForwardLength: 1024 },
  { layers: 2, embeddingLength: 1024, headCount: 16, headCountKv: 4, feedForwardLength: 4096 },
];
const CONTEXTS = [
  { contextSize: 2048, flashAttention: false, batchSize: 512 },
  { contextSize: 8192, flashAttention: false, batchSize: 256 },
  { contextSize: 8192, flashAttention: true, batchSize: 512 },
  { contextSize: 16384, flashAttention: true, batchSize: 512 },
];

describe('LLM estimator vs llama.cpp buffer logs (node-llama-cpp, CPU)', { timeout: 240_000 }, () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vram-relay-llm-estimate-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test('KV cache exact, compute buffer within 5% (+0.5 MiB)', async () => {
    const { getLlama, LlamaLogLevel } = await import('node-llama-cpp');
    const lines: string[] = [];
    const llama = await getLlama({
      gpu: false,
      logLevel: LlamaLogLevel.debug,
      logger: (_level, message) => {
        if (/(KV|compute) buffer size =/.test(message)) lines.push(message);
      },
    });
    const logged = async (pattern: RegExp): Promise<number> => {
      const deadline = Date.now() + 5000;
      for (;;) {
        const line = lines.find((candidate) => pattern.test(candidate));
        if (line) return Number(/=\s*([\d.]+) MiB/.exec(line)![1]) * MiB;
        if (Date.now() > deadline) throw new Error(`llama.cpp logged no line matching ${pattern}`);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    };
    let compared = 0;
    try {
      for (const [index, shape] of SHAPES.entries()) {
        const path = join(dir, `model-${index}.gguf`);
        await writeLlamaGguf(path, { ...shape, contextLength: 16384, seed: index + 1 });
        const meta = await readLlmModelMeta(path);
        const model = await llama.loadModel({ modelPath: path, gpuLayers: 0 });
        try {
          for (const options of CONTEXTS) {
            lines.length = 0;
            const context = await model.createContext(options);
            try {
              const what = `${shape.embeddingLength} wide, ${JSON.stringify(options)}`;
              const estimate = estimateLlm(meta, { ...options, gpuLayers: meta.blockCount + 1, kvType: 'f16' });
              assert.equal(estimate.kvCache, await logged(/KV buffer size =/), `KV ${what}`);
              const compute = await logged(/sched_reserve:.*compute buffer size =/);
              assert.ok(Math.abs(estimate.compute - compute) <= compute * 0.05 + 0.5 * MiB, `compute ${what}: estimate ${estimate.compute / MiB} MiB, llama.cpp ${compute / MiB} MiB`);
              compared++;
            } finally {
              await context.dispose();
            }
          }
        } finally {
          await model.dispose();
        }
      }
    } finally {
      await llama.dispose();
    }
    assert.equal(compared, SHAPES.length * CONTEXTS.length);
  });
});
