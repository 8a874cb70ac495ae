import { afterEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';

import { RECOVERY_LADDER, GiB, MiB } from '../../sidecar/core/types';
import { LLM_7B, LLM_PID, SD_PID, imageSpec, llmSpec, makeRig, until, within, type Rig } from './arbiterHarness';

let rig: Rig | undefined;
afterEach(() => {
  rig?.dispose();
  rig = undefined;
});

/**
 * 24 GB device, other programs hold 9 GB, the LLM 5.4 GB hot: SDXL 1024x1024 (13.4 GB all on the GPU) needs the
 * LLM out of the way or a safer decode. `recentUseMs: 0` makes the LLM count as idle, so unloading it is cheapest.
 */
function tightRig(driverLagMs: number, extra: Parameters<typeof makeRig>[0] = {}): Rig {
  return makeRig({ device: { otherUse: 9 * GiB, driverLagMs }, arbiter: { recentUseMs: 0 }, ...extra });
}

describe('Arbiter memory', () => {
  it('grants the lease only once the yielded memory shows as free (driver lag), so nothing runs out of memory', async () => {
    rig = tightRig(1200);
    const { arbiter, image, llm } = rig;
    const job = arbiter.submit(imageSpec());
    const done = await within(arbiter.waitFor(job.id));
    assert.equal(done.job.status, 'done', done.job.message);
    assert.equal(done.job.attempt, 1, 'no retry: the first run had its memory');
    assert.equal(image.runs.length, 1);
    assert.equal(llm.moves[0], 'cold');

    const kinds = rig.kinds(job.id);
    assert.deepEqual(kinds.slice(0, 3), ['plan', 'yield', 'lease']);
    const lease = rig.decisions.find((d) => d.kind === 'lease')!;
    assert.ok(lease.durationMs! >= 1200, `waited ${lease.durationMs} ms for the lagging free figure`);
    assert.ok(lease.measuredFree! >= lease.estimate!);
    assert.ok(lease.measured! > 5 * GiB, 'what came back is measured');
    assert.match(lease.reason, /^lease 13\.4 GB to job-1: free 1\d\.\d GB after waiting 1\.\d s for it$/);
    const yieldDecision = rig.decisions.find((d) => d.kind === 'yield')!;
    assert.equal(yieldDecision.estimate, llmHot());
    assert.equal(typeof yieldDecision.durationMs, 'number');
  });

  it('runs a job that misses by less than half the margin in the margin, with every safer option, and says so', async () => {
    // The leanest SDXL plan needs its diffusion weights (5.1 GB) and the flash-attention buffer (700 MB) at once.
    const leanest = 5.1 * GiB + 700 * MiB;
    const otherUseFor = (short: number) => 24 * GiB - 256 * MiB - leanest + short;
    rig = makeRig({ noLlm: true, llmState: 'stopped', device: { otherUse: otherUseFor(64 * MiB) } });
    const job = rig.arbiter.submit(imageSpec());
    const done = await within(rig.arbiter.waitFor(job.id));
    assert.equal(done.job.status, 'done', done.job.message);
    assert.equal(done.job.attempt, 1);
    assert.equal(done.job.plan?.marginUsed !== undefined && Math.round(done.job.plan.marginUsed / MiB), 64);
    assert.deepEqual(done.job.plan?.placement, { textEncoder: 'cpu', diffusion: 'offload', vae: 'cpu', vaeTiling: false, flashAttention: true });
    const plan = rig.decisions.find((d) => d.kind === 'plan' && d.jobId === job.id)!;
    assert.match(plan.reason, /nothing else can yield: runs 64 MB into the safety margin$/);
    rig.dispose();

    // 200 MB short is more than half of the 256 MB margin: refused, with the reason.
    rig = makeRig({ noLlm: true, llmState: 'stopped', device: { otherUse: otherUseFor(200 * MiB) } });
    const refused = await within(rig.arbiter.waitFor(rig.arbiter.submit(imageSpec()).id));
    assert.equal(refused.job.status, 'failed');
    assert.match(refused.job.message ?? '', /nothing fits/);
    assert.equal(rig.image.runs.length, 0);
  });

  it('keeps an LLM in steady use hot and tiles the decode, where an idle one would be unloaded', async () => {
    // Same device as above, where an idle LLM is unloaded for the job (the test before): 40 requests in the last
    // minutes make the unload cost their expected waiting during the job, more than tiling the decode.
    rig = tightRig(0);
    const { arbiter, llm } = rig;
    for (let i = 0; i < 40; i++) await within(arbiter.waitFor(arbiter.submit(llmSpec({ prompt: `r${i}` })).id));
    const done = await within(arbiter.waitFor(arbiter.submit(imageSpec()).id));
    assert.equal(done.job.status, 'done', done.job.message);
    assert.equal(done.job.plan?.placement?.vaeTiling, true);
    assert.deepEqual(llm.moves, []);
    assert.equal(arbiter.snapshot().llm.state, 'hot');
  });

  it('restores the LLM after the job once its memory is really back', async () => {
    rig = tightRig(800);
    const { arbiter, llm, device } = rig;
    const job = arbiter.submit(imageSpec());
    await within(arbiter.waitFor(job.id));
    await until(() => rig!.kinds().includes('restore'), 'the restore');
    assert.deepEqual(llm.moves, ['cold', 'hot']);
    const restore = rig.decisions.find((d) => d.kind === 'restore')!;
    assert.match(restore.reason, /^restore the LLM cold -> hot: needs 5\.4 GB, free \d+\.\d GB, took/);
    assert.ok(device.usage(String(LLM_PID)) >= llmHot());
    assert.equal(arbiter.snapshot().llm.state, 'hot');
  });

  it('replans with what is really free when other programs take the memory during the wait', async () => {
    rig = tightRig(0);
    const { arbiter, llm, device, image } = rig;
    llm.afterMove = (state) => {
      // Another program grabs 4 GB of what the LLM gave back.
      if (state === 'cold') device.setOtherUse(13 * GiB);
    };
    const job = arbiter.submit(imageSpec());
    const done = await within(arbiter.waitFor(job.id));
    assert.equal(done.job.status, 'done', done.job.message);
    assert.equal(image.runs.length, 1, 'no out-of-memory run');
    const kinds = rig.kinds(job.id);
    assert.deepEqual(kinds.slice(0, 5), ['plan', 'yield', 'wait', 'plan', 'lease']);
    const wait = rig.decisions.find((d) => d.kind === 'wait')!;
    assert.match(wait.reason, /^only \d+\.\d GB of 13\.4 GB free after 5\.0 s \(other programs hold 13\.0 GB\) -> replanning with what is free$/);
    const replan = image.runs[0].plan;
    assert.equal(replan.placement?.vaeTiling, true, replan.reason);
  });

  it('recovers when other programs grow mid-job: out of memory in the VAE decode, rerun with tiling', async () => {
    rig = makeRig({ device: { otherUse: 0 } });
    const { arbiter, image, device } = rig;
    let grown = false;
    image.onStage = (stage) => {
      if (stage === 'vaeDecode' && !grown) {
        grown = true;
        device.setOtherUse(6 * GiB);
      }
    };
    const job = arbiter.submit(imageSpec());
    const done = await within(arbiter.waitFor(job.id));
    assert.equal(done.job.status, 'done', done.job.message);
    assert.equal(done.job.attempt, 2);
    assert.equal(image.runs[0].result?.ok, false);
    assert.equal(image.runs[0].plan.placement?.vaeTiling, false);
    assert.equal(image.runs[1].plan.placement?.vaeTiling, true);
    assert.deepEqual(
      image.runs.map((r) => r.seed),
      [42, 42],
      'same seed',
    );
    const retry = rig.decisions.find((d) => d.kind === 'retry')!;
    assert.match(retry.reason, /^oom during vaeDecode \(CUDA error: out of memory.*\) -> rerun seed 42 with tiled VAE decode \(retry 1\/5\)$/);
    assert.equal(device.usage(String(SD_PID)), 0);
  });

  it('climbs the recovery ladder on blank and crash, one rung per retry', async () => {
    rig = makeRig();
    const { arbiter, image } = rig;
    image.scripted.push('blank', 'crash');
    const job = arbiter.submit(imageSpec());
    const done = await within(arbiter.waitFor(job.id));
    assert.equal(done.job.status, 'done', done.job.message);
    assert.equal(done.job.attempt, 3);
    const placements = image.runs.map((r) => r.plan.placement!);
    assert.equal(placements[1].vaeTiling, true);
    assert.equal(placements[2].vae, 'cpu');
    const retries = rig.decisions.filter((d) => d.kind === 'retry').map((d) => d.reason);
    assert.match(retries[0], /^blank during vaeDecode \(scripted blank\) -> rerun seed 42 with tiled VAE decode \(retry 1\/5\)$/);
    assert.match(retries[1], /^crash during vaeDecode \(scripted crash\) -> rerun seed 42 with the VAE on the CPU \(retry 2\/5\)$/);
  });

  it('stops after the last rung and says so', async () => {
    rig = makeRig();
    const { arbiter, image, llm } = rig;
    image.scripted.push(...Array(RECOVERY_LADDER.length + 1).fill('oom'));
    const job = arbiter.submit(imageSpec());
    const done = await within(arbiter.waitFor(job.id));
    assert.equal(done.job.status, 'failed');
    assert.equal(image.runs.length, RECOVERY_LADDER.length + 1);
    assert.match(done.job.message!, /No safer plan is left after 5 retries: try a smaller size or a smaller model\.$/);
    const last = image.runs[image.runs.length - 1].plan;
    assert.deepEqual(last.placement, { textEncoder: 'cpu', diffusion: 'offload', vae: 'cpu', vaeTiling: false, flashAttention: false });
    assert.equal(llm.moves.includes('stopped'), true, 'the last rung stops the LLM');
    assert.equal(rig.kinds(job.id).filter((k) => k === 'retry').length, RECOVERY_LADDER.length);
  });

  it('does not retry a black image from fp16 NaN, and says which VAE fixes it', async () => {
    rig = makeRig();
    rig.image.scripted.push('nan');
    const job = rig.arbiter.submit(imageSpec());
    const done = await within(rig.arbiter.waitFor(job.id));
    assert.equal(done.job.status, 'failed');
    assert.equal(rig.image.runs.length, 1);
    assert.match(done.job.message!, /fp16 NaN in the VAE, not from lack of memory.*fp16-fix VAE/);
    assert.ok(!rig.kinds(job.id).includes('retry'));
  });

  it('does not retry bad input', async () => {
    rig = makeRig();
    rig.image.scripted.push('input');
    const job = rig.arbiter.submit(imageSpec());
    const done = await within(rig.arbiter.waitFor(job.id));
    assert.equal(done.job.status, 'failed');
    assert.equal(done.job.message, 'scripted input');
    assert.equal(rig.image.runs.length, 1);
  });

  it('an LLM request waits while an image job holds the memory, then brings the LLM back by itself', async () => {
    rig = tightRig(500);
    const { arbiter, llm } = rig;
    const img = arbiter.submit(imageSpec());
    await until(() => arbiter.job(img.id)?.status === 'running', 'the image job to run');
    const req = arbiter.submit(llmSpec({ prompt: 'hello' }));
    const reqDone = await within(arbiter.waitFor(req.id));
    const imgDone = await within(arbiter.waitFor(img.id));
    assert.equal(reqDone.job.status, 'done', reqDone.job.message);
    assert.ok(imgDone.job.endedAt! <= reqDone.job.startedAt!, 'served after the image job ended');
    const reqKinds = rig.kinds(req.id);
    assert.deepEqual(reqKinds.slice(0, 2), ['plan', 'wait']);
    assert.ok(reqKinds.includes('restore'));
    const wait = rig.decisions.find((d) => d.kind === 'wait' && d.jobId === req.id)!;
    assert.match(wait.reason, /while an image job holds memory -> wait for it to end/);
    assert.deepEqual(llm.moves, ['cold', 'hot']);
    assert.deepEqual(llm.served, ['hello']);
  });
});

function llmHot(): number {
  return LLM_7B.weights + LLM_7B.kvCache + LLM_7B.compute;
}
