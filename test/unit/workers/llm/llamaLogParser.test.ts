// llama.cpp log lines in the shapes published in public bug reports (old and new prefixes, timestamps, colour
// codes), and what the parser makes of them.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { MiB } from '../../../../sidecar/core/types';
import { deviceWhere, LlamaLogParser, parseLlamaLogLine, toMeasuredBuffers } from '../../../../sidecar/workers/llm/llamaLogParser';

const mib = (value: number) => Math.round(value * MiB);

describe('parseLlamaLogLine', () => {
  test('model buffers, current prefix (load_tensors) and device names', () => {
    assert.deepEqual(parseLlamaLogLine('load_tensors:        CUDA0 model buffer size = 24277.75 MiB'), {
      type: 'buffer',
      kind: 'model',
      device: 'CUDA0',
      where: 'gpu',
      bytes: mib(24277.75),
    });
    assert.deepEqual(parseLlamaLogLine('load_tensors:   CPU_Mapped model buffer size =  1064.62 MiB'), {
      type: 'buffer',
      kind: 'model',
      device: 'CPU_Mapped',
      where: 'cpu',
      bytes: mib(1064.62),
    });
  });

  test('model buffers, old prefix without the word "model" (llm_load_tensors)', () => {
    assert.deepEqual(parseLlamaLogLine('llm_load_tensors:      CUDA1 buffer size = 13989.53 MiB'), {
      type: 'buffer',
      kind: 'model',
      device: 'CUDA1',
      where: 'gpu',
      bytes: mib(13989.53),
    });
    assert.deepEqual(parseLlamaLogLine('llm_load_tensors:        CPU buffer size =  1640.62 MiB'), {
      type: 'buffer',
      kind: 'model',
      device: 'CPU',
      where: 'cpu',
      bytes: mib(1640.62),
    });
  });

  test('KV cache buffers, old (llama_kv_cache_init) and new (llama_kv_cache) prefixes', () => {
    const old = parseLlamaLogLine('llama_kv_cache_init:      CUDA0 KV buffer size =  1536.00 MiB');
    assert.deepEqual(old, { type: 'buffer', kind: 'kv', device: 'CUDA0', where: 'gpu', bytes: 1536 * MiB });
    const current = parseLlamaLogLine('llama_kv_cache:      CUDA0 KV buffer size =   182.75 MiB');
    assert.deepEqual(current, { type: 'buffer', kind: 'kv', device: 'CUDA0', where: 'gpu', bytes: mib(182.75) });
  });

  test('compute and output buffers, including host (pinned RAM) ones', () => {
    assert.deepEqual(parseLlamaLogLine('llama_new_context_with_model:      CUDA0 compute buffer size =   672.01 MiB'), {
      type: 'buffer',
      kind: 'compute',
      device: 'CUDA0',
      where: 'gpu',
      bytes: mib(672.01),
    });
    assert.deepEqual(parseLlamaLogLine('sched_reserve:        CPU compute buffer size =     0.69 MiB'), {
      type: 'buffer',
      kind: 'compute',
      device: 'CPU',
      where: 'cpu',
      bytes: mib(0.69),
    });
    assert.deepEqual(parseLlamaLogLine('llama_new_context_with_model:  CUDA_Host  output buffer size =     1.95 MiB'), {
      type: 'buffer',
      kind: 'output',
      device: 'CUDA_Host',
      where: 'cpu',
      bytes: mib(1.95),
    });
  });

  test('lines with a timestamp and colour codes in front', () => {
    const line = '\u001b[34m1.14.610.021\u001b[0m \u001b[32mI \u001b[0mllama_kv_cache:      CUDA0 KV buffer size =   182.75 MiB';
    const event = parseLlamaLogLine(line);
    assert.equal(event?.type, 'buffer');
    assert.equal(event?.type === 'buffer' && event.bytes, mib(182.75));
    const stamped = parseLlamaLogLine('0.410 I llama_prepare_model_devices: using device CUDA0 (NVIDIA GeForce RTX 5090) (0000:01:00.0) - 30991 MiB free');
    assert.deepEqual(stamped, { type: 'device', device: 'CUDA0', name: 'NVIDIA GeForce RTX 5090', free: 30991 * MiB });
  });

  test('offloaded layers', () => {
    assert.deepEqual(parseLlamaLogLine('load_tensors: offloaded 33/33 layers to GPU'), { type: 'offload', offloaded: 33, total: 33 });
    assert.deepEqual(parseLlamaLogLine('llm_load_tensors: offloaded 1/35 layers to GPU'), { type: 'offload', offloaded: 1, total: 35 });
  });

  test('devices with their free memory, with or without a bus id, names with parentheses', () => {
    assert.deepEqual(parseLlamaLogLine('llama_model_load_from_file_impl: using device CUDA0 (NVIDIA GeForce RTX 4090) - 22994 MiB free'), {
      type: 'device',
      device: 'CUDA0',
      name: 'NVIDIA GeForce RTX 4090',
      free: 22994 * MiB,
    });
    assert.deepEqual(
      parseLlamaLogLine('llama_model_load_from_file_impl: using device CUDA0 (NVIDIA GeForce RTX 3060) (0000:01:00.0) - 11245 MiB free'),
      { type: 'device', device: 'CUDA0', name: 'NVIDIA GeForce RTX 3060', free: 11245 * MiB },
    );
    const cpu = parseLlamaLogLine('llama_prepare_model_devices: using device CPU (12th Gen Intel(R) Core(TM) i7-12700K) (unknown id) - 53243 MiB free');
    assert.deepEqual(cpu, { type: 'device', device: 'CPU', name: '12th Gen Intel(R) Core(TM) i7-12700K', free: 53243 * MiB });
  });

  test('the oldest builds: "VRAM used"', () => {
    assert.deepEqual(parseLlamaLogLine('llm_load_tensors: VRAM used: 124 MB'), { type: 'buffer', kind: 'model', device: 'GPU', where: 'gpu', bytes: 124 * MiB });
  });

  test('allocation failures and fatal load errors', () => {
    const oom = parseLlamaLogLine('ggml_backend_cuda_buffer_type_alloc_buffer: allocating 8900.01 MiB on device 0: cudaMalloc failed: out of memory');
    assert.deepEqual(oom && oom.type === 'error' && oom.oom, true);
    const gallocr = parseLlamaLogLine('ggml_gallocr_reserve_n: failed to allocate CUDA0 buffer of size 9332334592');
    assert.equal(gallocr?.type === 'error' && gallocr.oom, true, '"buffer of size" is a failure, not a buffer size');
    const fatal = parseLlamaLogLine("llama_model_load: error loading model: tensor 'blk.0.ffn_up.weight' data is not within the file bounds, model is corrupted or incomplete");
    assert.equal(fatal?.type === 'error' && fatal.oom, false);
    assert.equal(parseLlamaLogLine('gguf_init_from_file: failed to open GGUF file \'models/7B/ggml-model-f16.gguf\'')?.type, 'error');
  });

  test('lines that say nothing useful', () => {
    assert.equal(parseLlamaLogLine(''), null);
    assert.equal(parseLlamaLogLine('llama_new_context_with_model: n_ctx      = 4096'), null);
    assert.equal(parseLlamaLogLine('llama_kv_cache: size =    0.09 MiB (   256 cells,   3 layers,  1/1 seqs), K (f16):    0.05 MiB, V (f16):    0.05 MiB'), null);
    assert.equal(parseLlamaLogLine('load_tensors: offloading 80 repeating layers to GPU'), null);
  });
});

describe('deviceWhere', () => {
  test('host buffer types are RAM, the rest is device memory', () => {
    for (const device of ['CPU', 'CPU_Mapped', 'CPU_REPACK', 'CUDA_Host']) assert.equal(deviceWhere(device), 'cpu', device);
    for (const device of ['CUDA0', 'CUDA12', 'Vulkan0', 'ROCm0', 'Metal', 'MTL0']) assert.equal(deviceWhere(device), 'gpu', device);
  });
});

describe('LlamaLogParser', () => {
  // A whole load as a CUDA llama-server logs it (lines from a public report: 7B-class model on one 16 GB card).
  const LOG = [
    'llama_model_load_from_file_impl: using device CUDA0 (NVIDIA GeForce RTX 4060 Ti) (0000:01:00.0) - 15221 MiB free',
    'llama_model_loader: loaded meta data with 26 key-value pairs and 291 tensors from model.gguf (version GGUF V3 (latest))',
    'load_tensors: offloading 32 repeating layers to GPU',
    'load_tensors: offloaded 33/33 layers to GPU',
    'load_tensors:        CUDA0 model buffer size =   852.89 MiB',
    'load_tensors:   CPU_Mapped model buffer size =    30.08 MiB',
    'llama_context: n_ctx         = 4096',
    'llama_context:  CUDA_Host  output buffer size =     0.49 MiB',
    'llama_kv_cache:      CUDA0 KV buffer size =   512.00 MiB',
    'llama_context:      CUDA0 compute buffer size =   296.00 MiB',
    'llama_context:  CUDA_Host compute buffer size =    16.01 MiB',
  ].join('\n');

  test('accumulates facts from arbitrary chunks and sums them into calibration figures', () => {
    const seen: string[] = [];
    const parser = new LlamaLogParser((event) => seen.push(event.type));
    // Split mid-line on purpose: chunks from a pipe do not respect lines.
    for (let i = 0; i < LOG.length; i += 37) parser.push(LOG.slice(i, i + 37));
    parser.flush();
    const facts = parser.snapshot();
    assert.deepEqual(facts.offload, { offloaded: 33, total: 33 });
    assert.equal(facts.devices[0].free, 15221 * MiB);
    assert.equal(facts.buffers.length, 6);
    assert.equal(seen.filter((type) => type === 'buffer').length, 6);

    const measured = toMeasuredBuffers(facts.buffers);
    const get = (key: string, where: 'gpu' | 'cpu') => measured.find((m) => m.key === key && m.where === where)?.bytes;
    assert.equal(get('llm.weights', 'gpu'), mib(852.89));
    assert.equal(get('llm.weights', 'cpu'), mib(30.08));
    assert.equal(get('llm.kv', 'gpu'), 512 * MiB);
    assert.equal(get('llm.compute', 'gpu'), 296 * MiB);
    assert.equal(get('llm.compute', 'cpu'), mib(0.49) + mib(16.01), 'output and host compute buffers add up');
    // The device total the arbiter compares with nvidia-smi.
    const deviceTotal = measured.filter((m) => m.where === 'gpu').reduce((sum, m) => sum + m.bytes, 0);
    assert.equal(Math.round(deviceTotal / MiB), 1661);
  });

  test('multi-GPU buffers of the same kind add up; reset forgets a previous load', () => {
    const parser = new LlamaLogParser();
    parser.push('llm_load_tensors:      CUDA0 buffer size =  5434.38 MiB\nllm_load_tensors:      CUDA1 buffer size = 13989.53 MiB\n');
    assert.equal(toMeasuredBuffers(parser.snapshot().buffers)[0].bytes, mib(5434.38) + mib(13989.53));
    parser.reset();
    assert.deepEqual(parser.snapshot().buffers, []);
  });

  test('collects allocation failures with their line', () => {
    const parser = new LlamaLogParser();
    parser.push('llama_new_context_with_model: pipeline parallelism enabled (n_copies=4)\n');
    parser.push('ggml_backend_cuda_buffer_type_alloc_buffer: allocating 8900.01 MiB on device 0: cudaMalloc failed: out of memory\n');
    parser.push('llama_new_context_with_model: failed to allocate compute buffers\n');
    const errors = parser.snapshot().errors;
    assert.equal(errors.length, 2);
    assert.ok(errors.every((e) => e.oom));
    assert.match(errors[0].message, /8900\.01 MiB/);
  });
});
