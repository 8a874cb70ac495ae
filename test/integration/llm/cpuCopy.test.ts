// The CPU copy of the embedded LLM as the service builds it (createWorkers): a real second node-llama-cpp worker
// on the CPU build, started, asked and stopped the way the arbiter's CPU lane does it.

import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { GiB } from '../../../sidecar/core/types';
import type { SidecarSettings } from '../../../sidecar/protocol';
import { checkRoomForCpuCopy, createWorkers, type Workers } from '../../../sidecar/service/workers';
import { writeLlamaGguf } from '../../helpers/ggufWriter';

describe('CPU copy of the embedded LLM', { timeout: 180_000 }, () => {
  let dir: string;
  let model: string;
  const logs: string[] = [];
  const opened: Workers[] = [];

  const settings = (llm: Partial<SidecarSettings['llm']> = {}): SidecarSettings => ({
    device: 'simulated',
    simulatedCapacityMiB: 12 * 1024,
    safetyMarginMiB: 512,
    pollIntervalMs: 1000,
    llm: { modelPath: model, engine: 'embedded', serverPath: '', contextSize: 256, idleWarmSeconds: 0, idleColdSeconds: 0, ...llm },
    image: { binaryPath: join(dir, 'no-sd-here'), modelPath: '', keepResident: false },
    storageDir: join(dir, 'storage'),
    allowBinaries: true,
  });

  async function workers(llm: Partial<SidecarSettings['llm']> = {}, deviceKind: 'simulated' | 'cpu' | 'nvidia' = 'simulated'): Promise<Workers> {
    const made = await createWorkers(settings(llm), deviceKind, (level, message) => logs.push(`[${level}] ${message}`));
    opened.push(made);
    return made;
  }

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vram-relay-cpu-copy-'));
    model = join(dir, 'tiny-llama.gguf');
    await writeLlamaGguf(model, { seed: 5 });
  });

  after(async () => {
    for (const made of opened) await made.dispose();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test('starts on the CPU, answers, and stops, as a process of its own', async () => {
    const made = await workers();
    const cpu = made.llmCpu;
    assert.ok(cpu, 'a CPU copy beside the embedded LLM');
    assert.equal(cpu.state(), 'stopped', 'nothing runs before the first request');
    const before = made.ourPids();
    const started = await cpu.setState('hot');
    assert.equal(cpu.state(), 'hot');
    assert.ok(started.tookMs > 0);
    const copyPids = made.ourPids().filter((pid) => !before.includes(pid));
    assert.equal(copyPids.length, 1, 'its worker process counts as ours');
    assert.equal(made.llm?.state(), 'stopped', 'the GPU LLM was not started by it');
    const deltas: string[] = [];
    const text = await cpu.run({ kind: 'llm', task: 'completion', contextSize: 256, prompt: 'hello', maxTokens: 6, temperature: 0 }, (d) => deltas.push(d), new AbortController().signal);
    assert.equal(typeof text, 'string');
    assert.equal(deltas.join(''), text);
    await cpu.setState('stopped');
    assert.equal(cpu.state(), 'stopped');
    assert.deepEqual(made.ourPids().filter((pid) => copyPids.includes(pid)), [], 'its process is gone');
  });

  test('is not made when the setting is off, or when there is no GPU to wait for', async () => {
    assert.equal((await workers({ cpuWhileImageRuns: false })).llmCpu, null);
    assert.equal((await workers({}, 'cpu')).llmCpu, null);
    assert.ok((await workers({ cpuWhileImageRuns: true })).llmCpu);
  });

  test('refuses to start, saying why, when RAM has no room for the model and its context', async () => {
    const tight = async () => ({ total: 8 * GiB, available: 512 * 1024 ** 2 });
    await assert.rejects(checkRoomForCpuCopy(model, tight), /not enough free RAM for a CPU copy of the model: it needs 1\.0 GB, 512 MB is available/);
    await checkRoomForCpuCopy(model, async () => ({ total: 8 * GiB, available: 4 * GiB }));
    await assert.rejects(checkRoomForCpuCopy(join(dir, 'missing.gguf')), /ENOENT/);
  });
});
