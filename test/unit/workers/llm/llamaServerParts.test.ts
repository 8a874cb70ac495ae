// The pure parts of the LLM adapters: llama-server's --help check, its command line, its streamed pieces, the
// SSE decoder, request bodies and the state path.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { LlmJobSpec } from '../../../../sidecar/core/types';
import { LlmInputError, llmPath } from '../../../../sidecar/workers/llm/llmEvents';
import { chatBody, completionBody, deltaOf, infillBody, llamaServerArgs, parseLlamaServerHelp } from '../../../../sidecar/workers/llm/llamaServer';
import { SseDecoder } from '../../../../sidecar/workers/llm/sseDecoder';

const CURRENT_HELP = `
-c,    --ctx-size N                     size of the prompt context (default: 4096, 0 = loaded from model)
-ngl,  --gpu-layers, --n-gpu-layers N   max. number of layers to store in VRAM, either an exact number,
                                        'auto', or 'all' (default: auto)
-fit,  --fit [on|off]                   whether to adjust unset arguments to fit in device memory
-fitt, --fit-target MiB                 target margin per device for --fit (default: 1024)
--port PORT                             port to listen (default: 8080)
--sleep-idle-seconds SECONDS            number of seconds of idleness after which the server will sleep
`;

const OLDER_HELP = `
  -c N, --ctx-size N        size of the prompt context (default: 512)
  -ngl N, --n-gpu-layers N  number of layers to store in VRAM
  --host                    ip address to listen (default  (default: 127.0.0.1)
  --port PORT               port to listen (default  (default: 8080)
`;

describe('parseLlamaServerHelp', () => {
  test('current releases: --fit and --sleep-idle-seconds detected', () => {
    assert.deepEqual(parseLlamaServerHelp(CURRENT_HELP, '/opt/llama-server'), { path: '/opt/llama-server', fit: true, sleepIdle: true });
  });

  test('older releases: no --fit (and --fit-target alone does not count)', () => {
    assert.deepEqual(parseLlamaServerHelp(OLDER_HELP, 'llama-server'), { path: 'llama-server', fit: false, sleepIdle: false });
    const onlyTarget = `${OLDER_HELP}\n--fit-target MiB   margin\n`;
    assert.equal(parseLlamaServerHelp(onlyTarget, 'x').fit, false);
  });

  test('another program is refused with what to set', () => {
    assert.throws(
      () => parseLlamaServerHelp('usage: sd-cli [options]\n  -m, --model PATH\n  --steps N\n', '/usr/bin/sd-cli'),
      (error: Error) => error instanceof LlmInputError && /sd-cli does not look like llama-server/.test(error.message) && /vramRelay\.llm\.serverPath/.test(error.message),
    );
  });
});

describe('llamaServerArgs', () => {
  const options = { modelPath: '/m/model.gguf', contextSize: 8192 };
  test('always -m, --host 127.0.0.1, --port, -c and -ngl; --fit off where it exists', () => {
    const args = llamaServerArgs({ ...options, gpuLayers: 20 }, 40123, { path: 'x', fit: true, sleepIdle: false });
    assert.deepEqual(args, ['-m', '/m/model.gguf', '--host', '127.0.0.1', '--port', '40123', '-c', '8192', '-ngl', '20', '--fit', 'off']);
  });

  test('all layers by default; no --fit for builds without it; user arguments last', () => {
    const args = llamaServerArgs({ ...options, extraArgs: ['-fa', 'on'] }, 9000, { path: 'x', fit: false, sleepIdle: false });
    assert.deepEqual(args.slice(-4), ['-ngl', 'all', '-fa', 'on']);
    assert.equal(args.includes('--fit'), false);
  });

  test('fit: true leaves llama-server its own fitting', () => {
    const args = llamaServerArgs({ ...options, fit: true }, 9000, { path: 'x', fit: true, sleepIdle: false });
    assert.equal(args.includes('--fit'), false);
  });
});

describe('deltaOf', () => {
  test('/completion pieces and their stop flag', () => {
    assert.deepEqual(deltaOf('{"index":0,"content":"Hel","stop":false}'), { text: 'Hel', stop: false });
    assert.deepEqual(deltaOf('{"index":0,"content":"","stop":true,"stop_type":"limit"}'), { text: '', stop: true });
  });

  test('OpenAI-style chat chunks (the stream ends with [DONE], handled by the caller)', () => {
    assert.deepEqual(deltaOf('{"choices":[{"finish_reason":null,"index":0,"delta":{"content":"lo"}}],"object":"chat.completion.chunk"}'), { text: 'lo', stop: false });
    assert.deepEqual(deltaOf('{"choices":[{"finish_reason":"stop","index":0,"delta":{}}]}'), { text: '', stop: false });
  });

  test('an error inside the stream, and garbage', () => {
    assert.deepEqual(deltaOf('{"error":{"code":500,"message":"context shift is disabled"}}'), { text: '', stop: true, error: 'context shift is disabled' });
    assert.deepEqual(deltaOf('not json'), { text: '', stop: false });
  });
});

describe('SseDecoder', () => {
  test('events split across chunks, CRLF, comments and multi-line data', () => {
    const decoder = new SseDecoder();
    assert.deepEqual(decoder.push('data: {"a"'), []);
    assert.deepEqual(decoder.push(':1}\n\ndata: [DO'), ['{"a":1}']);
    assert.deepEqual(decoder.push('NE]\r\n\r\n: keep-alive\n\nevent: x\ndata: one\ndata: two\n\n'), ['[DONE]', 'one\ntwo']);
  });

  test('a last event without its blank line comes out at the end', () => {
    const decoder = new SseDecoder();
    assert.deepEqual(decoder.push('data: tail'), []);
    assert.deepEqual(decoder.end(), ['tail']);
  });
});

describe('request bodies', () => {
  const base: LlmJobSpec = { kind: 'llm', task: 'completion', contextSize: 2048 };

  test('completion and infill carry the seed, the token limit and the temperature', () => {
    assert.deepEqual(completionBody({ ...base, prompt: 'p', maxTokens: 5, temperature: 0.2 }, 7), {
      prompt: 'p',
      n_predict: 5,
      stream: true,
      cache_prompt: true,
      seed: 7,
      temperature: 0.2,
    });
    assert.deepEqual(infillBody({ ...base, task: 'infill', prefix: 'a', suffix: 'b' }, 1), {
      input_prefix: 'a',
      input_suffix: 'b',
      n_predict: 256,
      stream: true,
      cache_prompt: true,
      seed: 1,
    });
  });

  test('chat: the prompt becomes the last user message; enhancePrompt gets a system prompt', () => {
    const body = chatBody({ ...base, task: 'enhancePrompt', prompt: 'a cat' }, 3) as { messages: { role: string; content: string }[] };
    assert.deepEqual(body.messages.map((m) => m.role), ['system', 'user']);
    assert.equal(body.messages[1].content, 'a cat');
    assert.throws(() => chatBody({ ...base, task: 'chat' }, 1), LlmInputError);
  });
});

describe('llmPath', () => {
  test('up one step at a time, down one step at a time, to stopped at once', () => {
    assert.deepEqual(llmPath('stopped', 'hot'), ['cold', 'warm', 'hot']);
    assert.deepEqual(llmPath('hot', 'cold'), ['warm', 'cold']);
    assert.deepEqual(llmPath('hot', 'stopped'), ['stopped']);
    assert.deepEqual(llmPath('warm', 'warm'), []);
    assert.deepEqual(llmPath('cold', 'warm'), ['warm']);
  });
});
