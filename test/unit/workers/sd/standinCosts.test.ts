/** The stand-in's memory figures must stay the published sd.cpp ones (memory-facts.md). */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { MiB } from '../../../../sidecar/core/types';
import {
  diffusionComputeBytes,
  type StandinRun,
  vaeDecodeBytes,
  weightBytes,
} from '../../../standins/sdcppStandinCosts';

const base: StandinRun = {
  family: 'sd1',
  width: 512,
  height: 512,
  frames: 1,
  vaeTiling: false,
  temporalTiling: false,
  vaeConvDirect: false,
  flashAttention: false,
};

describe('sd.cpp stand-in figures', () => {
  it('decodes with 1664 MB at 512x512 and 6656 MB at 1024x1024 (linear in pixels)', () => {
    assert.equal(vaeDecodeBytes(base) / MiB, 1664);
    assert.equal(vaeDecodeBytes({ ...base, width: 1024, height: 1024 }) / MiB, 6656);
  });

  it('keeps a tiled decode constant whatever the size', () => {
    const small = vaeDecodeBytes({ ...base, vaeTiling: true });
    const large = vaeDecodeBytes({ ...base, width: 2048, height: 1536, vaeTiling: true });
    assert.equal(small, large);
    assert.equal(small / MiB, 416);
  });

  it('decodes a video in temporal tiles of 4 frames', () => {
    const video = { ...base, family: 'wan' as const, width: 512, height: 768, frames: 33 };
    assert.ok(Math.abs(vaeDecodeBytes(video) / MiB - 19349.82) < 1, 'the Wan 512x768x33 figure');
    assert.ok(Math.abs(vaeDecodeBytes({ ...video, temporalTiling: true }) * 33 - vaeDecodeBytes(video) * 4) < 33 * 4);
  });

  it('saves diffusion memory with flash attention, more at higher resolution', () => {
    const saved512 = diffusionComputeBytes(base) - diffusionComputeBytes({ ...base, flashAttention: true });
    const saved768 = diffusionComputeBytes({ ...base, width: 768, height: 768 }) - diffusionComputeBytes({ ...base, width: 768, height: 768, flashAttention: true });
    assert.ok(saved512 > 400 * MiB && saved768 > saved512 && saved768 < 1400 * MiB);
  });

  it('splits a checkpoint in the logged SD1.5 proportions and lets split files replace parts', () => {
    const checkpoint = Math.round(1969.78 * MiB);
    const w = weightBytes('sd1', { checkpoint });
    assert.ok(Math.abs(w.te / MiB - 235.06) < 0.01 && Math.abs(w.vae / MiB - 94.47) < 0.01);
    assert.equal(w.te + w.diffusion + w.vae, checkpoint);
    const split = weightBytes('flux', { diffusion: 100, te: 30, vae: 7 });
    assert.deepEqual(split, { te: 30, diffusion: 100, vae: 7 });
  });
});
