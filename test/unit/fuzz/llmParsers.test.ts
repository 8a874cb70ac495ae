/**
 * Fuzzing of what the LLM workers read from llama.cpp: its log (LlamaLogParser) and llama-server's event stream
 * (SseDecoder). Properties: no exception, no NaN or infinite figure, the same result whatever the chunk boundaries,
 * and every input done in bounded time (the test timeout).
 */

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { LlamaLogParser, parseLlamaLogLine, toMeasuredBuffers } from '../../../sidecar/workers/llm/llamaLogParser';
import { SseDecoder } from '../../../sidecar/workers/llm/sseDecoder';
import { assertFiniteNumbers, cases, describeCase, fuzz, mutateTextTimes, randomChunks } from './fuzzKit';

/** A llama-server load and first request, in the wordings of current and older builds. */
const LLAMA_LOG = [
  'llama_model_load_from_file_impl: using device CUDA0 (NVIDIA GeForce RTX 4090) - 22994 MiB free',
  'llama_model_loader: loaded meta data with 30 key-value pairs and 291 tensors from model.gguf (version GGUF V3 (latest))',
  'load_tensors: offloading 32 repeating layers to GPU',
  'load_tensors: offloaded 33/33 layers to GPU',
  'load_tensors:        CUDA0 model buffer size =  3847.55 MiB',
  'load_tensors:   CPU_Mapped model buffer size =    70.31 MiB',
  'llm_load_tensors: VRAM used: 3847.55 MiB',
  'llama_kv_cache:      CUDA0 KV buffer size =  1024.00 MiB',
  'llama_kv_cache_init:  CUDA0 KV buffer size =  1024.00 MiB',
  'llama_context:  CUDA_Host  output buffer size =     0.49 MiB',
  'sched_reserve:      CUDA0 compute buffer size =   296.01 MiB',
  'sched_reserve:  CUDA_Host compute buffer size =    24.01 MiB',
  '\x1b[32m0.00.123.456 I\x1b[0m llama_context: n_ctx = 8192',
  'ggml_backend_cuda_buffer_type_alloc_buffer: allocating 4096.00 MiB on device 0: cudaMalloc failed: out of memory',
  'llama_model_load: error loading model: failed to open GGUF file',
  'srv  update_slots: all slots are idle',
  '',
].join('\n');

const LLAMA_WORDS = [' buffer size = ', ' model buffer size = ', ' KV buffer size =', ' MiB', ' GiB', ' KB', 'offloaded ', ' layers to GPU', 'using device ', ' MiB free', 'out of memory', 'error loading model', 'CUDA0 ', 'CPU '];

function feed(chunks: readonly string[]): { facts: ReturnType<LlamaLogParser['snapshot']>; lines: string[] } {
  const lines: string[] = [];
  const parser = new LlamaLogParser((_event, line) => lines.push(line.replace(/\r$/, '')));
  for (const chunk of chunks) parser.push(chunk);
  parser.flush();
  return { facts: parser.snapshot(), lines };
}

describe('fuzz: llama.cpp log parser', () => {
  it('turns mutated logs into the same finite facts whatever the chunking', { timeout: 60_000 }, async () => {
    let withFacts = 0;
    await fuzz('llamaLog', cases(1500), (random, index) => {
      const text = mutateTextTimes(random, LLAMA_LOG, LLAMA_WORDS);
      const where = describeCase('llamaLog', index, text);
      const whole = feed([text]);
      assertFiniteNumbers(whole.facts, where);
      assertFiniteNumbers(toMeasuredBuffers(whole.facts.buffers), where);
      for (const buffer of whole.facts.buffers) assert.ok(buffer.bytes >= 0, `${where}: negative buffer`);
      assert.deepEqual(feed(randomChunks(random, text, 80)), whole, `${where}: chunking changed the result`);
      if (whole.facts.buffers.length > 0) withFacts++;
    });
    assert.ok(withFacts > 0, 'the mutated logs still yield buffers');
  });

  it('stays linear on pathological lines', { timeout: 60_000 }, async () => {
    const lines = [
      'x'.repeat(300_000),
      `${'CUDA0'.repeat(40_000)} buffer size`,
      ' buffer size = '.repeat(20_000),
      `using device ${'('.repeat(100_000)}`,
      `CUDA0 model buffer size = ${'9'.repeat(400)} MiB`,
      'offloaded 1/1 layers to GPU'.repeat(10_000),
    ];
    for (const [index, line] of lines.entries()) {
      const where = describeCase('llamaLog-pathological', index, line);
      assertFiniteNumbers(parseLlamaLogLine(line), where);
      const parser = new LlamaLogParser();
      // One endless line in 4 KiB chunks: the parser keeps only its head.
      for (let at = 0; at < line.length; at += 4096) parser.push(line.slice(at, at + 4096));
      parser.flush();
      assertFiniteNumbers(parser.snapshot(), where);
      await new Promise((resolve) => setImmediate(resolve));
    }
  });
});

const SSE_STREAM = [
  ': ping',
  'data: {"choices":[{"delta":{"content":"Hel"}}]}',
  '',
  'event: message',
  'id: 7',
  'data: {"choices":[{"delta":{"content":"lo"}}]}',
  'data: {"second":"line"}',
  '',
  'retry: 1000',
  'data:{"content":"no space","stop":false}\r',
  '\r',
  'data: [DONE]',
  '',
  '',
].join('\n');

function decode(chunks: readonly string[]): string[] {
  const decoder = new SseDecoder();
  const events: string[] = [];
  for (const chunk of chunks) events.push(...decoder.push(chunk));
  events.push(...decoder.end());
  return events;
}

describe('fuzz: SSE decoder', () => {
  it('decodes mutated streams to the same events whatever the chunking', { timeout: 60_000 }, async () => {
    await fuzz('sse', cases(2000), (random, index) => {
      const text = mutateTextTimes(random, SSE_STREAM, ['data: ', '\n\n', '\r\n', ':', 'data:', '[DONE]']);
      const where = describeCase('sse', index, text);
      const whole = decode([text]);
      assert.ok(whole.every((event) => typeof event === 'string'), where);
      assert.deepEqual(decode(randomChunks(random, text, 40)), whole, `${where}: chunking changed the events`);
    });
  });

  it('reads a long line delivered a byte at a time in linear time', { timeout: 30_000 }, () => {
    const payload = 'y'.repeat(300_000);
    const decoder = new SseDecoder();
    const events: string[] = [];
    for (const char of `data: ${payload}\n\n`) events.push(...decoder.push(char));
    assert.deepEqual(events, [payload]);
  });
});
