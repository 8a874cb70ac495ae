/**
 * Recovery through the whole service (createSidecarService with its arbiter, workers and device probe), with the
 * sd.cpp stand-in on a shared simulated device: out-of-memory on a device whose figures were wrong, workers that
 * die mid-job, fp16 NaN images, and our own processes told apart from other programs'.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { GiB, MiB } from '../../../sidecar/core/types';
import { SDCPP_STANDIN_OLD_BIN, type StandinInvocation } from '../../standins/sdcppStandin';
import { sdcppStandinFaultEnv } from '../../standins/sdcppStandinFaults';
import { fileSize, flagValue, startRig, withTimeout, writeSd15, type Rig, type RigOptions } from './serviceRig';

const CAPACITY = 12 * GiB;
/** The stand-in's diffusion buffer at 512x512 is 614 MiB and its untiled decode 1664 MiB; this room is between. */
const ROOM_BESIDE_WEIGHTS = 1300 * MiB;

/** A placement safer for the decode than the whole image on the GPU: tiles, or the VAE on the CPU. */
function decodesSafely(run: StandinInvocation): boolean {
  return run.argv.includes('--vae-tiling') || run.argv.includes('--vae-on-cpu') || /vae=cpu/.test(flagValue(run, '--backend') ?? '');
}

describe('sidecar service recovery (sd.cpp stand-in, simulated device)', { timeout: 120_000 }, () => {
  let root: string;
  let model: string;
  let weights: number;
  let scenario = 0;
  let rig: Rig | undefined;

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'vram-relay-recovery-'));
    model = await writeSd15(join(root, 'sd15.safetensors'));
    // The stand-in places a checkpoint's whole size on the device as weights.
    weights = fileSize(model);
  });

  after(async () => {
    await rig?.dispose();
    if (root) await rm(root, { recursive: true, force: true });
  });

  const open = async (options: Omit<RigOptions, 'dir' | 'imageModel'> = {}): Promise<Rig> => {
    await rig?.dispose();
    rig = await startRig({ dir: join(root, `scenario-${++scenario}`), imageModel: model, standin: { stepMs: 5 }, ...options });
    return rig;
  };

  /** Other programs take memory now; a driver whose reading lags 3 s still shows it free while the job plans. */
  const takeMemoryBehindTheDriversBack = (r: Rig) => r.device.setOtherUse(CAPACITY - weights - ROOM_BESIDE_WEIGHTS);

  const STALE_DRIVER = { driverLagMs: 3_000 };

  async function assertRecoveredFromOom(r: Rig, jobName: string, failure: RegExp): Promise<void> {
    const spec = r.image(jobName);
    const done = await r.run(spec);
    assert.equal(done.job.status, 'done', done.job.message);
    assert.deepEqual(done.outputs, [spec.outputPath]);
    assert.equal(done.job.attempt, 2);

    const runs = await r.standinRuns();
    assert.equal(runs.length, 2, 'one failed run, one rerun');
    assert.equal(decodesSafely(runs[0]), false, 'the first plan decoded the whole image on the GPU');
    assert.ok(decodesSafely(runs[1]), `the rerun is one rung down the ladder: ${runs[1].argv.join(' ')}`);
    assert.deepEqual(runs.map((run) => flagValue(run, '--seed') ?? flagValue(run, '-s')), ['42', '42'], 'the same seed both times');

    const decisions = await r.decisions(done.job.id);
    const retry = decisions.find((d) => d.kind === 'retry');
    assert.ok(retry, `a retry decision: ${decisions.map((d) => d.kind).join(', ')}`);
    assert.match(retry.reason, failure);
    assert.match(retry.reason, /rerun seed 42 with tiled VAE decode/);
    assert.deepEqual(r.outputFiles(), [`${jobName}.png`], 'only the finished image is in the output folder');
    assert.equal(r.device.usage(), 0, 'every run gave its memory back');
  }

  test('stale driver figures, new sd-cli: decode_first_stage fails, the same seed reruns tiled and the image arrives', async () => {
    const r = await open({ device: STALE_DRIVER });
    takeMemoryBehindTheDriversBack(r);
    await assertRecoveredFromOom(r, 'graceful', /^oom during vaeDecode .*(cudaMalloc failed|decode_first_stage failed|failed to allocate)/);
  });

  test('stale driver figures, CUDA out-of-memory abort (exit 134): the job reruns tiled and completes', async () => {
    const r = await open({ device: STALE_DRIVER, standin: { stepMs: 5, oom: 'abort' } });
    takeMemoryBehindTheDriversBack(r);
    await assertRecoveredFromOom(r, 'abort', /^oom during vaeDecode .*(out of memory|cudaMalloc failed)/);
  });

  test('stale driver figures, old sd build: the gray image with a success log is caught and the job reruns tiled', async () => {
    const r = await open({ device: STALE_DRIVER, image: { binaryPath: SDCPP_STANDIN_OLD_BIN } });
    takeMemoryBehindTheDriversBack(r);
    await assertRecoveredFromOom(r, 'old-build', /^blank during vaeDecode .*reported success/);
    assert.ok(r.logs.some((l) => /image engine: .*\(sd,/.test(l)), 'the old binary was probed as sd');
  });

  test('a worker that aborts mid-sampling (exit 134) is rerun; the job behind it completes too', async () => {
    const r = await open({
      standin: { stepMs: 5, crashAt: 'diffusion', crashStep: 2, crashMode: 'abort' },
      env: sdcppStandinFaultEnv({ crashOnce: join(root, `crash-once-${scenario + 1}`) }),
    });
    const first = r.image('first');
    const second = r.image('second', { seed: 43 });
    const [a, b] = await Promise.all([r.run(first), r.run(second)]);
    assert.equal(a.job.status, 'done', a.job.message);
    assert.equal(b.job.status, 'done', b.job.message);
    assert.deepEqual(r.outputFiles(), ['first.png', 'second.png']);
    const decisions = await r.decisions(a.job.id);
    assert.match(decisions.find((d) => d.kind === 'retry')?.reason ?? '', /^crash during diffusion .*exited with code 134/);
    const seeds = (await r.standinRuns()).map((run) => flagValue(run, '--seed') ?? flagValue(run, '-s'));
    assert.deepEqual(seeds, ['42', '42', '43'], 'the crashed job reran with its seed before the next job');
  });

  test('a worker killed by SIGKILL while decoding is rerun and leaves no partial file', async () => {
    const r = await open({
      standin: { stepMs: 5, crashAt: 'vaeDecode', crashMode: 'kill' },
      env: sdcppStandinFaultEnv({ crashOnce: join(root, `crash-once-${scenario + 1}`) }),
    });
    const done = await r.run(r.image('killed'));
    assert.equal(done.job.status, 'done', done.job.message);
    assert.equal(done.job.attempt, 2);
    const decisions = await r.decisions(done.job.id);
    assert.match(decisions.find((d) => d.kind === 'retry')?.reason ?? '', /^crash during vaeDecode .*SIGKILL/);
    assert.deepEqual(r.outputFiles(), ['killed.png']);
  });

  test('an fp16 NaN black image fails at once with what to do, without a pointless rerun', async () => {
    const r = await open({ standin: { stepMs: 5, nan: true } });
    const done = await r.run(r.image('nan'));
    assert.equal(done.job.status, 'failed');
    assert.match(done.job.message ?? '', /fp16 NaN/);
    assert.match(done.job.message ?? '', /fp16-fix VAE/);
    assert.equal((await r.standinRuns()).length, 1, 'no rerun');
    const kinds = (await r.decisions(done.job.id)).map((d) => d.kind);
    assert.ok(!kinds.includes('retry'), kinds.join(', '));
    assert.deepEqual(r.outputFiles(), [], 'the black image was not kept');
  });

  test('a driver that over-reports free memory but lists processes does not fool the plan', async () => {
    const r = await open();
    r.device.setOtherUse(CAPACITY - weights - ROOM_BESIDE_WEIGHTS);
    r.device.setLie(6 * GiB);
    const done = await r.run(r.image('lied-to'));
    assert.equal(done.job.status, 'done', done.job.message);
    const runs = await r.standinRuns();
    assert.equal(runs.length, 1, 'no out-of-memory, no rerun');
    // Planned against what is really free, not against the inflated figure.
    const plan = (await r.decisions(done.job.id)).find((d) => d.kind === 'plan');
    assert.ok(plan?.measuredFree !== undefined && plan.measuredFree <= weights + ROOM_BESIDE_WEIGHTS - 512 * MiB, plan?.reason);
    assert.ok(plan.estimate !== undefined && plan.estimate <= weights + ROOM_BESIDE_WEIGHTS, plan.reason);
    assert.notDeepEqual(runs[0].argv.filter((a) => /^--(vae-tiling|offload-to-cpu|backend|vae-on-cpu|clip-on-cpu)$/.test(a)), [], 'a safer placement than all on the GPU');
  });

  test("a running sd-cli's memory counts as ours, not as other programs'", async () => {
    const others = 3 * GiB;
    const r = await open({ standin: { stepMs: 150 } });
    r.device.setOtherUse(others);
    const { jobId } = await r.service.submitJob({ spec: r.image('watched', { steps: 20 }) });
    // A device poll taken while the stand-in samples (it then holds its weights and its diffusion buffer).
    const deadline = Date.now() + 30_000;
    let snapshot = await r.service.getSnapshot();
    while (snapshot.devices[0]!.used - others < weights) {
      assert.ok(Date.now() < deadline, 'a poll showed the running stand-in');
      await new Promise((resolve) => setTimeout(resolve, 50));
      snapshot = await r.service.getSnapshot();
    }
    assert.equal(snapshot.running[0]?.id, jobId, 'the job was running');
    const parts = snapshot.breakdown[snapshot.devices[0]!.id]!;
    assert.equal(parts.find((p) => p.kind === 'other')?.bytes, others, JSON.stringify(parts));
    const done = await withTimeout(r.service.waitJob({ jobId }), 60_000, 'watched job');
    assert.equal(done.job.status, 'done', done.job.message);
  });
});
