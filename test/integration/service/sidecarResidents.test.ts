/**
 * The residents through the whole service: the real node-llama-cpp worker (on the CPU, with a random-weight model
 * whose context makes it large by the estimate) yielding to an image job and coming back, and a resident sd-server
 * (the stand-in's server mode) kept between jobs and stopped when the LLM needs the room.
 */
import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { FULL_SD_CAPABILITIES, GiB, MiB, type LlmCosts, type LlmJobSpec } from '../../../sidecar/core/types';
import { ModelCosts } from '../../../sidecar/service/costs';
import { findSdBinaries } from '../../../sidecar/service/sdBinaries';
import { writeLlamaGguf } from '../../helpers/ggufWriter';
import { SDCPP_STANDIN_BIN } from '../../standins/sdcppStandin';
import { startRig, writeSd15, type Rig, type RigOptions } from './serviceRig';
import { processExists } from '../../helpers/processes';

const CAPACITY = 12 * GiB;
const MARGIN = 512 * MiB;
/** A long context makes the small model's KV cache and compute buffers large in the plan (hundreds of MB). */
const CONTEXT = 16_384;

async function until<T>(read: () => Promise<T>, ok: (value: T) => boolean, what: string, ms = 30_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await read();
    if (ok(value)) return value;
    assert.ok(Date.now() < deadline, `${what} within ${ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** An executable named `name` in `dir` that runs the sd.cpp stand-in under that name. */
async function standinAs(dir: string, name: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  const path = join(dir, name);
  await writeFile(path, `#!/bin/sh\nSDCPP_STANDIN_PROGRAM="$0" exec "${SDCPP_STANDIN_BIN}" "$@"\n`);
  await chmod(path, 0o755);
  return path;
}

describe('sidecar service residents (node-llama-cpp, sd.cpp stand-in and its sd-server)', { timeout: 180_000 }, () => {
  let root: string;
  let model: string;
  let llmModel: string;
  let scenario = 0;
  let rig: Rig | undefined;

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'vram-relay-residents-'));
    model = await writeSd15(join(root, 'sd15.safetensors'));
    llmModel = (await writeLlamaGguf(join(root, 'long-context.gguf'), { contextLength: CONTEXT, seed: 5 })).path;
  });

  after(async () => {
    await rig?.dispose();
    if (root) await rm(root, { recursive: true, force: true });
  });

  const open = async (options: Omit<RigOptions, 'dir' | 'imageModel'> = {}): Promise<Rig> => {
    await rig?.dispose();
    rig = await startRig({
      dir: join(root, `scenario-${++scenario}`),
      imageModel: model,
      standin: { stepMs: 5 },
      llm: { modelPath: llmModel, contextSize: CONTEXT },
      ...options,
    });
    return rig;
  };

  /** The LLM's figures the arbiter plans with (read once the arbiter has them). */
  const llmCostsOf = async (r: Rig): Promise<LlmCosts> =>
    (await until(() => r.service.getSnapshot(), (s) => s.llm.costs !== null, 'the LLM figures', 10_000)).llm.costs!;
  const hotBytes = (c: LlmCosts) => c.weights + c.kvCache + c.compute;
  const llmJob = (prompt: string): LlmJobSpec => ({ kind: 'llm', task: 'completion', contextSize: 256, prompt, maxTokens: 2, temperature: 0 });

  test('an image that needs the LLM\'s room makes it yield, and the LLM comes back afterwards', async () => {
    const r = await open();
    const hot = hotBytes(await llmCostsOf(r));
    assert.ok(hot > 100 * MiB, `the LLM is large by the estimate (${hot} bytes)`);
    const warmUp = await r.run(llmJob('a lighthouse'));
    assert.equal(warmUp.job.status, 'done', warmUp.job.message);
    assert.equal((await r.service.getSnapshot()).llm.state, 'hot');

    // Other programs leave room for the image at its most frugal plus half the LLM: with the LLM hot nothing fits.
    const image = await new ModelCosts(() => undefined).image(r.image('probe'), { ...FULL_SD_CAPABILITIES, backend: 'unknown' });
    const frugal = image.weights.diffusion + image.compute.diffusionFlash;
    r.device.setOtherUse(CAPACITY - MARGIN - frugal - Math.round(hot / 2));

    const spec = r.image('needs-room');
    const done = await r.run(spec);
    assert.equal(done.job.status, 'done', done.job.message);
    assert.deepEqual(done.outputs, [spec.outputPath]);
    const decisions = await r.decisions();
    const yielded = decisions.find((d) => d.kind === 'yield' && d.jobId === done.job.id);
    assert.ok(yielded, `the LLM yielded: ${decisions.map((d) => `${d.kind}: ${d.reason}`).join(' | ')}`);
    assert.match(yielded.reason, /(drop the LLM context|unload the LLM|stop the LLM) for job-/);
    assert.ok((yielded.estimate ?? 0) >= hot / 2, `it freed ${yielded.estimate} bytes`);

    const restored = await until(
      () => r.decisions(),
      (list) => list.some((d) => d.kind === 'restore' && d.seq > yielded.seq && /-> hot/.test(d.reason)),
      'the LLM restored to hot',
    );
    assert.ok(restored.find((d) => d.kind === 'restore' && d.seq > yielded.seq)!.durationMs! > 0, 'the restore is timed');
    assert.equal((await r.service.getSnapshot()).llm.state, 'hot');
    const after = await r.run(llmJob('a harbour'));
    assert.equal(after.job.status, 'done', after.job.message);
    assert.ok(after.text && after.text.length > 0);
  });

  test('a resident sd-server serves jobs in a row, counts as ours, and is stopped when the LLM needs the room', async () => {
    const r = await open({ image: { keepResident: true } });
    const hot = hotBytes(await llmCostsOf(r));
    assert.ok(r.logs.some((l) => /image engine: .*sd-server \(sd-server, kept resident/.test(l)), r.logs.join('\n'));

    for (const [name, seed] of [['first', 42], ['second', 43]] as const) {
      const done = await r.run(r.image(name, { seed }));
      assert.equal(done.job.status, 'done', done.job.message);
    }
    const starts = await r.standinRuns();
    assert.equal(starts.length, 1, 'one server served both jobs');
    assert.ok(starts[0].argv.includes('--listen-port'));
    const serverPid = starts[0].pid;
    assert.ok(processExists(serverPid));
    const held = r.device.usage();
    assert.ok(held > GiB, 'the server keeps the weights on the device');
    const resident = await until(() => r.service.getSnapshot(), (s) => s.image.state === 'resident', 'the resident reported');
    assert.ok(Math.abs(resident.image.heldBytes - held) < 8 * MiB, `held ${resident.image.heldBytes} vs ${held} on the device`);

    // Other programs take all but half of what the LLM needs beside the server.
    const others = CAPACITY - MARGIN - held - Math.round(hot / 2);
    r.device.setOtherUse(others);
    const snapshot = await until(
      () => r.service.getSnapshot(),
      (s) => s.devices[0]!.used >= others + held,
      'a device poll showing the other programs',
    );
    const parts = snapshot.breakdown[snapshot.devices[0]!.id]!;
    assert.equal(parts.find((p) => p.kind === 'other')?.bytes, others, `the server's memory is not other programs': ${JSON.stringify(parts)}`);
    assert.ok(parts.some((p) => p.label === 'image worker (idle)' && p.bytes === resident.image.heldBytes));

    const answer = await r.run(llmJob('a lighthouse'));
    assert.equal(answer.job.status, 'done', answer.job.message);
    const stop = (await r.decisions(answer.job.id)).find((d) => d.kind === 'yield');
    assert.match(stop?.reason ?? '', /stop the idle image worker/);
    assert.equal(processExists(serverPid), false, 'the server process is gone');
    assert.equal(r.device.usage(), 0, 'its weights left the device');
    assert.equal((await r.service.getSnapshot()).image.state, 'stopped');

    r.device.setOtherUse(0);
    const again = await r.run(r.image('third', { seed: 44 }));
    assert.equal(again.job.status, 'done', again.job.message);
    const restarted = await r.standinRuns();
    assert.equal(restarted.length, 2, 'the next image job started a new server');
    assert.deepEqual(r.outputFiles(), ['first.png', 'second.png', 'third.png']);

    // The user unloads the LLM, other programs come back, and the user loads it again: the idle server stops first.
    assert.equal((await r.service.setLlmState({ state: 'cold' })).state, 'cold');
    await until(() => r.service.getSnapshot(), (s) => s.image.state === 'resident', 'the new server reported');
    r.device.setOtherUse(CAPACITY - MARGIN - r.device.usage() - Math.round(hot / 2));
    assert.equal((await r.service.setLlmState({ state: 'hot' })).state, 'hot');
    assert.equal(processExists(restarted[1].pid), false, 'the second server process is gone');
    const userStop = (await r.decisions()).filter((d) => d.kind === 'yield').at(-1);
    assert.match(userStop?.reason ?? '', /asked by the user: stop the idle image worker/);
  });

  test('keepResident without an sd-server beside sd-cli runs each job with sd-cli', async () => {
    const cli = await standinAs(join(root, 'cli-only'), 'sd-cli');
    const r = await open({ image: { keepResident: true, binaryPath: cli }, llm: { modelPath: '' } });
    assert.ok(r.logs.some((l) => l.includes(`image engine: ${cli} (sd-cli`)), r.logs.join('\n'));
    const done = await r.run(r.image('per-job'));
    assert.equal(done.job.status, 'done', done.job.message);
    const runs = await r.standinRuns();
    assert.equal(runs.length, 1);
    assert.ok(!runs[0].argv.includes('--listen-port'), 'no server was started');
  });

  test('finds sd-server beside the configured sd-cli, and sd-cli beside a configured sd-server', async () => {
    const both = join(root, 'release');
    const cli = await standinAs(both, 'sd-cli');
    const server = await standinAs(both, 'sd-server');
    assert.deepEqual(await findSdBinaries(cli), { cli, server });
    assert.deepEqual(await findSdBinaries(server), { server, cli });
    const alone = await standinAs(join(root, 'alone'), 'sd');
    assert.deepEqual(await findSdBinaries(alone), { cli: alone });
    assert.deepEqual(await findSdBinaries('', { PATH: both }), { cli, server });
    assert.deepEqual(await findSdBinaries('', { PATH: join(root, 'nowhere') }), {});
    const missing = join(root, 'missing', 'sd-cli');
    assert.deepEqual(await findSdBinaries(missing), { cli: missing }, 'a wrong path is kept, so that jobs say what to set');
  });
});
