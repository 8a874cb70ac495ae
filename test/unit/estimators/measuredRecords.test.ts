import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { MeasuredEvent } from '../../../sidecar/core/arbiter';
import { CalibrationStore } from '../../../sidecar/core/calibration';
import { estimateImageJob } from '../../../sidecar/core/estimators/imageEstimator';
import { estimateLlm } from '../../../sidecar/core/estimators/llmEstimator';
import { recordsFromMeasured } from '../../../sidecar/core/estimators/measuredRecords';
import type { ImageJobSpec, ImagePlacement, JobInfo, LlmJobSpec, Plan } from '../../../sidecar/core/types';
import { sd15Fp16, sevenBQ4KM } from './publishedModels';

const model = sd15Fp16();
const onGpu: ImagePlacement = { textEncoder: 'gpu', diffusion: 'gpu', vae: 'gpu', vaeTiling: false, flashAttention: false };

function imageEvent(width: number, height: number, buffers: MeasuredEvent['buffers']): MeasuredEvent {
  const spec: ImageJobSpec = { kind: 'image', modelPath: model.modelPath, prompt: 'p', width, height, batch: 1, steps: 20, seed: 1, outputPath: '/w/a.png' };
  const job: JobInfo = { id: 'job-1', spec, priority: 'normal', status: 'done', submittedAt: 0, attempt: 1 };
  const plan = { placement: onGpu } as Plan;
  return { job, plan, buffers };
}

describe('recordsFromMeasured', () => {
  it('stores each image buffer beside the prior, not the calibrated figure the plan used', () => {
    const size = { width: 512, height: 512, batch: 1, frames: 1, steps: 20 };
    const prior = estimateImageJob(model, size, { backend: 'cuda' });
    // A store that already corrects the diffusion figure: the plan's estimate differs from the prior.
    const store = new CalibrationStore();
    store.addAll(recordsFromMeasured(imageEvent(768, 768, [{ key: 'diffusion.compute', bytes: prior.compute.diffusion * 3, where: 'gpu' }]), { backend: 'cuda', at: 1, imageModel: model }));
    const planned = estimateImageJob(model, size, { backend: 'cuda', calibration: store });
    assert.notEqual(planned.compute.diffusion, prior.compute.diffusion);

    const measured = [
      { key: 'diffusion.compute', bytes: 900e6, where: 'gpu' as const },
      { key: 'vae.compute', bytes: 1700e6, where: 'gpu' as const },
    ];
    const records = recordsFromMeasured(imageEvent(512, 512, measured), { backend: 'cuda', at: 2, imageModel: model });
    assert.deepEqual(
      records.map((r) => [r.key, r.setting, r.value, r.estimate]),
      [
        ['diffusion.compute', '512x512', 900e6, prior.compute.diffusion],
        ['vae.compute', '512x512', 1700e6, prior.compute.vaeDecode],
      ],
    );
  });

  it('lets a measurement at one size correct the prior at another size by measured/prior', () => {
    const at512 = estimateImageJob(model, { width: 512, height: 512, batch: 1, frames: 1, steps: 20 }, { backend: 'cuda' });
    const store = new CalibrationStore();
    store.addAll(
      recordsFromMeasured(imageEvent(512, 512, [{ key: 'diffusion.compute', bytes: Math.round(at512.compute.diffusion * 1.25), where: 'gpu' }]), {
        backend: 'cuda',
        at: 1,
        imageModel: model,
      }),
    );
    const size = { width: 1024, height: 1024, batch: 1, frames: 1, steps: 20 };
    const prior = estimateImageJob(model, size, { backend: 'cuda' }).compute.diffusion;
    const corrected = estimateImageJob(model, size, { backend: 'cuda', calibration: store }).compute.diffusion;
    assert.ok(Math.abs(corrected / prior - 1.25) < 0.001, `corrected ${corrected} vs prior ${prior}`);
  });

  it('stores image buffers without an estimate when the model header could not be read', () => {
    const records = recordsFromMeasured(imageEvent(512, 512, [{ key: 'vae.compute', bytes: 1e9, where: 'gpu' }]), { backend: 'cuda', at: 1 });
    assert.equal(records.length, 1);
    assert.equal(records[0].estimate, undefined);
  });

  it('stores LLM buffers beside the prior for the same layers and context', () => {
    const meta = sevenBQ4KM();
    const planned = estimateLlm(meta, { gpuLayers: 20, contextSize: 8192, kvType: 'f16', backend: 'cuda' });
    const spec: LlmJobSpec = { kind: 'llm', task: 'chat', contextSize: 8192, prompt: 'hi', maxTokens: 8 };
    const job: JobInfo = { id: 'job-2', spec, priority: 'interactive', status: 'done', submittedAt: 0, attempt: 1 };
    const event: MeasuredEvent = { job, buffers: [{ key: 'llm.kv', bytes: 600e6, where: 'gpu' }] };
    const records = recordsFromMeasured(event, { backend: 'cuda', at: 1, llm: { costs: { ...planned, kvCache: 1 }, meta } });
    assert.equal(records.length, 1);
    assert.equal(records[0].estimate, planned.kvCache);
    assert.deepEqual(recordsFromMeasured(event, { backend: 'cuda', at: 1 }), []);
  });
});
