import { afterEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';

import { JobQueue } from '../../sidecar/core/jobQueue';
import { validateJobSpec } from '../../sidecar/core/jobValidation';
import { FULL_SD_CAPABILITIES, GiB, type JobPriority } from '../../sidecar/core/types';
import { LLM_7B, LLM_PID, SD_PID, imageSpec, llmSpec, makeRig, until, within, type Rig } from './arbiterHarness';

const LLM_HOT = LLM_7B.weights + LLM_7B.kvCache + LLM_7B.compute;

let rig: Rig | undefined;
afterEach(() => {
  rig?.dispose();
  rig = undefined;
});

describe('JobQueue', () => {
  it('orders interactive > normal > batch, first come first served, and keeps a returning job in its place', () => {
    const q = new JobQueue<{ id: string; priority: JobPriority }>();
    const seqs = new Map<string, number>();
    for (const [id, priority] of [['b1', 'batch'], ['n1', 'normal'], ['i1', 'interactive'], ['n2', 'normal'], ['i2', 'interactive']] as const) {
      seqs.set(id, q.push({ id, priority }));
    }
    assert.deepEqual(
      q.toArray().map((j) => j.id),
      ['i1', 'i2', 'n1', 'n2', 'b1'],
    );
    const i1 = q.remove('i1')!;
    q.push(i1, seqs.get('i1'));
    assert.equal(q.toArray()[0].id, 'i1');
    assert.equal(q.find((j) => j.priority === 'normal')?.id, 'n1');
    assert.equal(q.remove('nope'), undefined);
    assert.equal(q.length, 5);
  });
});

describe('validateJobSpec', () => {
  it('accepts a good job and explains each problem', () => {
    const good = imageSpec();
    assert.equal(validateJobSpec(good), null);
    assert.match(validateJobSpec({ ...good, modelPath: '' })!, /has no model/);
    assert.match(validateJobSpec({ ...good, width: 4 })!, /width 4 is not a multiple of 8, which sd\.cpp requires: use 8\./);
    assert.match(validateJobSpec({ ...good, frames: 33 }, undefined, { ...FULL_SD_CAPABILITIES, videoGeneration: false })!, /cannot generate video/);
    assert.match(validateJobSpec({ ...good, seed: 1.5 })!, /seed must be a whole number/);
    assert.match(validateJobSpec(llmSpec({ contextSize: -1 }))!, /contextSize must be a whole number of tokens above 0/);
    assert.match(validateJobSpec({ kind: 'video' } as never)!, /Unknown job kind "video"/);
  });
});

describe('Arbiter queue', () => {
  it('serves interactive LLM requests before batch images, FIFO within a priority', async () => {
    rig = makeRig();
    const { arbiter, image, llm } = rig;
    const a = arbiter.submit(imageSpec({ seed: 1 }), 'normal');
    await until(() => arbiter.job(a.id)?.status === 'running', 'the first image to run');
    const b = arbiter.submit(imageSpec({ seed: 2 }), 'batch');
    const c = arbiter.submit(imageSpec({ seed: 3 }), 'normal');
    const l1 = arbiter.submit(llmSpec({ prompt: 'first' }));
    const l2 = arbiter.submit(llmSpec({ prompt: 'second' }));
    assert.equal(l1.priority, 'interactive', 'LLM requests default to interactive');

    const done = await within(Promise.all([a, b, c, l1, l2].map((j) => arbiter.waitFor(j.id))));
    assert.deepEqual(
      done.map((d) => d.job.status),
      ['done', 'done', 'done', 'done', 'done'],
    );
    assert.deepEqual(
      image.runs.map((r) => r.seed),
      [1, 3, 2],
      'normal image before the batch one',
    );
    assert.deepEqual(llm.served, ['first', 'second']);
    const info = (id: string) => done.find((d) => d.job.id === id)!.job;
    assert.ok(info(l2.id).endedAt! <= info(b.id).startedAt!, 'both LLM requests are served before the batch image starts');
    assert.equal(done.find((d) => d.job.id === l1.id)!.text, 'answer to first');
  });

  it('cancels a queued job (it never runs) and a running one (its worker stops, its memory is freed)', async () => {
    rig = makeRig();
    const { arbiter, image, device } = rig;
    const a = arbiter.submit(imageSpec({ seed: 1 }));
    const b = arbiter.submit(imageSpec({ seed: 2 }));
    await until(() => arbiter.job(a.id)?.status === 'running', 'the first image to run');
    assert.equal(arbiter.cancel(b.id), true);
    const bDone = await within(arbiter.waitFor(b.id));
    assert.equal(bDone.job.status, 'cancelled');

    await until(() => device.usage(String(SD_PID)) > 0, 'the runner to allocate');
    assert.equal(arbiter.cancel(a.id), true);
    const aDone = await within(arbiter.waitFor(a.id));
    assert.equal(aDone.job.status, 'cancelled');
    assert.equal(device.usage(String(SD_PID)), 0);
    assert.deepEqual(
      image.runs.map((r) => r.seed),
      [1],
    );
    assert.equal(arbiter.cancel(a.id), false, 'an ended job cannot be cancelled again');
    assert.ok(rig.kinds(a.id).includes('cancel'));
    assert.ok(rig.kinds(b.id).includes('cancel'));
    assert.equal(arbiter.snapshot().queue.length, 0);
  });

  it('cancels a job while it waits for yielded memory', async () => {
    rig = makeRig({ device: { driverLagMs: 3000, otherUse: 9 * GiB }, arbiter: { recentUseMs: 0 } });
    const { arbiter, image } = rig;
    const job = arbiter.submit(imageSpec());
    await until(() => rig!.kinds(job.id).includes('yield'), 'the LLM to yield');
    arbiter.cancel(job.id);
    const done = await within(arbiter.waitFor(job.id));
    assert.equal(done.job.status, 'cancelled');
    assert.equal(image.runs.length, 0);
  });
});

describe('Arbiter admission', () => {
  it('rejects sizes sd.cpp cannot take at once, saying what to use', () => {
    rig = makeRig();
    const { arbiter } = rig;
    const odd = arbiter.submit(imageSpec({ width: 1001 }));
    assert.equal(odd.status, 'failed');
    assert.match(odd.message!, /width 1001 is not a multiple of 8, which sd\.cpp requires: use 1000 or 1008/);
    const zero = arbiter.submit(imageSpec({ height: 0 }));
    assert.match(zero.message!, /height must be a whole number of pixels above 0, not 0/);
    const huge = arbiter.submit(imageSpec({ width: 9000 }));
    assert.match(huge.message!, /width 9000 is above the 8192 px limit: use 8192 or less/);
    const batch = arbiter.submit(imageSpec({ batch: 0 }));
    assert.match(batch.message!, /batch must be a whole number/);
    assert.deepEqual(rig.kinds(odd.id), ['reject']);
  });

  it('rejects a job that would not fit even with every yield, with the reason and what would fit', async () => {
    rig = makeRig({ device: { capacity: 6 * GiB }, llmState: 'stopped' });
    const { arbiter, image } = rig;
    const job = arbiter.submit(imageSpec({ width: 2048, height: 2048 }));
    const done = await within(arbiter.waitFor(job.id));
    assert.equal(done.job.status, 'failed');
    assert.match(done.job.message!, /^nothing fits: diffusion 2048x2048 needs 7\.8 GB .* free 5\.8 GB\. Try a smaller size: 960x960 fits now; or a smaller or quantized model/);
    assert.equal(image.runs.length, 0);
    const reject = rig.decisions.find((d) => d.kind === 'reject')!;
    assert.ok(reject.estimate! > reject.measuredFree!);
  });

  it('rejects an LLM request that needs more context than the LLM is set up for', async () => {
    rig = makeRig();
    const job = rig.arbiter.submit(llmSpec({ contextSize: 16384 }));
    const done = await within(rig.arbiter.waitFor(job.id));
    assert.equal(done.job.status, 'failed');
    assert.match(done.job.message!, /needs a context of 16384 tokens; the LLM is set up for 8192: raise vramRelay\.llm\.contextSize/);
  });

  it('rejects jobs for an engine that is not set up', () => {
    rig = makeRig({ noLlm: true });
    const job = rig.arbiter.submit(llmSpec());
    assert.equal(job.status, 'failed');
    assert.match(job.message!, /No LLM is set up/);
  });
});

describe('Arbiter preview and residents', () => {
  it('previews a plan without changing anything', async () => {
    rig = makeRig({ device: { otherUse: 9 * GiB } });
    const { arbiter, llm } = rig;
    const before = arbiter.decisions().length;
    const plan = await within(arbiter.preview(imageSpec()));
    assert.equal(plan.fits, true);
    assert.equal(plan.placement?.vaeTiling, true, plan.reason);
    assert.match(plan.reason, /estimate 6\.5 GB for VAE decode 1024x1024, free 2\.\d GB beside the weights -> tiled decode/);
    assert.equal(arbiter.decisions().length, before);
    assert.equal(llm.state(), 'hot');
    assert.equal(arbiter.snapshot().queue.length, 0);

    const refused = await within(arbiter.preview(imageSpec({ width: 1001 })));
    assert.equal(refused.fits, false);
    assert.match(refused.reason, /multiple of 8/);
  });

  it('unloads and reloads the LLM on request, and frees GPU memory', async () => {
    rig = makeRig();
    const { arbiter, llm, device } = rig;
    const down = await within(arbiter.setLlmState('warm'));
    assert.equal(down.state, 'warm');
    assert.equal(arbiter.snapshot().llm.wantedState, 'warm');
    const up = await within(arbiter.setLlmState('hot'));
    assert.equal(up.state, 'hot');
    assert.ok(rig.kinds().includes('restore'));
    const freed = await within(arbiter.freeGpuMemory());
    assert.equal(freed.freed, LLM_HOT);
    assert.equal(llm.state(), 'cold');
    assert.equal(device.usage(String(LLM_PID)), 0);
    assert.equal(arbiter.snapshot().llm.wantedState, 'cold');
  });

  it('refuses to reload the LLM when it does not fit, and keeps it wanted', async () => {
    rig = makeRig({ llmState: 'cold', device: { otherUse: 20 * GiB } });
    await assert.rejects(within(rig.arbiter.setLlmState('hot')), /Cannot bring the LLM to hot now: it needs 5\.4 GB, free 3\.\d GB/);
    assert.equal(rig.arbiter.snapshot().llm.wantedState, 'hot');
  });

  it('lets the LLM go warm, then cold, after the idle times', async () => {
    rig = makeRig({ arbiter: { idleWarmSeconds: 10, idleColdSeconds: 30 } });
    const { llm, clock } = rig;
    const start = clock.now();
    await until(() => llm.state() === 'cold', 'the idle policy');
    assert.deepEqual(llm.moves, ['warm', 'cold']);
    assert.ok(clock.now() - start >= 30_000);
    const idle = rig.decisions.filter((d) => d.kind === 'yield');
    assert.match(idle[0].reason, /^LLM idle for 10\.0 s: drop the LLM context \(frees 1\.3 GB\)/);
    assert.match(idle[1].reason, /unload the LLM weights \(frees 4\.1 GB\)/);
  });

  it('keeps a bounded history and a snapshot of residents and jobs', async () => {
    rig = makeRig({ arbiter: { historySize: 3 } });
    const { arbiter } = rig;
    for (const w of [1001, 1002, 1003, 1004]) arbiter.submit(imageSpec({ width: w }));
    const history = arbiter.decisions();
    assert.equal(history.length, 3);
    assert.deepEqual(
      history.map((d) => d.seq),
      [2, 3, 4],
    );
    await until(() => arbiter.snapshot().llm.costs !== null, 'the LLM figures');
    const snap = arbiter.snapshot();
    assert.equal(snap.llm.state, 'hot');
    assert.equal(snap.accounted, LLM_HOT);
    assert.deepEqual(
      snap.breakdown.map((p) => p.label),
      ['LLM weights', 'LLM KV cache', 'LLM compute'],
    );
  });
});
