// The embedded LLM worker for real: node-llama-cpp on the CPU with a small random-weight model written by the
// test, driven through EmbeddedLlm exactly as the sidecar drives it.

import assert from 'node:assert/strict';
import { renameSync } from 'node:fs';
import { mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { LlmJobSpec } from '../../../sidecar/core/types';
import { EmbeddedLlm, sourceLlmWorkerEntry } from '../../../sidecar/workers/llm/embeddedLlm';
import { LlmCancelledError, LlmInputError, LlmStateError, LlmWorkerCrashedError, type LlmEvent } from '../../../sidecar/workers/llm/llmEvents';
import { writeLlamaGguf } from '../../helpers/ggufWriter';

const CONTEXT = 512;

function completion(prompt: string, maxTokens: number, temperature?: number): LlmJobSpec {
  return { kind: 'llm', task: 'completion', contextSize: CONTEXT, prompt, maxTokens, ...(temperature !== undefined ? { temperature } : {}) };
}

async function waitFor(condition: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

function newSignal(): AbortSignal {
  return new AbortController().signal;
}

describe('embedded LLM worker (node-llama-cpp, CPU)', { timeout: 240_000 }, () => {
  let dir: string;
  let fimModel: string;
  let plainModel: string;
  let llm: EmbeddedLlm;
  const events: LlmEvent[] = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vram-relay-llm-'));
    fimModel = join(dir, 'tiny-fim.gguf');
    plainModel = join(dir, 'tiny.gguf');
    await writeLlamaGguf(fimModel, { fimTokens: true, seed: 3 });
    await writeLlamaGguf(plainModel, { seed: 4 });
    llm = new EmbeddedLlm({
      modelPath: fimModel,
      contextSize: CONTEXT,
      gpu: false,
      gpuLayers: 0,
      threads: 1,
      worker: sourceLlmWorkerEntry(),
      // A SIGABRT below may leave a core dump where core dumps are enabled: keep it in the temp folder.
      cwd: dir,
      hangTimeoutMs: 3_000,
      onEvent: (event) => events.push(event),
    });
  });

  after(async () => {
    const pid = llm?.workerPid();
    await llm?.setState('stopped').catch(() => undefined);
    if (pid) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // Already gone, as it should be.
      }
    }
    await rm(dir, { recursive: true, force: true });
  });

  test('goes stopped -> hot, timing every step and reporting its buffers', async () => {
    const { tookMs, measured } = await llm.setState('hot');
    assert.equal(llm.state(), 'hot');
    assert.equal(llm.processState(), 'ready');
    assert.ok(Number.isFinite(tookMs) && tookMs > 0);
    const steps = events.filter((e) => e.type === 'transition').map((e) => (e.type === 'transition' ? `${e.from}->${e.to}` : ''));
    assert.deepEqual(steps, ['stopped->cold', 'cold->warm', 'warm->hot']);
    const keys = measured.map((m) => m.key).sort();
    assert.deepEqual(keys, ['llm.compute', 'llm.kv', 'llm.weights']);
    assert.ok(measured.every((m) => m.where === 'cpu' && m.bytes > 0), 'a CPU build keeps every buffer in RAM');
    const memory = llm.memory();
    assert.ok(memory && memory.modelBytes > 100_000, 'model.size is reported');
    assert.equal(llm.backend(), false, 'no GPU here: CPU backend');
    assert.equal(llm.model()?.infill, true);
  });

  test('generates text and streams every piece of it', async () => {
    let streamed = '';
    let chunks = 0;
    const text = await llm.run(completion('The quick brown fox', 24), (delta) => {
      streamed += delta;
      chunks++;
    }, newSignal());
    assert.ok(text.length > 0, 'tokens came back');
    assert.equal(streamed, text);
    assert.ok(chunks > 1, 'text arrives in several pieces, not at the end');
  });

  test('fills in the middle with a model that has FIM tokens', async () => {
    const text = await llm.run({ kind: 'llm', task: 'infill', contextSize: CONTEXT, prefix: 'function add(a, b) {\n  return ', suffix: ';\n}\n', maxTokens: 12 }, () => undefined, newSignal());
    assert.ok(text.length > 0);
    assert.equal(events.some((e) => e.type === 'log' && /fill-in-the-middle/.test(e.message)), false, 'no fallback needed');
  });

  test('keeps its sequence between requests: the part of a prompt that matches the one before is not evaluated again', async () => {
    const prefix = 'function add(a, b) {\n  return a + b;\n}\n'.repeat(6);
    const infill = (before: string) =>
      llm.run({ kind: 'llm', task: 'infill', contextSize: CONTEXT, prefix: before, suffix: '\n}\n', maxTokens: 4 }, () => undefined, newSignal());
    const lastAnswer = () => {
      const answered = events.filter((e): e is Extract<LlmEvent, { type: 'answered' }> => e.type === 'answered');
      return answered[answered.length - 1];
    };

    await infill(prefix);
    const first = lastAnswer();
    assert.ok(first.promptTokens > 100, `the prompt is counted (${first.promptTokens} tokens)`);
    // The user typed a word at the cursor: only the end of the prefix, the suffix and the FIM tokens are new.
    await infill(`${prefix}const`);
    const typed = lastAnswer();
    assert.ok(typed.promptTokens > first.promptTokens);
    assert.ok(typed.reusedTokens > 0.8 * typed.promptTokens, `reused ${typed.reusedTokens} of ${typed.promptTokens}`);
    assert.ok(typed.reusedTokens < typed.promptTokens, 'the tokens after the edit are evaluated');
    // Another place in another file: nothing in common beyond the first token.
    await infill(`// another file\n${prefix}`);
    assert.ok(lastAnswer().reusedTokens <= 2, `reused ${lastAnswer().reusedTokens}`);
    // Dropping the context drops what it held.
    await llm.setState('warm');
    await llm.setState('hot');
    await infill(`// another file\n${prefix}`);
    assert.equal(lastAnswer().reusedTokens, 0);
  });

  test('chats with a system prompt and earlier turns', async () => {
    const text = await llm.run(
      {
        kind: 'llm',
        task: 'chat',
        contextSize: CONTEXT,
        maxTokens: 12,
        messages: [
          { role: 'system', content: 'Answer briefly.' },
          { role: 'user', content: 'Hello' },
          { role: 'assistant', content: 'Hi.' },
          { role: 'user', content: 'How are you?' },
        ],
      },
      () => undefined,
      newSignal(),
    );
    assert.ok(text.length > 0);
  });

  test('hot -> warm -> cold -> hot, each step timed; a request needs hot', async () => {
    const from = events.length;
    const warm = await llm.setState('warm');
    assert.equal(llm.state(), 'warm');
    assert.deepEqual(warm.measured.map((m) => m.key), ['llm.weights'], 'warm keeps the weights only');
    await assert.rejects(llm.run(completion('x', 4), () => undefined, newSignal()), LlmStateError);

    const cold = await llm.setState('cold');
    assert.equal(llm.state(), 'cold');
    assert.deepEqual(cold.measured, [], 'cold holds nothing');
    assert.ok(llm.workerPid(), 'cold keeps the process');

    // Switch to the model without FIM tokens on the way back up.
    llm.updateOptions({ modelPath: plainModel });
    const hot = await llm.setState('hot');
    assert.equal(llm.state(), 'hot');
    assert.ok(hot.tookMs > 0);
    const transitions = events.slice(from).filter((e) => e.type === 'transition');
    assert.deepEqual(
      transitions.map((e) => (e.type === 'transition' ? `${e.from}->${e.to}` : '')),
      ['hot->warm', 'warm->cold', 'cold->warm', 'warm->hot'],
    );
    for (const e of transitions) if (e.type === 'transition') assert.ok(Number.isFinite(e.tookMs) && e.tookMs >= 0);
  });

  test('infill on a model without FIM tokens falls back to completing the prefix, and says so', async () => {
    assert.equal(llm.model()?.infill, false);
    const text = await llm.run({ kind: 'llm', task: 'infill', contextSize: CONTEXT, prefix: 'let x = ', suffix: ';', maxTokens: 8 }, () => undefined, newSignal());
    assert.ok(text.length > 0);
    assert.ok(events.some((e) => e.type === 'log' && e.level === 'warn' && /no fill-in-the-middle tokens/.test(e.message)));
  });

  test('kill -9 mid-generation: the worker restarts hot and the request still answers, streamed once', async () => {
    const from = events.length;
    let streamed = '';
    let killedPid: number | undefined;
    const text = await llm.run(completion('Once upon a time', 300, 0.8), (delta) => {
      streamed += delta;
      if (killedPid === undefined) {
        killedPid = llm.workerPid();
        process.kill(killedPid!, 'SIGKILL');
      }
    }, newSignal());
    assert.ok(killedPid);
    assert.notEqual(llm.workerPid(), killedPid, 'a new worker serves');
    assert.equal(llm.state(), 'hot', 'restored to the state before the crash');
    assert.ok(text.length > 0);
    assert.equal(streamed, text, 'the retry streams only what was not streamed before');
    const later = events.slice(from);
    const crash = later.find((e) => e.type === 'crash');
    assert.ok(crash && crash.type === 'crash');
    assert.equal(crash.during, 'request');
    assert.equal(crash.signal, 'SIGKILL');
    assert.equal(crash.willRetry, true);
    assert.ok(later.some((e) => e.type === 'recovered' && e.state === 'hot'));
  });

  test('a worker that stops answering is killed after the hang timeout and the request rerun', async () => {
    const from = events.length;
    let frozen: number | undefined;
    const text = await llm.run(completion('A hung worker', 200, 0.5), () => {
      if (frozen === undefined) {
        frozen = llm.workerPid();
        process.kill(frozen!, 'SIGSTOP');
      }
    }, newSignal());
    assert.ok(text.length > 0);
    const crash = events.slice(from).find((e) => e.type === 'crash');
    assert.ok(crash && crash.type === 'crash' && crash.hung, 'reported as hung');
    assert.equal(llm.state(), 'hot');
  });

  test('an abort (SIGABRT) while idle: restarted and brought back to hot without being asked', async () => {
    const from = events.length;
    const crashesBefore = llm.crashCount();
    const pid = llm.workerPid()!;
    process.kill(pid, 'SIGABRT');
    await waitFor(() => events.slice(from).some((e) => e.type === 'crash'), 10_000);
    // The restart is queued; the next request waits for it.
    const text = await llm.run(completion('after the abort', 8), () => undefined, newSignal());
    assert.ok(text.length > 0);
    const later = events.slice(from);
    const crash = later.find((e) => e.type === 'crash');
    assert.ok(crash && crash.type === 'crash' && crash.during === 'idle' && crash.signal === 'SIGABRT');
    assert.ok(later.some((e) => e.type === 'recovered' && e.state === 'hot'));
    assert.notEqual(llm.workerPid(), pid);
    assert.equal(llm.crashCount(), crashesBefore + 1, 'counted, so the arbiter knows the context is gone');
  });

  test('a cancelled request rejects as an abort and leaves the worker hot', async () => {
    const controller = new AbortController();
    await assert.rejects(
      llm.run(completion('cancel me', 400), () => controller.abort(), controller.signal),
      LlmCancelledError,
    );
    assert.equal(llm.state(), 'hot');
    assert.ok((await llm.run(completion('still works', 4), () => undefined, newSignal())).length > 0);
  });

  test('a crash that cannot be recovered from leaves the LLM stopped and says why', async () => {
    const from = events.length;
    const hidden = `${plainModel}.away`;
    let killed = false;
    try {
      await assert.rejects(
        llm.run(completion('doomed', 300), () => {
          if (killed) return;
          killed = true;
          // The model disappears, then the worker dies: the restart cannot load it again.
          renameSync(plainModel, hidden);
          process.kill(llm.workerPid()!, 'SIGKILL');
        }, newSignal()),
        LlmWorkerCrashedError,
      );
    } finally {
      await rename(hidden, plainModel).catch(() => undefined);
    }
    assert.equal(llm.state(), 'stopped');
    assert.equal(llm.workerPid(), undefined, 'no process left behind');
    const gaveUp = events.slice(from).find((e) => e.type === 'gaveUp');
    assert.ok(gaveUp && gaveUp.type === 'gaveUp' && /does not exist/.test(gaveUp.message));
  });

  test('a missing model, a file that is not GGUF and a truncated GGUF get clear errors', async () => {
    llm.updateOptions({ modelPath: join(dir, 'missing.gguf') });
    await assert.rejects(llm.setState('warm'), (error: Error) => {
      assert.ok(error instanceof LlmInputError);
      assert.match(error.message, /missing\.gguf does not exist/);
      assert.match(error.message, /vramRelay\.llm\.modelPath/);
      return true;
    });
    assert.equal(llm.state(), 'cold', 'the worker lives on, without a model');

    const notGguf = join(dir, 'notes.gguf');
    await writeFile(notGguf, 'these are not weights\n');
    llm.updateOptions({ modelPath: notGguf });
    await assert.rejects(llm.setState('warm'), (error: Error) => {
      assert.ok(error instanceof LlmInputError);
      assert.match(error.message, /is not a GGUF model/);
      return true;
    });

    const truncated = join(dir, 'truncated.gguf');
    await writeFile(truncated, (await readFile(plainModel)).subarray(0, 200_000));
    llm.updateOptions({ modelPath: truncated });
    await assert.rejects(llm.setState('warm'), (error: Error) => {
      assert.ok(error instanceof LlmInputError);
      assert.match(error.message, /could not load .*truncated\.gguf/);
      assert.match(error.message, /corrupted or incomplete/, 'llama.cpp\'s own reason is kept');
      return true;
    });

    llm.updateOptions({ modelPath: plainModel });
    await llm.setState('hot');
    assert.equal(llm.state(), 'hot');
    const { tookMs } = await llm.setState('stopped');
    assert.ok(tookMs >= 0);
    assert.equal(llm.state(), 'stopped');
    assert.equal(llm.processState(), 'stopped');
  });
});

describe('embedded LLM worker start-up failures', { timeout: 60_000 }, () => {
  test('a worker entry that cannot run leaves the LLM stopped with the reason', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'vram-relay-llm-bad-'));
    try {
      const entry = join(dir, 'broken-worker.mjs');
      await writeFile(entry, 'console.error("cannot find node-llama-cpp"); process.exit(3);\n');
      const llm = new EmbeddedLlm({ modelPath: join(dir, 'm.gguf'), contextSize: 64, gpu: false, worker: { modulePath: entry, execArgv: [] } });
      await assert.rejects(llm.setState('hot'), (error: Error) => {
        assert.ok(error instanceof LlmWorkerCrashedError);
        assert.match(error.message, /exited with code 3/);
        assert.match(error.message, /cannot find node-llama-cpp/);
        return true;
      });
      assert.equal(llm.state(), 'stopped');
      assert.equal(llm.processState(), 'stopped');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
