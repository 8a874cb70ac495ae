/**
 * The sd-cli runner against the sd.cpp stand-in on a shared simulated device: real child processes, real PNGs,
 * real allocations that fail when they do not fit.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ImageRunResult, StageProgress } from '../../../sidecar/core/ports';
import { GiB, MiB, type ImageJobSpec, type ImagePlacement, type Plan } from '../../../sidecar/core/types';
import { SimulatedDevice } from '../../../sidecar/devices/simulatedDevice';
import { GPU_PLACEMENT } from '../../../sidecar/workers/sd/sdArgs';
import { SdCliRunner } from '../../../sidecar/workers/sd/sdCliRunner';
import {
  readStandinArgsLog,
  SDCPP_STANDIN_BIN,
  SDCPP_STANDIN_OLD_BIN,
  sdcppStandinEnv,
  type SdcppStandinOptions,
  writeModelFile,
} from '../../standins/sdcppStandin';
import { VAE_BYTES_PER_PIXEL } from '../../standins/sdcppStandinCosts';
import { processExists } from '../../helpers/processes';

const root = mkdtempSync(join(tmpdir(), 'vrelay-sdcli-'));
let caseNo = 0;
/** SD1.5-sized checkpoint: 2 GiB of weights split as sd.cpp logs them. */
let model: string;

before(async () => {
  model = await writeModelFile(join(root, 'sd15.safetensors'), 2 * GiB);
});
after(() => rmSync(root, { recursive: true, force: true }));

interface Case {
  dir: string;
  out: string;
  device: SimulatedDevice;
  argsLog: string;
}

/** A fresh output folder and shared device of `capacityMiB`. */
function newCase(capacityMiB: number): Case {
  const dir = join(root, `case-${++caseNo}`);
  mkdirSync(join(dir, 'out'), { recursive: true });
  const device = SimulatedDevice.createShared(join(dir, 'device'), { capacity: capacityMiB * MiB });
  return { dir, out: join(dir, 'out'), device, argsLog: join(dir, 'args.jsonl') };
}

function runner(c: Case, standin: SdcppStandinOptions = {}, extra: { binary?: string; hangTimeoutMs?: number } = {}): SdCliRunner {
  return new SdCliRunner({
    binaryPath: extra.binary ?? SDCPP_STANDIN_BIN,
    env: sdcppStandinEnv({ deviceDir: c.device.dir, argsLog: c.argsLog, ...standin }),
    hangTimeoutMs: extra.hangTimeoutMs ?? 60_000,
    killGraceMs: 1_000,
  });
}

function jobIn(c: Case, over: Partial<ImageJobSpec> = {}): ImageJobSpec {
  return {
    kind: 'image',
    modelPath: model,
    prompt: 'a red bicycle',
    width: 512,
    height: 512,
    batch: 1,
    steps: 4,
    seed: 1234,
    outputPath: join(c.out, 'bicycle.png'),
    ...over,
  };
}

function plan(placement: Partial<ImagePlacement> = {}, batchPerRun?: number): Plan {
  return {
    jobId: `job-${caseNo}`,
    deviceId: 'sim:0',
    fits: true,
    placement: { ...GPU_PLACEMENT, ...placement },
    yields: [],
    stages: [],
    peak: 0,
    available: 0,
    extraTimeMs: 0,
    reason: 'test',
    suggestions: [],
    ...(batchPerRun !== undefined ? { batchPerRun } : {}),
  };
}

async function run(
  r: SdCliRunner,
  job: ImageJobSpec,
  p: Plan,
  options: { signal?: AbortSignal; onProgress?: (p: StageProgress) => void } = {},
): Promise<{ result: ImageRunResult; progress: StageProgress[] }> {
  const progress: StageProgress[] = [];
  const result = await r.run(
    job,
    p,
    (e) => {
      progress.push(e);
      options.onProgress?.(e);
    },
    options.signal ?? new AbortController().signal,
  );
  return { result, progress };
}

const files = (dir: string) => readdirSync(dir).sort();
const failureOf = (result: ImageRunResult) => (result.ok ? 'ok' : result.failure);

describe('SdCliRunner with the sd.cpp stand-in', { timeout: 240_000 }, () => {
  it('writes the image when the plan fits, reporting stages, steps and measured buffers', async () => {
    const c = newCase(8 * 1024);
    const { result, progress } = await run(runner(c), jobIn(c), plan());
    assert.equal(failureOf(result), 'ok', result.ok ? '' : result.message);
    assert.ok(result.ok);
    assert.deepEqual(result.outputs, [join(c.out, 'bicycle.png')]);
    assert.deepEqual(files(c.out), ['bicycle.png'], 'no temporary file is left');

    const stages = [...new Set(progress.map((p) => p.stage))];
    assert.deepEqual(stages, ['textEncode', 'diffusion', 'vaeDecode', 'saving']);
    const steps = progress.filter((p) => p.stage === 'diffusion' && (p.step ?? 0) > 0).map((p) => `${p.step}/${p.totalSteps}`);
    assert.deepEqual(steps, ['1/4', '2/4', '3/4', '4/4']);

    const vae = result.measured.find((b) => b.key === 'vae.compute');
    assert.deepEqual(vae, { key: 'vae.compute', bytes: 512 * 512 * VAE_BYTES_PER_PIXEL, where: 'gpu' });
    const weights = result.measured.find((b) => b.key === 'total.weights' && b.where === 'gpu');
    assert.ok(weights && Math.abs(weights.bytes - 2 * GiB) < MiB, `weights measured ${weights?.bytes}`);
    assert.ok(result.measured.some((b) => b.key === 'diffusion.compute' && b.where === 'gpu'));
    assert.equal(c.device.usage(), 0, 'the stand-in gave its memory back when it exited');
  });

  it('gives the same image for the same seed', async () => {
    const c = newCase(8 * 1024);
    const r = runner(c);
    const a = await run(r, jobIn(c, { outputPath: join(c.out, 'a.png') }), plan());
    const b = await run(r, jobIn(c, { outputPath: join(c.out, 'b.png') }), plan());
    const other = await run(r, jobIn(c, { outputPath: join(c.out, 'c.png'), seed: 99 }), plan());
    assert.ok(a.result.ok && b.result.ok && other.result.ok);
    assert.ok(readFileSync(join(c.out, 'a.png')).equals(readFileSync(join(c.out, 'b.png'))));
    assert.ok(!readFileSync(join(c.out, 'a.png')).equals(readFileSync(join(c.out, 'c.png'))));
  });

  it('reports oom when the VAE decode does not fit (current builds), and leaves no file', async () => {
    const c = newCase(3 * 1024); // 2 GiB of weights + 1664 MiB decode > 3 GiB
    const { result } = await run(runner(c), jobIn(c), plan());
    assert.equal(failureOf(result), 'oom');
    assert.ok(!result.ok);
    assert.equal(result.stage, 'vaeDecode');
    assert.match(result.message, /out of memory during the VAE decode/);
    // The size the refused decode asked for is measured too (from the driver's refusal line).
    assert.deepEqual(result.measured.find((b) => b.key === 'vae.compute'), { key: 'vae.compute', bytes: 1664 * MiB, where: 'gpu' });
    assert.ok(result.measured.some((b) => b.key === 'diffusion.compute'), 'buffers measured before the failure are kept');
    assert.deepEqual(files(c.out), []);
  });

  it('succeeds on the same device once the plan tiles the decode', async () => {
    const c = newCase(3 * 1024);
    const { result } = await run(runner(c), jobIn(c), plan({ vaeTiling: true }));
    assert.equal(failureOf(result), 'ok');
    assert.ok(result.ok);
    const vae = result.measured.find((b) => b.key === 'vae.compute');
    assert.equal(vae?.bytes, 256 * 256 * VAE_BYTES_PER_PIXEL);
    const [invocation] = await readStandinArgsLog(c.argsLog);
    assert.ok(invocation.argv.includes('--vae-tiling'));
  });

  it('detects the gray image of an old build that logs success, and keeps nothing', async () => {
    const c = newCase(3 * 1024);
    const { result } = await run(runner(c, {}, { binary: SDCPP_STANDIN_OLD_BIN }), jobIn(c), plan());
    assert.equal(failureOf(result), 'blank');
    assert.ok(!result.ok);
    assert.match(result.message, /uniform gray/);
    assert.equal(result.stage, 'vaeDecode');
    assert.deepEqual(files(c.out), [], 'the gray square is neither at the final path nor left as a temporary file');
  });

  it('calls the gray image of an old build that logged the allocation error an oom', async () => {
    const c = newCase(3 * 1024);
    const { result } = await run(runner(c, { oldLogsAllocError: true }, { binary: SDCPP_STANDIN_OLD_BIN }), jobIn(c), plan());
    assert.equal(failureOf(result), 'oom');
    assert.deepEqual(files(c.out), []);
  });

  it('uses the legacy CPU flags on an old build and the --backend form on a current one', async () => {
    const oldCase = newCase(3 * 1024);
    const placement = { textEncoder: 'cpu' as const, vae: 'cpu' as const };
    const old = await run(runner(oldCase, {}, { binary: SDCPP_STANDIN_OLD_BIN }), jobIn(oldCase), plan(placement));
    assert.equal(failureOf(old.result), 'ok', old.result.ok ? '' : old.result.message);
    const [oldArgs] = await readStandinArgsLog(oldCase.argsLog);
    assert.ok(oldArgs.argv.includes('--clip-on-cpu') && oldArgs.argv.includes('--vae-on-cpu'));
    assert.ok(old.result.ok && old.result.measured.some((b) => b.key === 'vae.compute' && b.where === 'cpu'));

    const newCaseDir = newCase(3 * 1024);
    const current = await run(runner(newCaseDir), jobIn(newCaseDir), plan(placement));
    assert.equal(failureOf(current.result), 'ok');
    const [newArgs] = await readStandinArgsLog(newCaseDir.argsLog);
    assert.equal(newArgs.argv[newArgs.argv.indexOf('--backend') + 1], 'te=cpu,vae=cpu');
    assert.equal(newArgs.argv[newArgs.argv.indexOf('--auto-fit') + 1], 'off');
  });

  it('refuses a placement the binary does not support, as input', async () => {
    const c = newCase(8 * 1024);
    const { result } = await run(runner(c, {}, { binary: SDCPP_STANDIN_OLD_BIN }), jobIn(c), plan({ diffusion: 'offload' }));
    assert.equal(failureOf(result), 'input');
    assert.match(result.ok ? '' : result.message, /--offload-to-cpu/);
  });

  it('reports a CUDA out-of-memory abort (exit 134) as oom', async () => {
    const c = newCase(3 * 1024);
    const { result } = await run(runner(c, { oom: 'abort' }), jobIn(c), plan());
    assert.equal(failureOf(result), 'oom');
    assert.match(result.ok ? '' : result.message, /exited with code 134/);
    assert.deepEqual(files(c.out), []);
  });

  it('reports a crash mid-sampling (exit 134) as crash, with no files left', async () => {
    const c = newCase(8 * 1024);
    const { result } = await run(runner(c, { crashAt: 'diffusion', crashStep: 2 }), jobIn(c), plan());
    assert.equal(failureOf(result), 'crash');
    assert.ok(!result.ok);
    assert.equal(result.stage, 'diffusion');
    assert.match(result.message, /exited with code 134/);
    assert.deepEqual(files(c.out), []);
  });

  it('reports a process killed by a signal while writing as crash, and removes the half-written file', async () => {
    const c = newCase(8 * 1024);
    const { result } = await run(runner(c, { crashAt: 'save', crashMode: 'kill' }), jobIn(c), plan());
    assert.equal(failureOf(result), 'crash');
    assert.match(result.ok ? '' : result.message, /SIGKILL/);
    assert.deepEqual(files(c.out), []);
  });

  it('stops a hung process after the timeout and reports crash', async () => {
    const c = newCase(8 * 1024);
    const { result } = await run(runner(c, { hangAt: 'vaeDecode' }, { hangTimeoutMs: 1_500 }), jobIn(c), plan());
    assert.equal(failureOf(result), 'crash');
    assert.match(result.ok ? '' : result.message, /hung/);
    const [invocation] = await readStandinArgsLog(c.argsLog);
    assert.equal(processExists(invocation.pid), false, 'the hung process was killed');
    assert.deepEqual(files(c.out), []);
  });

  it('cancels mid-sampling: kills the process and writes nothing', async () => {
    const c = newCase(8 * 1024);
    const controller = new AbortController();
    const { result, progress } = await run(runner(c, { stepMs: 200 }), jobIn(c, { steps: 30 }), plan(), {
      signal: controller.signal,
      onProgress: (p) => {
        if (p.stage === 'diffusion' && p.step === 2) controller.abort();
      },
    });
    assert.equal(failureOf(result), 'cancelled');
    assert.ok(!progress.some((p) => p.stage === 'vaeDecode'));
    const [invocation] = await readStandinArgsLog(c.argsLog);
    assert.equal(processExists(invocation.pid), false);
    assert.deepEqual(files(c.out), []);
    assert.equal(c.device.usage(), 0, 'the killed process holds no memory');
  });

  it('does not start when already cancelled', async () => {
    const c = newCase(8 * 1024);
    const controller = new AbortController();
    controller.abort();
    const { result } = await run(runner(c), jobIn(c), plan(), { signal: controller.signal });
    assert.equal(failureOf(result), 'cancelled');
    assert.deepEqual(await readStandinArgsLog(c.argsLog), []);
  });

  it('reports an fp16 NaN black image as nan, not a memory failure', async () => {
    const c = newCase(8 * 1024);
    const { result } = await run(runner(c, { nan: true }), jobIn(c), plan());
    assert.equal(failureOf(result), 'nan');
    assert.match(result.ok ? '' : result.message, /fp16/);
    assert.deepEqual(files(c.out), []);
  });

  it('checks and names every image of a batch (current and old numbering)', async () => {
    const c = newCase(8 * 1024);
    const current = await run(runner(c), jobIn(c, { batch: 3, outputPath: join(c.out, 'set.png') }), plan());
    assert.ok(current.result.ok, current.result.ok ? '' : current.result.message);
    assert.deepEqual(current.result.outputs, [1, 2, 3].map((i) => join(c.out, `set_${i}.png`)));
    const old = await run(runner(c, {}, { binary: SDCPP_STANDIN_OLD_BIN }), jobIn(c, { batch: 2, outputPath: join(c.out, 'old.png') }), plan());
    assert.ok(old.result.ok, old.result.ok ? '' : old.result.message);
    assert.deepEqual(old.result.outputs, [join(c.out, 'old_1.png'), join(c.out, 'old_2.png')]);
    assert.ok(!readFileSync(join(c.out, 'set_1.png')).equals(readFileSync(join(c.out, 'set_2.png'))));
    assert.deepEqual(files(c.out), ['old_1.png', 'old_2.png', 'set_1.png', 'set_2.png', 'set_3.png']);
  });

  it('runs a batch image by image when the plan says so, with the same images', async () => {
    const c = newCase(8 * 1024);
    const r = runner(c);
    const together = await run(r, jobIn(c, { batch: 3, outputPath: join(c.out, 'together.png') }), plan());
    const apart = await run(r, jobIn(c, { batch: 3, outputPath: join(c.out, 'apart.png') }), plan({}, 1));
    assert.ok(together.result.ok && apart.result.ok);
    const invocations = await readStandinArgsLog(c.argsLog);
    assert.deepEqual(
      invocations.slice(1).map((i) => [i.argv[i.argv.indexOf('-b') + 1], i.argv[i.argv.indexOf('-s') + 1]]),
      [['1', '1234'], ['1', '1235'], ['1', '1236']],
    );
    for (const i of [1, 2, 3]) {
      assert.ok(readFileSync(join(c.out, `together_${i}.png`)).equals(readFileSync(join(c.out, `apart_${i}.png`))), `image ${i}`);
    }
    assert.ok(apart.progress.some((p) => /run 2\/3/.test(p.message ?? '')));
  });

  it('generates video frames with vid_gen and temporal tiling', async () => {
    const c = newCase(16 * 1024);
    const { result } = await run(runner(c), jobIn(c, { frames: 5, width: 256, height: 256, outputPath: join(c.out, 'clip.png') }), plan({ vaeTiling: true }));
    assert.ok(result.ok, result.ok ? '' : result.message);
    assert.deepEqual(result.outputs, [1, 2, 3, 4, 5].map((i) => join(c.out, `clip_${String(i).padStart(3, '0')}.png`)));
    const [invocation] = await readStandinArgsLog(c.argsLog);
    assert.ok(invocation.argv.includes('vid_gen') && invocation.argv.includes('--temporal-tiling'));
  });

  it('says what to do when the binary is missing, is not sd.cpp, or the model is missing', async () => {
    const c = newCase(8 * 1024);
    const missingBinary = await run(new SdCliRunner({ binaryPath: join(c.dir, 'no-such-sd-cli') }), jobIn(c), plan());
    assert.equal(failureOf(missingBinary.result), 'input');
    assert.match(missingBinary.result.ok ? '' : missingBinary.result.message, /was not found.*vramRelay\.image\.binaryPath/);

    const notSd = await run(new SdCliRunner({ binaryPath: process.execPath }), jobIn(c), plan());
    assert.equal(failureOf(notSd.result), 'input');
    assert.match(notSd.result.ok ? '' : notSd.result.message, /does not look like stable-diffusion\.cpp \(sd-cli\)/);

    const missingModel = await run(runner(c), jobIn(c, { modelPath: join(c.dir, 'nothing.safetensors') }), plan());
    assert.equal(failureOf(missingModel.result), 'input');
    assert.match(missingModel.result.ok ? '' : missingModel.result.message, /does not exist: set vramRelay\.image\.modelPath/);
    assert.deepEqual(files(c.out), []);
  });
});
