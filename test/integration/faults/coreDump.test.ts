/**
 * sd.cpp aborts (a CUDA out-of-memory, a GGML_ASSERT) on a machine where core dumps are on and land in the working
 * folder of the process (`ulimit -c unlimited`, kernel.core_pattern = core): the core file, as large as the process,
 * must not end up among the user's images. The worker runs sd.cpp in a private folder that it removes afterwards.
 */

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test, type TestContext } from 'node:test';
import { GiB } from '../../../sidecar/core/types';
import { bundleSdcppStandin } from '../../standins/sdcppStandinBundle';
import { sdcppStandinEnv } from '../../standins/sdcppStandin';
import { childPids, ImageRig, imageProblem, withTimeout } from './faultRig';

/** Whether an aborted process leaves a core file in its working folder here (checked, not assumed). */
async function coreLandsInWorkingFolder(binary: string, dir: string, model: string): Promise<boolean> {
  let pattern = '';
  try {
    pattern = readFileSync('/proc/sys/kernel/core_pattern', 'utf8').trim();
  } catch {
    return false;
  }
  if (pattern.startsWith('|') || pattern.includes('/')) return false;
  mkdirSync(dir, { recursive: true });
  const child = spawn(binary, ['-m', model, '-p', 'probe', '-W', '64', '-H', '64', '--steps', '100', '-o', join(dir, 'x.png')], {
    cwd: dir,
    env: { ...process.env, ...sdcppStandinEnv({ stepMs: 20 }) },
    stdio: 'ignore',
  });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  await new Promise((resolve) => setTimeout(resolve, 400));
  child.kill('SIGABRT');
  await withTimeout(exited, 20_000, 'the aborted stand-in');
  return readdirSync(dir).some((n) => n.startsWith('core'));
}

describe('an aborted sd.cpp that dumps core', { timeout: 120_000 }, () => {
  let rig: ImageRig;
  let binary: string;

  before(async () => {
    rig = await ImageRig.create({ capacity: 8 * GiB });
    rig.startArbiter();
    binary = await bundleSdcppStandin(join(rig.root, 'core-bin'), { coreDumps: true });
  });

  after(async () => {
    await rig?.dispose();
  });

  test('leaves no core file among the images, and the image still comes', async (t: TestContext) => {
    if (!(await coreLandsInWorkingFolder(binary, join(rig.root, 'core-check'), rig.model))) {
      t.skip('this machine writes no core file into the working folder of an aborted process (core_pattern or limits)');
      return;
    }
    let aborted = false;
    rig.image.current = rig.runner({ stepMs: 20 }, {}, {
      binaryPath: binary,
      onLog: (line) => {
        if (aborted || !/\|\s*2\/\d+ - /.test(line)) return;
        aborted = true;
        process.kill(rig.standinPids().at(-1)!, 'SIGABRT');
      },
    });
    const spec = rig.imageSpec('after-abort', { steps: 6 });
    const job = rig.arbiter.submit(spec);
    const done = await withTimeout(rig.arbiter.waitFor(job.id), 60_000, 'the job');
    assert.ok(aborted, 'sd.cpp was aborted mid-sampling');
    assert.equal(done.job.status, 'done', done.job.message);
    assert.equal(await imageProblem(spec.outputPath, spec.width, spec.height), undefined);
    assert.deepEqual(readdirSync(rig.outDir), ['after-abort.png'], 'no core file among the images');
    assert.deepEqual(rig.tmpEntries(), [], "the run's private folder, core included, is gone");
    assert.ok(!existsSync(join(rig.outDir, 'core')));
    assert.deepEqual(childPids(), []);
  });
});
