// The llama-server adapter against a stand-in process that speaks llama-server's flags, endpoints and log lines:
// spawn, readiness from /health, buffers from the log, streaming, whole-tree stops, crashes and bad input.

import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, before, describe, test } from 'node:test';
import type { LlmJobSpec } from '../../../sidecar/core/types';
import { LlmCancelledError, LlmInputError, LlmOutOfMemoryError, LlmStateError, type LlmEvent } from '../../../sidecar/workers/llm/llmEvents';
import { LlamaServerLlm, type LlamaServerOptions } from '../../../sidecar/workers/llm/llamaServer';
import { writeLlamaGguf } from '../../helpers/ggufWriter';
import { isRunning } from '../../helpers/processes';

const STANDIN = resolve(__dirname, '../../standins/llama-server-standin.ts');

function completion(prompt: string, maxTokens: number): LlmJobSpec {
  return { kind: 'llm', task: 'completion', contextSize: 2048, prompt, maxTokens };
}

async function waitFor(condition: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const posixOnly = process.platform === 'win32' ? 'the stand-in binary is a shell script' : false;

describe('llama-server adapter (stand-in binary)', { timeout: 180_000, skip: posixOnly }, () => {
  let dir: string;
  let binDir: string;
  let model: string;
  const live: LlamaServerLlm[] = [];

  function server(options: Partial<LlamaServerOptions> & { events?: LlmEvent[] }): LlamaServerLlm {
    const { events, ...rest } = options;
    const llm = new LlamaServerLlm({
      serverPath: join(binDir, 'llama-server'),
      modelPath: model,
      contextSize: 2048,
      gpuLayers: 'all',
      stopGraceMs: 2_000,
      onEvent: events ? (event) => events.push(event) : undefined,
      ...rest,
    });
    live.push(llm);
    return llm;
  }

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vram-relay-llama-server-'));
    binDir = join(dir, 'bin');
    await import('node:fs/promises').then((fs) => fs.mkdir(binDir));
    const tsx = pathToFileURL(require.resolve('tsx')).href;
    await writeFile(join(binDir, 'llama-server'), `#!/bin/sh\nexec "${process.execPath}" --import "${tsx}" "${STANDIN}" "$@"\n`);
    await chmod(join(binDir, 'llama-server'), 0o755);
    model = join(dir, 'tiny.gguf');
    await writeLlamaGguf(model, { layers: 2 });
  });

  after(async () => {
    for (const llm of live) await llm.setState('stopped').catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  });

  test('found on PATH, started with the planned flags, ready after /health 503 -> 200, buffers read from its log', async () => {
    const events: LlmEvent[] = [];
    const argsFile = join(dir, 'args.json');
    const llm = server({ serverPath: '', events, gpuLayers: 99, env: { PATH: `${binDir}${delimiter}${process.env.PATH}`, LLAMA_STANDIN_ARGS_FILE: argsFile } });
    const { tookMs, measured } = await llm.setState('hot');
    assert.equal(llm.state(), 'hot');
    assert.equal(llm.processState(), 'ready');
    assert.ok(tookMs > 0);

    const args = JSON.parse(await readFile(argsFile, 'utf8')) as string[];
    const flag = (name: string) => args[args.indexOf(name) + 1];
    assert.equal(flag('-m'), model);
    assert.equal(flag('--host'), '127.0.0.1');
    assert.equal(`http://127.0.0.1:${flag('--port')}`, llm.baseUrl());
    assert.equal(flag('-c'), '2048');
    assert.equal(flag('-ngl'), '99');
    assert.equal(flag('--fit'), 'off', 'the plan, not llama-server, decides layers and context');

    assert.ok(events.some((e) => e.type === 'log' && /loading the model/.test(e.message)), 'saw /health 503 while loading');
    const byKey = (key: string, where: 'gpu' | 'cpu') => measured.find((m) => m.key === key && m.where === where)?.bytes ?? 0;
    assert.ok(byKey('llm.weights', 'gpu') > 0);
    assert.ok(byKey('llm.kv', 'gpu') > 0);
    assert.ok(byKey('llm.compute', 'gpu') > 0);
    assert.ok(byKey('llm.compute', 'cpu') > 0, 'CUDA_Host buffers count as RAM');
    assert.deepEqual(llm.logFacts()?.offload, { offloaded: 3, total: 3 });
    assert.ok(events.some((e) => e.type === 'transition' && e.from === 'stopped' && e.to === 'hot'));
    await llm.setState('stopped');
  });

  test('streams completions and chat; infill falls back to the prefix when the model has no FIM tokens', async () => {
    const events: LlmEvent[] = [];
    const llm = server({ events });
    await llm.setState('hot');
    let streamed = '';
    const text = await llm.run(completion('Hello', 12), (d) => (streamed += d), new AbortController().signal);
    assert.equal(text.split(' ').length, 12);
    assert.equal(streamed, text);

    streamed = '';
    const chat = await llm.run({ kind: 'llm', task: 'chat', contextSize: 2048, maxTokens: 5, messages: [{ role: 'user', content: 'hi' }] }, (d) => (streamed += d), new AbortController().signal);
    assert.equal(chat.split(' ').length, 5);
    assert.equal(streamed, chat);

    const infill = await llm.run({ kind: 'llm', task: 'infill', contextSize: 2048, prefix: 'a(', suffix: ')', maxTokens: 4 }, () => undefined, new AbortController().signal);
    assert.equal(infill.split(' ').length, 4);
    assert.ok(events.some((e) => e.type === 'log' && e.level === 'warn' && /refused \/infill/.test(e.message) && /HTTP 501/.test(e.message)));

    const controller = new AbortController();
    await assert.rejects(llm.run(completion('stop early', 200), () => controller.abort(), controller.signal), LlmCancelledError);
    assert.equal(llm.state(), 'hot', 'a cancelled request leaves the server running');
    await llm.setState('stopped');
  });

  test('killed while idle: restarted by itself, and the next request is served', async () => {
    const events: LlmEvent[] = [];
    const llm = server({ events });
    await llm.setState('hot');
    const pid = llm.serverPid()!;
    process.kill(pid, 'SIGKILL');
    await waitFor(() => events.some((e) => e.type === 'recovered'), 20_000);
    const crash = events.find((e) => e.type === 'crash');
    assert.ok(crash && crash.type === 'crash' && crash.during === 'idle' && crash.signal === 'SIGKILL');
    assert.notEqual(llm.serverPid(), pid);
    assert.equal((await llm.run(completion('again', 3), () => undefined, new AbortController().signal)).split(' ').length, 3);
    await llm.setState('stopped');
  });

  test('infill goes to /infill when the model supports it', async () => {
    const events: LlmEvent[] = [];
    const llm = server({ events, env: { LLAMA_STANDIN_FIM: '1' } });
    await llm.setState('hot');
    const infill = await llm.run({ kind: 'llm', task: 'infill', contextSize: 2048, prefix: 'a(', suffix: ')', maxTokens: 4 }, () => undefined, new AbortController().signal);
    assert.equal(infill.split(' ').length, 4);
    assert.equal(events.some((e) => e.type === 'log' && /refused/.test(e.message)), false);
    await llm.setState('stopped');
  });

  test('warm and cold stop the process and everything it started; a request then needs hot', async () => {
    const childPidFile = join(dir, 'child.pid');
    const llm = server({ env: { LLAMA_STANDIN_CHILD_PID_FILE: childPidFile } });
    await llm.setState('hot');
    const pid = llm.serverPid()!;
    const childPid = Number(await readFile(childPidFile, 'utf8'));
    assert.ok(isRunning(pid) && isRunning(childPid));

    const { measured } = await llm.setState('warm');
    assert.equal(llm.state(), 'stopped', 'llama-server has no warm state: it is stopped');
    assert.deepEqual(measured, []);
    await waitFor(() => !isRunning(pid) && !isRunning(childPid), 5_000);
    await assert.rejects(llm.run(completion('x', 2), () => undefined, new AbortController().signal), LlmStateError);
  });

  test('a server that ignores SIGTERM is killed after the grace period', async () => {
    const llm = server({ stopGraceMs: 300, env: { LLAMA_STANDIN_IGNORE_SIGTERM: '1' } });
    await llm.setState('hot');
    const pid = llm.serverPid()!;
    await llm.setState('stopped');
    assert.equal(llm.processState(), 'stopped');
    await waitFor(() => !isRunning(pid), 5_000);
  });

  test('a crash mid-request (exit 134): restarted, the request answers, streamed once', async () => {
    const events: LlmEvent[] = [];
    const marker = join(dir, 'crashed-once');
    const llm = server({ events, env: { LLAMA_STANDIN_CRASH_ONCE: marker } });
    await llm.setState('hot');
    const first = llm.serverPid();
    let streamed = '';
    const text = await llm.run(completion('story', 10), (d) => (streamed += d), new AbortController().signal);
    assert.ok(existsSync(marker), 'the stand-in did crash');
    assert.equal(text.split(' ').length, 10);
    assert.equal(streamed, text, 'the retry streams only the part not yet streamed');
    const crash = events.find((e) => e.type === 'crash');
    assert.ok(crash && crash.type === 'crash' && crash.exitCode === 134 && crash.during === 'request' && crash.willRetry);
    assert.ok(/out of memory/.test(crash.message), 'the log tail explains the crash');
    assert.ok(events.some((e) => e.type === 'recovered'));
    assert.notEqual(llm.serverPid(), first);
    assert.equal(llm.state(), 'hot');
    await llm.setState('stopped');
  });

  test('a server that goes silent mid-request is killed after the hang timeout and the request rerun', async () => {
    const events: LlmEvent[] = [];
    const llm = server({ events, hangTimeoutMs: 1_500, env: { LLAMA_STANDIN_HANG_ONCE: join(dir, 'hung-once') } });
    await llm.setState('hot');
    const text = await llm.run(completion('wait', 6), () => undefined, new AbortController().signal);
    assert.equal(text.split(' ').length, 6);
    const crash = events.find((e) => e.type === 'crash');
    assert.ok(crash && crash.type === 'crash' && crash.hung);
    await llm.setState('stopped');
  });

  test('clear errors: binary missing, not on PATH, not llama-server, model missing, not GGUF, out of memory', async () => {
    await assert.rejects(server({ serverPath: join(dir, 'nowhere', 'llama-server') }).setState('hot'), (error: Error) => {
      assert.ok(error instanceof LlmInputError);
      assert.match(error.message, /llama-server not found at .*nowhere.*set vramRelay\.llm\.serverPath or put it on PATH/);
      return true;
    });
    await assert.rejects(server({ serverPath: '', env: { PATH: join(dir, 'empty') } }).setState('hot'), /llama-server not found at llama-server \(looked on PATH\)/);

    const impostor = join(binDir, 'not-llama');
    await writeFile(impostor, '#!/bin/sh\necho "usage: not-llama [--verbose]"\n');
    await chmod(impostor, 0o755);
    await assert.rejects(server({ serverPath: impostor }).setState('hot'), /does not look like llama-server/);

    await assert.rejects(server({ modelPath: join(dir, 'missing.gguf') }).setState('hot'), (error: Error) => {
      assert.ok(error instanceof LlmInputError);
      assert.match(error.message, /missing\.gguf does not exist/);
      return true;
    });
    const notGguf = join(dir, 'readme.gguf');
    await writeFile(notGguf, 'plain text');
    await assert.rejects(server({ modelPath: notGguf }).setState('hot'), /is not a GGUF model/);

    const oom = server({ env: { LLAMA_STANDIN_LOAD_FAIL: 'oom' } });
    await assert.rejects(oom.setState('hot'), (error: Error) => {
      assert.ok(error instanceof LlmOutOfMemoryError);
      assert.match(error.message, /cudaMalloc failed: out of memory/);
      return true;
    });
    assert.equal(oom.state(), 'stopped');
    assert.equal(oom.serverPid(), undefined);
  });
});
