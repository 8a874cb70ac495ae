import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { GiB } from '../../../sidecar/core/types';
import { describeNoFit, planDegradations, summarisePlan } from '../../../src/planSummary';
import { plan } from './fixtures';

describe('plan summary', () => {
  it('says nothing when everything runs on the GPU', () => {
    assert.deepEqual(planDegradations(plan()), []);
    assert.equal(summarisePlan(plan()), undefined);
  });

  it('names each degradation in plain words with the extra time', () => {
    const p = plan({
      placement: { textEncoder: 'cpu', diffusion: 'gpu', vae: 'gpu', vaeTiling: true, flashAttention: true },
      yields: [{ resident: 'llm', from: 'hot', to: 'warm', frees: 1 * GiB, restoreMs: 300 }],
      extraTimeMs: 1800,
    });
    assert.equal(summarisePlan(p), 'VAE will decode tiled, text encoder will run on the CPU, LLM context dropped (about +1.8 s).');
  });

  it('describes CPU decode, offload, stopped residents and split batches', () => {
    const p = plan({
      placement: { textEncoder: 'gpu', diffusion: 'offload', vae: 'cpu', vaeTiling: false, flashAttention: false },
      yields: [
        { resident: 'llm', from: 'hot', to: 'cold', frees: 5 * GiB, restoreMs: 900 },
        { resident: 'image', from: 'resident', to: 'stopped', frees: 2 * GiB, restoreMs: 3000 },
      ],
      batchPerRun: 1,
    });
    assert.deepEqual(planDegradations(p, 4), [
      'VAE will decode on the CPU',
      'diffusion weights will stream from system RAM',
      'LLM unloaded from the GPU',
      'resident image server stopped',
      'batch runs 1 image at a time',
    ]);
  });

  it('explains a plan that does not fit and what would', () => {
    const text = describeNoFit(plan({ fits: false, peak: 14 * GiB, available: 9 * GiB, reason: 'VAE decode 2048x2048 needs 26 GB', suggestions: ['1024x1024', 'enable tiling'] }));
    assert.equal(text, 'This job does not fit: it needs 14.0 GB at its peak and 9.0 GB can be made free. VAE decode 2048x2048 needs 26 GB. Try: 1024x1024; enable tiling.');
  });
});
