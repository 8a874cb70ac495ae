/**
 * Saving goes wrong: the disk fills up or the folder turns read-only while a job runs, or the output folder is
 * deleted mid-job. The real Arbiter and sd-cli runner, the sd.cpp stand-in saving the way sd.cpp does (see
 * sdcppStandinFaults.ts: it does not check its writes, and reports only a file it could not open).
 *
 * What a user should see: a full disk or a read-only folder ends the job at once with an error that says what to do
 * (no rerun of the job with slower plans, which cannot help); a deleted output folder is made again and the image
 * lands there. Never a half-written file.
 *
 * A full disk and a read-only folder are made real with a small tmpfs mount where the test may mount (root with
 * CAP_SYS_ADMIN); elsewhere (or with VRAM_RELAY_FAULT_NO_MOUNT=1) the test says so and runs a named simulation.
 */

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test, type TestContext } from 'node:test';
import type { JobProgressParams } from '../../../sidecar/protocol';
import { GiB, type ImageJobSpec } from '../../../sidecar/core/types';
import type { ImageRunner } from '../../../sidecar/core/ports';
import { childPids, ImageRig, imageProblem, withTimeout } from './faultRig';

const WAIT_MS = 60_000;

/** Mounts a tmpfs of `size` at `dir`; the reason when this machine does not allow it. */
function mountTmpfs(dir: string, size: string): string | undefined {
  mkdirSync(dir, { recursive: true });
  if (process.env.VRAM_RELAY_FAULT_NO_MOUNT) return 'VRAM_RELAY_FAULT_NO_MOUNT is set';
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0755`, 'tmpfs', dir], { stdio: 'pipe' });
    return undefined;
  } catch (error) {
    const e = error as { stderr?: Buffer; message: string };
    return (e.stderr?.toString().trim() || e.message).split('\n')[0];
  }
}

function remountReadOnly(dir: string): void {
  execFileSync('mount', ['-o', 'remount,ro', dir], { stdio: 'pipe' });
}

function unmount(dir: string): void {
  try {
    execFileSync('umount', [dir], { stdio: 'pipe' });
  } catch {
    execFileSync('umount', ['-l', dir], { stdio: 'pipe' });
  }
}

describe('saving fails: full disk, read-only folder, output folder deleted', { timeout: 240_000 }, () => {
  let rig: ImageRig;
  const mounted: string[] = [];

  before(async () => {
    rig = await ImageRig.create({ capacity: 8 * GiB });
    rig.startArbiter();
  });

  after(async () => {
    for (const dir of mounted.splice(0)) {
      try {
        unmount(dir);
      } catch {
        // Already gone.
      }
    }
    await rig?.dispose();
  });

  /** Runs one job to its end; `onProgress` sees every progress event first, while the job waits for it. */
  async function runJob(spec: ImageJobSpec, runner: ImageRunner, onProgress?: (p: JobProgressParams) => void) {
    rig.image.current = runner;
    const messages: string[] = [];
    let jobId = '';
    const listener = (p: JobProgressParams) => {
      if (p.jobId !== jobId) return;
      if (p.message) messages.push(p.message);
      onProgress?.(p);
    };
    rig.arbiter.on('progress', listener);
    try {
      jobId = rig.arbiter.submit(spec).id;
      const done = await withTimeout(rig.arbiter.waitFor(jobId), WAIT_MS, `job ${jobId}`);
      const retries = rig.arbiter.decisions({ jobId }).filter((d) => d.kind === 'retry');
      return { done, retries, messages };
    } finally {
      rig.arbiter.off('progress', listener);
    }
  }

  function assertNothingLeft(dir: string, expected: string[] = []): void {
    assert.deepEqual(readdirSync(dir).sort(), [...expected].sort(), `only ${expected.join(', ') || 'nothing'} in ${dir}`);
    assert.deepEqual(rig.tmpEntries(), [], 'nothing left in the temporary folder');
    assert.deepEqual(childPids(), [], 'no process left');
    assert.equal(rig.device.usage(), 0, 'nothing left on the device');
  }

  const atFirstStep = (action: () => void) => {
    let done = false;
    return (p: JobProgressParams) => {
      if (done || p.stage !== 'diffusion' || p.step !== 1) return;
      done = true;
      action();
    };
  };

  test('the disk fills up while the job runs: an error that says to free space, no rerun; once freed, the job succeeds', async (t: TestContext) => {
    const disk = join(rig.root, 'small-disk');
    const refused = mountTmpfs(disk, '1m');
    if (refused) {
      t.diagnostic(`disk full: SIMULATED (mounting a tmpfs was refused: ${refused}): the stand-in writes at most 4 KB of the image and logs success, as sd.cpp does on a full disk`);
      const out = join(rig.root, 'sim-full');
      const spec = rig.imageSpec('full', { outputPath: join(out, 'full.png') });
      const { done } = await runJob(spec, rig.runner({ stepMs: 5 }, { diskFree: 4096 }));
      assert.equal(done.job.status, 'failed');
      assert.match(done.job.message ?? '', /unusable image/, 'the truncated image is not delivered');
      assertNothingLeft(out);
      return;
    }
    mounted.push(disk);
    t.diagnostic(`disk full: a real 1 MiB tmpfs at ${disk}`);
    const out = join(disk, 'images');
    const filler = join(disk, 'other-files.bin');
    const spec = rig.imageSpec('full', { outputPath: join(out, 'full.png') });
    const { done, retries, messages } = await runJob(
      spec,
      rig.runner({ stepMs: 10 }),
      // Something else fills the disk while the image is being made: 4 KB stay free, the image needs 52 KB.
      atFirstStep(() => {
        const free = statfsSync(disk);
        writeFileSync(filler, Buffer.alloc(free.bavail * free.bsize - 4096));
      }),
    );
    assert.equal(done.job.status, 'failed', `ended ${done.job.status}: ${done.job.message}`);
    assert.match(done.job.message ?? '', /disk that holds .*images is full/);
    assert.match(done.job.message ?? '', /free some space there or choose another output folder/);
    assert.deepEqual(retries, [], 'a slower plan cannot help: no rerun');
    assert.ok(messages.length > 0);
    assertNothingLeft(out);

    rmSync(filler);
    const again = await runJob({ ...spec }, rig.runner({ stepMs: 5 }));
    assert.equal(again.done.job.status, 'done', again.done.job.message);
    assert.equal(await imageProblem(spec.outputPath, spec.width, spec.height), undefined);
    assertNothingLeft(out, ['full.png']);
  });

  test('the folder turns read-only while the job runs: an error that says to choose another folder, no rerun', async (t: TestContext) => {
    const disk = join(rig.root, 'ro-disk');
    const refused = mountTmpfs(disk, '4m');
    if (refused) {
      // Without a mount, make sd.cpp's own save fail the same way: its output file cannot be opened.
      t.diagnostic(`read-only: SIMULATED (mounting a tmpfs was refused: ${refused}): a folder is put where sd.cpp writes its image`);
      const out = join(rig.root, 'sim-ro');
      const spec = rig.imageSpec('ro', { outputPath: join(out, 'ro.png') });
      const { done, retries } = await runJob(
        spec,
        rig.runner({ stepMs: 10 }),
        atFirstStep(() => {
          const argv = rig.standinArgs().at(-1)!;
          mkdirSync(argv[argv.indexOf('-o') + 1]);
        }),
      );
      assert.equal(done.job.status, 'failed');
      assert.match(done.job.message ?? '', /sd\.cpp could not save the image in .*sim-ro: check that the folder exists, can be written and has free space, or choose another output folder/);
      assert.deepEqual(retries, []);
      assertNothingLeft(out);
      return;
    }
    mounted.push(disk);
    t.diagnostic(`read-only: a real tmpfs at ${disk}, remounted read-only mid-job`);
    const out = join(disk, 'images');
    const spec = rig.imageSpec('ro', { outputPath: join(out, 'ro.png') });
    const { done, retries } = await runJob(spec, rig.runner({ stepMs: 10 }), atFirstStep(() => remountReadOnly(disk)));
    assert.equal(done.job.status, 'failed', `ended ${done.job.status}: ${done.job.message}`);
    assert.match(done.job.message ?? '', /output folder .*images is on a read-only file system, so the image could not be saved: choose another output folder/);
    assert.deepEqual(retries, [], 'a slower plan cannot help: no rerun');
    assertNothingLeft(out);

    // Asked again, the job is refused before anything runs, with the same advice.
    const again = await runJob({ ...spec }, rig.runner({ stepMs: 5 }));
    assert.equal(again.done.job.status, 'failed');
    assert.match(again.done.job.message ?? '', /cannot be written \(EROFS\): choose another output folder/);
    assertNothingLeft(out);
  });

  test('the output folder is deleted while the job samples: it is made again and the image lands there, same plan', async () => {
    const out = join(rig.root, 'deleted-while-sampling');
    const spec = rig.imageSpec('kept', { outputPath: join(out, 'kept.png'), width: 512, height: 512 });
    const { done, retries, messages } = await runJob(
      spec,
      rig.runner({ stepMs: 10 }),
      atFirstStep(() => rmSync(out, { recursive: true })),
    );
    assert.equal(done.job.status, 'done', done.job.message);
    assert.deepEqual(done.outputs, [spec.outputPath]);
    assert.equal(await imageProblem(spec.outputPath, 512, 512), undefined);
    assert.deepEqual(retries, [], 'rerun by the worker with the same plan, not a safer one');
    assert.ok(messages.some((m) => /was deleted while the job ran: made it again/.test(m)), messages.join(' | '));
    assertNothingLeft(out, ['kept.png']);
  });

  test('the output folder is deleted after sd.cpp saved, before the image gets its name: made again, image delivered', async () => {
    const out = join(rig.root, 'deleted-before-rename');
    const spec = rig.imageSpec('late', { outputPath: join(out, 'late.png'), batch: 2 });
    let deleted = false;
    const { done, retries } = await runJob(spec, rig.runner({ stepMs: 5 }), (p) => {
      // The worker checks the images before moving them: the progress event comes first, in the same turn.
      if (!deleted && p.stage === 'saving' && /^checking/.test(p.message ?? '')) {
        deleted = true;
        rmSync(out, { recursive: true });
      }
    });
    assert.ok(deleted);
    assert.equal(done.job.status, 'done', done.job.message);
    const expected = [join(out, 'late_1.png'), join(out, 'late_2.png')];
    assert.deepEqual(done.outputs, expected);
    for (const file of expected) assert.equal(await imageProblem(file, spec.width, spec.height), undefined);
    assert.deepEqual(retries, []);
    assertNothingLeft(out, ['late_1.png', 'late_2.png']);
  });
});
