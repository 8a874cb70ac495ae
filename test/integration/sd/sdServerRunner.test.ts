/**
 * The resident sd-server runner against the sd.cpp stand-in serving the native job API on a shared simulated device.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ImageRunResult, StageProgress } from '../../../sidecar/core/ports';
import { GiB, MiB, type ImageJobSpec, type ImagePlacement, type Plan } from '../../../sidecar/core/types';
import { SimulatedDevice } from '../../../sidecar/devices/simulatedDevice';
import { GPU_PLACEMENT } from '../../../sidecar/workers/sd/sdArgs';
import { SdServerRunner } from '../../../sidecar/workers/sd/sdServerRunner';
import { readStandinArgsLog, SDCPP_STANDIN_BIN, sdcppStandinEnv, type SdcppStandinOptions, writeModelFile } from '../../standins/sdcppStandin';
import { processExists } from '../../helpers/processes';

const SERVER_BIN = fileURLToPath(new URL('../../standins/sd-server', import.meta.url));
const root = mkdtempSync(join(tmpdir(), 'vrelay-sdserver-'));
let caseNo = 0;
let model: string;
const runners: SdServerRunner[] = [];

before(async () => {
  model = await writeModelFile(join(root, 'sd15.safetensors'), 2 * GiB);
});
after(async () => {
  await Promise.all(runners.map((r) => r.stopResident()));
  rmSync(root, { recursive: true, force: true });
});

function newCase(capacityMiB: number) {
  const dir = join(root, `case-${++caseNo}`);
  mkdirSync(join(dir, 'out'), { recursive: true });
  const device = SimulatedDevice.createShared(join(dir, 'device'), { capacity: capacityMiB * MiB });
  return { dir, out: join(dir, 'out'), device, argsLog: join(dir, 'args.jsonl') };
}

function runner(c: ReturnType<typeof newCase>, standin: SdcppStandinOptions = {}, binaryPath = SERVER_BIN): SdServerRunner {
  const r = new SdServerRunner({
    binaryPath,
    env: sdcppStandinEnv({ deviceDir: c.device.dir, argsLog: c.argsLog, ...standin }),
    killGraceMs: 1_000,
    pollIntervalMs: 50,
    readyTimeoutMs: 60_000,
  });
  runners.push(r);
  return r;
}

function job(c: ReturnType<typeof newCase>, name: string, over: Partial<ImageJobSpec> = {}): ImageJobSpec {
  return { kind: 'image', modelPath: model, prompt: 'a harbour at night', width: 512, height: 512, batch: 1, steps: 3, seed: 7, outputPath: join(c.out, name), ...over };
}

function plan(placement: Partial<ImagePlacement> = {}): Plan {
  return {
    jobId: 'job',
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
  };
}

async function run(r: SdServerRunner, j: ImageJobSpec, p: Plan, signal?: AbortSignal, onProgress?: (p: StageProgress) => void) {
  const progress: StageProgress[] = [];
  const result: ImageRunResult = await r.run(
    j,
    p,
    (e) => {
      progress.push(e);
      onProgress?.(e);
    },
    signal ?? new AbortController().signal,
  );
  return { result, progress };
}

const failureOf = (result: ImageRunResult) => (result.ok ? 'ok' : result.failure);

describe('SdServerRunner with the sd.cpp stand-in', { timeout: 180_000 }, () => {
  it('keeps one server resident across jobs and gives its memory back when stopped', async () => {
    const c = newCase(8 * 1024);
    const r = runner(c);
    const first = await run(r, job(c, 'one.png'), plan());
    assert.ok(first.result.ok, first.result.ok ? '' : first.result.message);
    assert.deepEqual([...new Set(first.progress.map((p) => p.stage))], ['textEncode', 'diffusion', 'vaeDecode', 'saving']);
    const second = await run(r, job(c, 'two.png', { seed: 8 }), plan());
    assert.ok(second.result.ok);
    assert.ok(second.result.measured.some((b) => b.key === 'vae.compute' && b.bytes === 1664 * MiB));
    assert.equal((await readStandinArgsLog(c.argsLog)).length, 1, 'the second job reused the server');

    const info = r.residentInfo();
    assert.ok(info && info.weightsOnDevice !== undefined && Math.abs(info.weightsOnDevice - 2 * GiB) < MiB);
    assert.ok(Math.abs(c.device.usage() - 2 * GiB) < 8 * MiB, 'only the weights stay on the device between jobs');
    await r.stopResident();
    assert.equal(r.residentInfo(), undefined);
    assert.equal(processExists(info.pid), false);
    assert.equal(c.device.usage(), 0);
    assert.deepEqual(readdirSync(c.out).sort(), ['one.png', 'two.png']);
  });

  it('tiles the decode per request without a restart, and reports oom when the untiled decode does not fit', async () => {
    const c = newCase(3 * 1024);
    const r = runner(c);
    const untiled = await run(r, job(c, 'a.png'), plan());
    assert.equal(failureOf(untiled.result), 'oom');
    assert.equal(untiled.result.ok ? undefined : untiled.result.stage, 'vaeDecode');
    const tiled = await run(r, job(c, 'a.png'), plan({ vaeTiling: true }));
    assert.equal(failureOf(tiled.result), 'ok');
    assert.equal((await readStandinArgsLog(c.argsLog)).length, 1, 'tiling did not need a restart');
    assert.deepEqual(readdirSync(c.out), ['a.png']);
  });

  it('restarts the server when the plan needs other placement flags', async () => {
    const c = newCase(8 * 1024);
    const r = runner(c);
    assert.ok((await run(r, job(c, 'gpu.png'), plan())).result.ok);
    const cpu = await run(r, job(c, 'cpu.png'), plan({ textEncoder: 'cpu', vae: 'cpu' }));
    assert.ok(cpu.result.ok, cpu.result.ok ? '' : cpu.result.message);
    const invocations = await readStandinArgsLog(c.argsLog);
    assert.equal(invocations.length, 2);
    assert.equal(invocations[1].argv[invocations[1].argv.indexOf('--backend') + 1], 'te=cpu,vae=cpu');
    assert.equal(processExists(invocations[0].pid), false, 'the first server was stopped');
  });

  it('cancels a job mid-sampling through the API and writes nothing', async () => {
    const c = newCase(8 * 1024);
    const r = runner(c, { stepMs: 150 });
    const controller = new AbortController();
    const { result } = await run(r, job(c, 'cancelled.png', { steps: 40 }), plan(), controller.signal, (p) => {
      if (p.stage === 'diffusion' && p.step === 2) controller.abort();
    });
    assert.equal(failureOf(result), 'cancelled');
    assert.deepEqual(readdirSync(c.out), []);
  });

  it('reports a server that dies mid-job as crash, and forgets it', async () => {
    const c = newCase(8 * 1024);
    const crashing = runner(c, { crashAt: 'diffusion', crashStep: 1 });
    const { result } = await run(crashing, job(c, 'x.png'), plan());
    assert.equal(failureOf(result), 'crash');
    assert.match(result.ok ? '' : result.message, /134/);
    assert.equal(crashing.residentInfo(), undefined);
    const [invocation] = await readStandinArgsLog(c.argsLog);
    assert.equal(processExists(invocation.pid), false);
    assert.equal(c.device.usage(), 0, 'a dead server holds nothing');
    assert.deepEqual(readdirSync(c.out), []);
  });

  it('reports weights that do not fit at start as oom, and a non-server binary as input', async () => {
    const c = newCase(1024);
    const { result } = await run(runner(c), job(c, 'big.png'), plan());
    assert.equal(failureOf(result), 'oom');
    const notServer = await run(runner(c, {}, SDCPP_STANDIN_BIN), job(c, 'n.png'), plan());
    assert.equal(failureOf(notServer.result), 'input');
    assert.match(notServer.result.ok ? '' : notServer.result.message, /not sd-server/);
  });
});
