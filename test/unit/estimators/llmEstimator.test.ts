import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CalibrationStore, type CalibrationRecord } from '../../../sidecar/core/calibration';
import { LLM_7B_Q4KM_WITH_KV, PCIE4_BYTES_PER_MS, LLM_RELOAD_OVERHEAD_MS } from '../../../sidecar/core/estimators/figures';
import {
  estimateLlm,
  gpuBlocks,
  kvCacheBytes,
  layersThatFit,
  llmComputeBytes,
  llmDeviceBytes,
  llmWeightBytes,
  offloadableLayers,
} from '../../../sidecar/core/estimators/llmEstimator';
import { GiB } from '../../../sidecar/core/types';
import { sevenBQ4KM } from './publishedModels';

const mistral = sevenBQ4KM(8);
const llama2 = sevenBQ4KM(32);

describe('the 7B fixture', () => {
  it('has the size of a published 7B Q4_K_M file (Mistral 7B Q4_K_M: 4.37 GB)', () => {
    assert.ok(Math.abs(mistral.tensorBytes - 4.37e9) < 0.02 * 4.37e9, `${mistral.tensorBytes}`);
    assert.equal(mistral.headDim, 128);
    assert.equal(offloadableLayers(mistral), 33);
  });
});

describe('KV cache (memory-facts.md:41: 2 * n_layer * n_ctx * n_head_kv * head_dim * bytes)', () => {
  it('is exact for a 7B with 8 KV heads at 8k context', () => {
    assert.equal(kvCacheBytes(mistral, 8192, 'f16'), 2 * 32 * 8192 * 8 * 128 * 2);
    assert.equal(kvCacheBytes(mistral, 8192, 'f16'), 1 * GiB);
  });

  it('is exact for a 7B with 32 KV heads at 8k context', () => {
    assert.equal(kvCacheBytes(llama2, 8192, 'f16'), 2 * 32 * 8192 * 32 * 128 * 2);
    assert.equal(kvCacheBytes(llama2, 8192, 'f16'), 4 * GiB);
  });

  it('uses the q8_0 and q4_0 block sizes (34 and 18 bytes per 32)', () => {
    assert.equal(kvCacheBytes(mistral, 8192, 'q8_0'), (GiB / 2) * (34 / 32));
    assert.equal(kvCacheBytes(mistral, 8192, 'q4_0'), (GiB / 2) * (18 / 32));
  });

  it('is linear in context and counts only the blocks on the GPU', () => {
    assert.equal(kvCacheBytes(mistral, 4096, 'f16') * 2, kvCacheBytes(mistral, 8192, 'f16'));
    assert.equal(kvCacheBytes(mistral, 8192, 'f16', 16), GiB / 2);
    assert.equal(kvCacheBytes(mistral, 8192, 'f16', 0), 0);
  });
});

describe('weights on the GPU', () => {
  it('follow llama.cpp -ngl: last blocks first, output layer only when every layer is offloaded', () => {
    const blocksOnly = mistral.layerBytes.reduce((sum, bytes) => sum + bytes, 0);
    assert.equal(llmWeightBytes(mistral, 33), blocksOnly + mistral.outputBytes);
    assert.equal(llmWeightBytes(mistral, 32), blocksOnly);
    assert.equal(llmWeightBytes(mistral, 0), 0);
    assert.equal(llmWeightBytes(mistral, 1), mistral.layerBytes[31]);
    assert.equal(llmWeightBytes(mistral, 33), mistral.tensorBytes - mistral.tokenEmbeddingBytes - mistral.otherBytes);
    assert.equal(gpuBlocks(mistral, 99), 32);
    for (let layers = 1; layers <= 33; layers++) assert.ok(llmWeightBytes(mistral, layers) > llmWeightBytes(mistral, layers - 1));
  });
});

describe('compute buffer', () => {
  it('drops the attention scores with flash attention', () => {
    const plain = llmComputeBytes(mistral, 8192);
    const flash = llmComputeBytes(mistral, 8192, { flashAttention: true });
    assert.ok(flash < plain);
    // Without flash attention the scores dominate: ubatch * n_ctx * n_head * 4 bytes.
    assert.ok(plain >= 512 * 8192 * 32 * 4);
    assert.equal(llmComputeBytes(mistral, 16384, { flashAttention: true }) - flash, 512 * 8192 * 2, 'flash attention: only the f16 mask grows');
    assert.ok(llmComputeBytes(mistral, 16384) > plain, 'scores grow with context');
  });

  it('shrinks with the micro-batch and is never below the logits of one micro-batch', () => {
    assert.ok(llmComputeBytes(mistral, 8192, { batchSize: 128 }) < llmComputeBytes(mistral, 8192));
    assert.ok(llmComputeBytes(mistral, 8192, { flashAttention: true }) >= 512 * 32000 * 4);
  });
});

describe('estimateLlm', () => {
  it('puts a 7B Q4_K_M with 8k context within 4-6 GB (memory-facts.md:38)', () => {
    for (const flashAttention of [false, true]) {
      const costs = estimateLlm(mistral, { gpuLayers: 33, contextSize: 8192, kvType: 'f16', flashAttention });
      const total = llmDeviceBytes(costs);
      assert.ok(total >= LLM_7B_Q4KM_WITH_KV.min && total <= LLM_7B_Q4KM_WITH_KV.max, `flash ${flashAttention}: ${total}`);
    }
  });

  it('reports layers, context and the three transition times', () => {
    const costs = estimateLlm(mistral, { gpuLayers: 40, contextSize: 8192, kvType: 'f16' });
    assert.equal(costs.layerCount, 33);
    assert.equal(costs.gpuLayers, 33, 'clamped to the offloadable layers');
    assert.equal(costs.modelPath, mistral.path);
    assert.equal(costs.reloadWeightsMs, Math.round(LLM_RELOAD_OVERHEAD_MS + costs.weights / PCIE4_BYTES_PER_MS));
    assert.ok(costs.recreateContextMs > 0 && costs.recreateContextMs < costs.startProcessMs + costs.reloadWeightsMs);
    const pcie5 = estimateLlm(mistral, { gpuLayers: 33, contextSize: 8192, kvType: 'f16', hostToDeviceBytesPerMs: 50e6 });
    assert.ok(pcie5.reloadWeightsMs < costs.reloadWeightsMs);
  });

  it('counts nothing on the GPU with 0 layers', () => {
    const costs = estimateLlm(mistral, { gpuLayers: 0, contextSize: 8192, kvType: 'f16' });
    assert.equal(llmDeviceBytes(costs), 0);
  });
});

describe('calibration beats the prior', () => {
  const record = (fields: Partial<CalibrationRecord> & Pick<CalibrationRecord, 'key' | 'setting' | 'value'>): CalibrationRecord => ({
    model: mistral.path,
    backend: 'cuda',
    unit: 'bytes',
    source: 'test log line',
    recordedAt: 1,
    ...fields,
  });

  it('uses a measured value for the same setting, and scales a KV measurement to another context', () => {
    const store = new CalibrationStore([
      record({ key: 'llm.weights', setting: 'ngl=33', value: 4.2e9 }),
      record({ key: 'llm.kv', setting: 'ctx=4096,kv=f16,ngl=33', value: 600e6, scale: 4096 * 32 * 2 }),
    ]);
    const costs = estimateLlm(mistral, { gpuLayers: 33, contextSize: 8192, kvType: 'f16', backend: 'cuda' }, store);
    assert.equal(costs.weights, 4.2e9);
    assert.equal(costs.kvCache, 1.2e9);
    const otherBackend = estimateLlm(mistral, { gpuLayers: 33, contextSize: 8192, kvType: 'f16', backend: 'vulkan' }, store);
    assert.equal(otherBackend.kvCache, GiB, 'records of another backend do not apply');
  });

  it('corrects the compute prior by the measured/estimated ratio of another setting', () => {
    const prior = llmComputeBytes(mistral, 4096);
    const store = new CalibrationStore([record({ key: 'llm.compute', setting: 'ctx=4096,ub=512,fa=0', value: prior * 1.1, estimate: prior })]);
    const costs = estimateLlm(mistral, { gpuLayers: 33, contextSize: 8192, kvType: 'f16', backend: 'cuda' }, store);
    assert.equal(costs.compute, Math.round(llmComputeBytes(mistral, 8192) * 1.1));
  });

  it('uses measured transition times', () => {
    const store = new CalibrationStore([record({ key: 'time.llmStart', setting: '', value: 2222, unit: 'ms' })]);
    assert.equal(estimateLlm(mistral, { gpuLayers: 33, contextSize: 2048, kvType: 'f16', backend: 'cuda' }, store).startProcessMs, 2222);
  });
});

describe('layersThatFit', () => {
  const full = (contextSize: number) => llmDeviceBytes(estimateLlm(mistral, { gpuLayers: 33, contextSize, kvType: 'f16' }));

  it('gives every layer when everything fits, and fewer as memory shrinks', () => {
    assert.equal(layersThatFit(mistral, full(8192), 8192, 'f16'), 33);
    assert.equal(layersThatFit(mistral, full(8192) - 1, 8192, 'f16'), 32);
    assert.equal(layersThatFit(mistral, 100e6, 8192, 'f16'), 0);
    let previous = 0;
    for (let free = 0; free <= 7e9; free += 250e6) {
      const layers = layersThatFit(mistral, free, 8192, 'f16');
      assert.ok(layers >= previous, `monotonic at ${free}`);
      const costs = estimateLlm(mistral, { gpuLayers: layers, contextSize: 8192, kvType: 'f16' });
      if (layers > 0) assert.ok(llmDeviceBytes(costs) <= free);
      previous = layers;
    }
  });

  it('fits more layers with a smaller KV cache type', () => {
    const free = 4.5e9;
    assert.ok(layersThatFit(mistral, free, 8192, 'q4_0') > layersThatFit(mistral, free, 8192, 'f16'));
  });
});
