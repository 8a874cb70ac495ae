/**
 * The device probe fails the arbiter: nvidia-smi hangs, the GPU disappears, nvidia-smi prints garbage, and the
 * driver reports more free memory than there is. The real Arbiter with the real NVIDIA probe (over a stand-in
 * nvidia-smi whose behaviour the test switches) or the simulated device, and the real sd-cli runner with the sd.cpp
 * stand-in.
 *
 * What is tested below: a reading is retried a few times, each within the arbiter's own time limit; one that still
 * fails (a hung tool, no GPU, unreadable output, figures that make no sense) ends the job that needed it with words
 * that blame the device and say what to check, and the queue goes on; a lying driver is caught by the
 * out-of-memory it causes and the job reruns on the recovery ladder.
 */

import assert from 'node:assert/strict';
import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { DecisionEvent } from '../../../sidecar/core/types';
import { GiB, type DeviceProbe, type DeviceSnapshot, type ImageJobSpec } from '../../../sidecar/core/types';
import { NvidiaProbe } from '../../../sidecar/devices/nvidiaProbe';
import type { JobDoneParams } from '../../../sidecar/protocol';
import { childPids, ImageRig, imageProblem, waitUntil, withTimeout } from './faultRig';

const WAIT_MS = 30_000;
const PROBE_LIMIT_MS = 400;

type SmiMode = 'ok' | 'hang' | 'gone' | 'garbage' | 'no-driver';

/**
 * An nvidia-smi for these tests: a shell script that answers the probe's two queries as the real one does, in the
 * mode written to a file (so that the test can change it between two readings). One 24 GiB GPU, 1 GiB used.
 */
function writeFakeNvidiaSmi(dir: string): { env: NodeJS.ProcessEnv; set(mode: SmiMode): void } {
  const modeFile = join(dir, 'smi-mode');
  const script = join(dir, 'nvidia-smi');
  writeFileSync(modeFile, 'ok');
  writeFileSync(
    script,
    `#!/bin/sh
mode=$(cat '${modeFile}')
case "$mode" in
  hang) exec sleep 600 ;;
  gone) echo "No devices were found"; exit 6 ;;
  no-driver) echo "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest NVIDIA driver is installed and running."; exit 9 ;;
  garbage) printf '\\000\\007 not, a reading\\n[Unknown Error]\\n'; exit 0 ;;
esac
case "$1" in
  --query-gpu=*) echo "0, GPU-5e2c0d7a-1b3f-4c8e-9a6d-2f7b8c1e0a93, NVIDIA GeForce RTX 4090, 24564, 1024, 23111" ;;
  --query-compute-apps=*) ;;
  *) echo "unexpected arguments: $*" >&2; exit 2 ;;
esac
`,
  );
  chmodSync(script, 0o755);
  return {
    env: { PATH: `${dir}:/usr/bin:/bin` },
    set: (mode) => writeFileSync(modeFile, mode),
  };
}

describe('device probe faults under the arbiter', { timeout: 240_000 }, () => {
  let rig: ImageRig;
  let smi: ReturnType<typeof writeFakeNvidiaSmi>;
  let probe: NvidiaProbe | undefined;

  before(async () => {
    rig = await ImageRig.create({ capacity: 24 * GiB });
    smi = writeFakeNvidiaSmi(join(rig.root, 'bin'));
  });

  after(async () => {
    probe?.dispose();
    await rig?.dispose();
  });

  /** The arbiter reading the device through the real NVIDIA probe (over the stand-in nvidia-smi). */
  function withNvidiaProbe(): void {
    probe?.dispose();
    probe = new NvidiaProbe({ env: smi.env, timeoutMs: PROBE_LIMIT_MS });
    rig.startArbiter({ extra: { device: probe } });
    rig.image.current = rig.runner({ stepMs: 5 });
  }

  async function run(spec: ImageJobSpec, onDecision?: (d: DecisionEvent) => void): Promise<JobDoneParams> {
    const listener = (d: DecisionEvent) => onDecision?.(d);
    rig.arbiter.on('decision', listener);
    try {
      const job = rig.arbiter.submit(spec);
      return await withTimeout(rig.arbiter.waitFor(job.id), WAIT_MS, `job ${job.id}`);
    } finally {
      rig.arbiter.off('decision', listener);
    }
  }

  /** The job after a fault: nvidia-smi answers again, and the next job runs as if nothing happened. */
  async function assertQueueMovesOn(name: string): Promise<void> {
    smi.set('ok');
    const spec = rig.imageSpec(name);
    const done = await run(spec);
    assert.equal(done.job.status, 'done', done.job.message);
    assert.equal(await imageProblem(spec.outputPath, spec.width, spec.height), undefined);
  }

  async function assertNoProcessLeft(): Promise<void> {
    // The probe's time limit kills a hung nvidia-smi; its exit may be reaped a moment after the job ended.
    await waitUntil(() => childPids().length === 0, 5000, 'no nvidia-smi or sd.cpp process left');
    assert.equal(rig.device.usage(), 0);
  }

  test('nvidia-smi hangs: the job ends with what the probe says, after its time limit, and the queue moves on', async () => {
    withNvidiaProbe();
    smi.set('hang');
    const spec = rig.imageSpec('hang-admit');
    const done = await run(spec);
    assert.equal(done.job.status, 'failed');
    assert.match(done.job.message ?? '', new RegExp(`nvidia-smi did not answer within ${PROBE_LIMIT_MS} ms`));
    await assertNoProcessLeft();
    await assertQueueMovesOn('after-hang-admit');
  });

  test('nvidia-smi hangs while the job waits for its memory: the job ends saying so, nothing ran', async () => {
    withNvidiaProbe();
    const spec = rig.imageSpec('hang-lease');
    const runsBefore = rig.standinRuns().length;
    // The plan is made on a good reading; the reading that should grant the memory never comes.
    const done = await run(spec, (d) => d.kind === 'plan' && smi.set('hang'));
    assert.equal(done.job.status, 'failed');
    assert.match(done.job.message ?? '', /Could not read the GPU memory \(3 tries\): nvidia-smi did not answer within/);
    assert.equal(rig.standinRuns().length, runsBefore, 'sd.cpp never started');
    await assertNoProcessLeft();
    await assertQueueMovesOn('after-hang-lease');
  });

  test('the GPU disappears (no device, then no driver): the job ends with nvidia-smi\'s own words', async () => {
    withNvidiaProbe();
    smi.set('gone');
    const gone = await run(rig.imageSpec('gone'));
    assert.equal(gone.job.status, 'failed');
    assert.match(gone.job.message ?? '', /nvidia-smi .*failed \(exit code 6\): No devices were found/);

    smi.set('no-driver');
    const noDriver = await run(rig.imageSpec('no-driver'));
    assert.equal(noDriver.job.status, 'failed');
    assert.match(noDriver.job.message ?? '', /couldn't communicate with the NVIDIA driver/);
    await assertNoProcessLeft();
    await assertQueueMovesOn('after-gone');
  });

  test('nvidia-smi prints garbage: no reading is made up from it, the job ends saying what was printed', async () => {
    withNvidiaProbe();
    smi.set('garbage');
    const done = await run(rig.imageSpec('garbage'));
    assert.equal(done.job.status, 'failed');
    assert.match(done.job.message ?? '', /nvidia-smi reported no GPU with memory figures/);
    await assertNoProcessLeft();
    await assertQueueMovesOn('after-garbage');
  });

  for (const oom of ['graceful', 'abort'] as const) {
    test(`the driver reports more free memory than there is: the out-of-memory (${oom === 'abort' ? 'CUDA abort, exit 134' : 'failed decode'}) is caught and the job reruns with a safer plan`, async () => {
      rig.startArbiter();
      rig.image.current = rig.runner({ stepMs: 5, oom });
      // Other programs hold 20.5 GiB and the driver hides it: it reports the whole 24 GiB as free.
      rig.device.setOtherUse(20.5 * GiB);
      rig.device.setLie(20.5 * GiB);
      try {
        const spec = rig.imageSpec(`lie-${oom}`, { width: 512, height: 512 });
        const decisions: DecisionEvent[] = [];
        const done = await run(spec, (d) => decisions.push(d));
        assert.equal(done.job.status, 'done', done.job.message);
        assert.equal(await imageProblem(spec.outputPath, 512, 512), undefined);
        const plans = decisions.filter((d) => d.kind === 'plan');
        assert.ok((plans[0].measuredFree ?? 0) > 20 * GiB, 'the first plan believed the driver');
        const retry = decisions.find((d) => d.kind === 'retry');
        assert.ok(retry, 'a rerun after the out-of-memory');
        assert.match(retry.reason, /^oom during vaeDecode .* -> rerun seed \d+ with tiled VAE decode/);
        assert.equal(decisions.filter((d) => d.kind === 'retry').length, 1, 'one rung was enough');
        await assertNoProcessLeft();
      } finally {
        rig.device.setLie(0);
        rig.device.setOtherUse(0);
      }
    });
  }

  // -------------------------------------------------------------------------------------------------------------
  // The arbiter's own guard on readings: a time limit, retries, and figures that must make sense.

  /** A probe that answers from the simulated device except where `fault` says otherwise. */
  function probeWith(fault: (call: number) => 'hang' | 'nonsense' | 'fail' | undefined): DeviceProbe {
    let calls = 0;
    return {
      kind: 'simulated',
      sample: () => {
        const what = fault(++calls);
        if (what === 'hang') return new Promise<DeviceSnapshot[]>(() => undefined);
        if (what === 'fail') return Promise.reject(new Error('nvidia-smi failed (exit code 15): GPU is lost'));
        const snapshot = rig.device.snapshot();
        return Promise.resolve([what === 'nonsense' ? { ...snapshot, free: Number.NaN, used: Number.NaN } : snapshot]);
      },
      watch: () => () => undefined,
      dispose: () => undefined,
    };
  }

  test(
    'a reading that never comes does not stall the queue',
    async () => {
      rig.startArbiter({ extra: { device: probeWith((call) => (call === 1 ? 'hang' : undefined)), readingTimeoutMs: 500, readingAttempts: 1 } });
      rig.image.current = rig.runner({ stepMs: 5 });
      const first = rig.arbiter.submit(rig.imageSpec('never-read'));
      const second = rig.arbiter.submit(rig.imageSpec('behind-it'));
      try {
        const done = await withTimeout(rig.arbiter.waitFor(second.id), 4000, 'the job behind the stuck reading');
        assert.equal(done.job.status, 'done');
        const stuck = await withTimeout(rig.arbiter.waitFor(first.id), 4000, 'the job whose reading never came');
        assert.equal(stuck.job.status, 'failed');
        assert.match(stuck.job.message ?? '', /Could not read the GPU memory: no reading within 500 ms/);
      } finally {
        rig.arbiter.dispose();
      }
    },
  );

  test(
    'a failed reading is reported as a device problem, not as the image model\'s',
    async () => {
      withNvidiaProbe();
      smi.set('gone');
      const done = await run(rig.imageSpec('wording'));
      smi.set('ok');
      assert.doesNotMatch(done.job.message ?? '', /figures of the image model/);
      assert.match(done.job.message ?? '', /^Could not read the GPU memory \(3 tries\): .*nvidia-smi/);
      assert.match(done.job.message ?? '', /run nvidia-smi or rocm-smi in a terminal/);
    },
  );

  test(
    'a reading with figures that make no sense is refused, not planned with',
    async () => {
      rig.startArbiter({ extra: { device: probeWith(() => 'nonsense'), memoryWaitTimeoutMs: 300 } });
      rig.image.current = rig.runner({ stepMs: 5 });
      const done = await run(rig.imageSpec('nonsense'));
      assert.equal(done.job.status, 'failed');
      assert.doesNotMatch(done.job.message ?? '', /NaN B|smaller/);
      assert.match(done.job.message ?? '', /Could not read the GPU memory \(3 tries\): the figures make no sense \(it gave used = NaN, free = NaN\)/);
    },
  );

  test('one failed or hung reading is retried, and the job goes on', async () => {
    rig.startArbiter({ extra: { device: probeWith((call) => (call === 1 ? 'fail' : call === 2 ? 'hang' : undefined)), readingTimeoutMs: 300 } });
    rig.image.current = rig.runner({ stepMs: 5 });
    const done = await run(rig.imageSpec('retried'));
    assert.equal(done.job.status, 'done', done.job.message);
  });
});
