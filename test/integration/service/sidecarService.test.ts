/**
 * The real service in-process: the simulated shared device, the sd.cpp stand-in as the image engine and the real
 * node-llama-cpp on a tiny random-weight model, driven through the SidecarApi as a client would.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { SidecarApi, SidecarNotificationMethod } from '../../../sidecar/api';
import type { ImageJobSpec, LlmJobSpec } from '../../../sidecar/core/types';
import { GiB } from '../../../sidecar/core/types';
import { SimulatedDevice } from '../../../sidecar/devices/simulatedDevice';
import type { SidecarSettings } from '../../../sidecar/protocol';
import { createSidecarService } from '../../../sidecar/service';
import { writeLlamaGguf } from '../../helpers/ggufWriter';
import { SDCPP_STANDIN_BIN, sdcppStandinEnv } from '../../standins/sdcppStandin';
import { SD1_UNET, clipTextTensors, klVaeTensors, unetTensors, writeSafetensors } from '../../unit/models/imageCheckpoints';

const WAIT_MS = 120_000;

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
    }),
  ]);
}

describe('sidecar service (simulated device, sd.cpp stand-in, node-llama-cpp)', { timeout: 300_000 }, () => {
  let dir: string;
  let service: SidecarApi;
  let settings: SidecarSettings;
  const savedEnv: Record<string, string | undefined> = {};
  const notifications: SidecarNotificationMethod[] = [];
  const logs: string[] = [];

  const imageSpec = (name: string, size = 512): ImageJobSpec => ({
    kind: 'image',
    modelPath: join(dir, 'models', 'sd15.safetensors'),
    prompt: 'a lighthouse at sunset',
    width: size,
    height: size,
    batch: 1,
    steps: 4,
    seed: 42,
    outputPath: join(dir, 'out', `${name}.png`),
  });

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vram-relay-service-'));
    const deviceDir = join(dir, 'device');
    await mkdir(deviceDir);
    await mkdir(join(dir, 'models'));
    await mkdir(join(dir, 'out'));
    SimulatedDevice.createShared(deviceDir, { capacity: 12 * GiB });
    // The service and the stand-in it starts both read the shared device from the environment.
    for (const [key, value] of Object.entries(sdcppStandinEnv({ deviceDir, stepMs: 10 }))) {
      savedEnv[key] = process.env[key];
      process.env[key] = value;
    }
    await writeLlamaGguf(join(dir, 'models', 'tiny-llama.gguf'));
    await writeSafetensors(join(dir, 'models', 'sd15.safetensors'), [
      ...unetTensors('model.diffusion_model.', SD1_UNET),
      ...clipTextTensors('cond_stage_model.transformer.text_model.'),
      ...klVaeTensors('first_stage_model.', 4),
      { name: 'alphas_cumprod', shape: [1000] },
    ]);
    settings = {
      device: 'simulated',
      simulatedCapacityMiB: 12 * 1024,
      safetyMarginMiB: 512,
      pollIntervalMs: 200,
      llm: { modelPath: join(dir, 'models', 'tiny-llama.gguf'), engine: 'embedded', serverPath: '', contextSize: 256, idleWarmSeconds: 0, idleColdSeconds: 0 },
      image: { binaryPath: SDCPP_STANDIN_BIN, modelPath: join(dir, 'models', 'sd15.safetensors'), keepResident: false },
      storageDir: join(dir, 'storage'),
      allowBinaries: true,
    };
    service = createSidecarService({ log: (level, message) => logs.push(`[${level}] ${message}`) });
    service.onNotification((method) => notifications.push(method));
    const result = await withTimeout(service.configure(settings), WAIT_MS, 'configure');
    assert.equal(result.applied, true);
  });

  after(async () => {
    await service?.dispose();
    for (const [key, value] of Object.entries(savedEnv)) {
      if (value === undefined) delete process.env[key];
      else process.env[key] = value;
    }
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test('the snapshot shows the simulated device, its effective free memory and a breakdown', async () => {
    const snapshot = await service.getSnapshot();
    assert.equal(snapshot.deviceSource, 'simulated');
    assert.equal(snapshot.devices.length, 1);
    const device = snapshot.devices[0]!;
    assert.equal(device.total, 12 * GiB);
    assert.ok(snapshot.effectiveFree[device.id]! > 0);
    const kinds = snapshot.breakdown[device.id]!.map((p) => p.kind);
    assert.ok(kinds.includes('free') && kinds.includes('margin'), `breakdown kinds: ${kinds.join(', ')}`);
  });

  test('previewPlan of a 1024x1024 image gives a plan that fits', async () => {
    const plan = await withTimeout(service.previewPlan({ spec: imageSpec('preview', 1024) }), WAIT_MS, 'previewPlan');
    assert.equal(plan.fits, true, plan.reason);
    assert.ok(plan.peak > 0);
    assert.ok(plan.stages.length > 0);
    // The extension previews before it has picked where the image goes.
    const withoutOutput = await withTimeout(service.previewPlan({ spec: { ...imageSpec('preview', 1024), outputPath: '' } }), WAIT_MS, 'previewPlan');
    assert.equal(withoutOutput.fits, true, withoutOutput.reason);
  });

  test('an image job ends done with a PNG at the output path', async () => {
    const spec = imageSpec('lighthouse');
    const { jobId } = await service.submitJob({ spec });
    const done = await withTimeout(service.waitJob({ jobId }), WAIT_MS, 'image job');
    assert.equal(done.job.status, 'done', done.job.message);
    assert.deepEqual(done.outputs, [spec.outputPath]);
    assert.deepEqual([...readFileSync(spec.outputPath).subarray(1, 4)], [...Buffer.from('PNG')]);
    assert.ok(notifications.includes('vramRelay/jobDone'));
    assert.ok(notifications.includes('vramRelay/decision'));
    const decisions = await service.getDecisions({ jobId });
    assert.ok(decisions.some((d) => d.kind === 'plan'));
  });

  test('an enhancePrompt LLM job answers with text', async () => {
    const spec: LlmJobSpec = { kind: 'llm', task: 'enhancePrompt', contextSize: 256, prompt: 'a lighthouse', maxTokens: 8, temperature: 0 };
    const { jobId } = await service.submitJob({ spec });
    const done = await withTimeout(service.waitJob({ jobId }), WAIT_MS, 'LLM job');
    assert.equal(done.job.status, 'done', done.job.message);
    assert.equal(typeof done.text, 'string');
    assert.ok(done.text!.length > 0);
    const snapshot = await service.getSnapshot();
    assert.equal(snapshot.llm.state, 'hot');
  });

  test('waitJob gives up when its signal aborts, and the job goes on', async () => {
    const { jobId } = await service.submitJob({ spec: imageSpec('aborted-wait') });
    const controller = new AbortController();
    const waiting = service.waitJob({ jobId }, controller.signal);
    controller.abort();
    await assert.rejects(waiting, /cancelled/);
    const done = await withTimeout(service.waitJob({ jobId }), WAIT_MS, 'image job');
    assert.equal(done.job.status, 'done', done.job.message);
  });

  test('a missing sd.cpp binary fails the job with a message that says what to set', async () => {
    await withTimeout(service.configure({ ...settings, image: { ...settings.image, binaryPath: join(dir, 'no-such-sd-cli') } }), WAIT_MS, 'configure');
    const { jobId } = await service.submitJob({ spec: imageSpec('no-binary') });
    const done = await withTimeout(service.waitJob({ jobId }), WAIT_MS, 'image job');
    assert.equal(done.job.status, 'failed');
    assert.match(done.job.message ?? '', /not found.*vramRelay\.image\.binaryPath/);
    assert.equal(existsSync(imageSpec('no-binary').outputPath), false);
  });
});
