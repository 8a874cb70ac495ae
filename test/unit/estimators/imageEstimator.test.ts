import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CalibrationStore, type CalibrationRecord } from '../../../sidecar/core/calibration';
import {
  COMFY_VAE_DECODE_FACTOR,
  LOG_MB,
  PCIE4_BYTES_PER_MS,
  SD15_IN_USE_512,
  SDCPP_LOGGED_DIFFUSION_BUFFERS,
} from '../../../sidecar/core/estimators/figures';
import {
  diffusionActivation,
  estimateImageJob,
  familyModel,
  latentSize,
  tileCoverage,
  tilesAlong,
  unetConvolutionBytesPerLatentPixel,
  vaeAttentionBytes,
  vaeDecodeBytes,
  vaeDecodeBytesPerPixel,
  type ImageBackend,
  type ImageJobSize,
} from '../../../sidecar/core/estimators/imageEstimator';
import { MiB, type ImageModelFamily } from '../../../sidecar/core/types';
import type { ImageModelInfo } from '../../../sidecar/models/imageModelInfo';

function within(actual: number, expected: number, fraction: number, what: string): void {
  assert.ok(Math.abs(actual - expected) <= expected * fraction, `${what}: ${(actual / MiB).toFixed(2)} MiB not within ${fraction * 100}% of ${(expected / MiB).toFixed(2)} MiB`);
}

const square = (size: number, extra: Partial<ImageJobSize> = {}): ImageJobSize => ({ width: size, height: size, batch: 1, frames: 1, ...extra });
const costsOf = (family: ImageModelFamily, size: number, backend: ImageBackend = 'cuda', extra: Partial<ImageJobSize> = {}, convDirect = false) =>
  estimateImageJob(familyModel(family), square(size, extra), { backend, vaeConvDirect: convDirect });

describe('VAE decode (memory-facts.md:9-20)', () => {
  it('derives 6656 B/px with im2col and 2560 B/px with direct convolutions from the decoder shapes', () => {
    // The first full-resolution resnet: its 256-channel input and normalised input (f32), plus the im2col matrix
    // (256 * 9 values, f16) or the direct convolution's 128-channel output (f32).
    assert.equal(vaeDecodeBytesPerPixel('im2col'), 256 * 4 + 256 * 4 + 256 * 9 * 2);
    assert.equal(vaeDecodeBytesPerPixel('im2col'), 6656);
    assert.equal(vaeDecodeBytesPerPixel('direct'), 256 * 4 + 256 * 4 + 128 * 4);
    assert.equal(vaeDecodeBytesPerPixel('direct'), 2560);
    // A narrower decoder peaks lower: the figure follows the shapes, not a table.
    assert.ok(vaeDecodeBytesPerPixel('im2col', { baseChannels: 64, channelMult: [1, 2, 4, 4], resnetsPerLevel: 3, kernel: 3 }) < 6656 / 1.9);
  });

  it('SD1.5 512x512 on CUDA: 1664 MB; SDXL 1024x1024: 6656.25 MB (memory-facts.md:9-10)', () => {
    within(costsOf('sd1', 512).compute.vaeDecode, 1664 * LOG_MB, 0.001, 'SD1.5 512');
    within(costsOf('sdxl', 1024).compute.vaeDecode, 6656.25 * LOG_MB, 0.001, 'SDXL 1024');
  });

  it('Vulkan convolves directly: SDXL 1024x1024 2560.25 MB (memory-facts.md:12); --vae-conv-direct asks for it anywhere', () => {
    within(costsOf('sdxl', 1024, 'vulkan').compute.vaeDecode, 2560.25 * LOG_MB, 0.001, 'SDXL Vulkan');
    assert.equal(costsOf('sd1', 1024, 'cuda', {}, true).compute.vaeDecode, costsOf('sd1', 1024, 'vulkan').compute.vaeDecode);
    assert.equal(costsOf('sd1', 1024, 'vulkan', {}, true).compute.vaeDecode, 2560 * MiB);
  });

  it('is linear in W*H up to the sizes where the middle attention (quadratic) takes over', () => {
    const cuda = (width: number, height: number) => vaeDecodeBytes(width * height, 'cuda');
    assert.equal(cuda(1024, 1024), 4 * cuda(512, 512));
    assert.equal(cuda(2048, 2048), 16 * cuda(512, 512));
    assert.equal(cuda(768, 512), 1.5 * cuda(512, 512));
    // "over 11 GB for very large images" (memory-facts.md:22)
    assert.ok(costsOf('sdxl', 1536).compute.vaeDecode > 11e9 * 0.9);
    // With direct convolutions the 1-head score matrix (latent pixels^2 * 4 B) is the larger step above ~1600 px.
    const direct = (size: number) => vaeDecodeBytes(size * size, 'vulkan');
    assert.equal(direct(1536), 2560 * 1536 * 1536);
    assert.equal(direct(2048), vaeAttentionBytes((2048 / 8) ** 2));
    assert.ok(direct(2048) > 2560 * 2048 * 2048);
    assert.ok(cuda(4096, 4096) > 6656 * 4096 * 4096, 'im2col too, at very large sizes');
  });

  it('is about 1.5x ComfyUI PyTorch estimate (ComfyUI is ~65% of sd.cpp, memory-facts.md:17)', () => {
    const pixels = 1024 * 1024;
    const comfy = COMFY_VAE_DECODE_FACTOR * (pixels / 64) * 2;
    within(comfy, vaeDecodeBytes(pixels, 'cuda') * 0.65, 0.02, 'ComfyUI fp16');
  });

  it('tiled decode is a fraction of the whole decode and constant with size', () => {
    const tiled1024 = costsOf('sdxl', 1024).compute.vaeDecodeTiled;
    for (const size of [1024, 2048, 4096]) {
      const costs = costsOf('sdxl', size);
      assert.equal(costs.compute.vaeDecodeTiled, tiled1024, `constant at ${size}`);
      assert.ok(costs.compute.vaeDecodeTiled * 10 < costs.compute.vaeDecode, `tiled << full at ${size}`);
    }
    // "tens to a few hundred MB" (memory-facts.md:20)
    assert.ok(tiled1024 > 10 * MiB && tiled1024 < 500 * MiB);
    // Vulkan, --vae-conv-direct and tiling: 176 MB (memory-facts.md:12); one 256x256 tile at 2560 B/px is 160 MiB.
    within(costsOf('sdxl', 1024, 'vulkan', {}, true).compute.vaeDecodeTiled, 176 * LOG_MB, 0.1, 'tiled Vulkan conv-direct');
    // A picture no larger than one tile decodes in one piece.
    assert.equal(costsOf('sd1', 256).compute.vaeDecodeTiled, costsOf('sd1', 256).compute.vaeDecode);
  });

  it('tiles overlap by half: 7 tiles of 32 along 128 latent pixels', () => {
    assert.equal(tilesAlong(128), 7);
    assert.equal(tilesAlong(32), 1);
    assert.equal(tilesAlong(20), 1);
    assert.ok(Math.abs(tileCoverage(128, 128) - (49 * 1024) / 16384) < 1e-9);
  });
});

describe('diffusion activations (memory-facts.md:25-29)', () => {
  it('with flash attention keep a UNet\'s largest convolution step, derived from its shapes (27520 B per latent pixel)', () => {
    // 960 channels in (640 + a 320 skip): input and normalised input f32, im2col f16, two more 320-channel skips.
    assert.equal(unetConvolutionBytesPerLatentPixel(320), 2 * 960 * 4 + 960 * 9 * 2 + 2 * 320 * 4);
    assert.equal(costsOf('sd1', 512).compute.diffusionFlash, 64 * 64 * 27520);
    assert.equal(costsOf('sdxl', 1024).compute.diffusionFlash, 128 * 128 * 27520);
    // DiTs have no such step: ComfyUI's efficient-attention formula, area * 2 * 0.01 * factor MiB (memory-facts.md:25).
    assert.equal(costsOf('flux', 1024).compute.diffusionFlash, Math.round(128 * 128 * 2 * 0.01 * 2.8 * MiB));
    // Never below ComfyUI's figure for the UNets either.
    assert.ok(costsOf('sdxl', 1024).compute.diffusionFlash > 128 * 128 * 2 * 0.01 * 0.8 * MiB);
  });

  it('without flash attention add tokens^2 scores: --diffusion-fa saves ~600 MB on Flux 768 and ~1400 MB on SD2 768', () => {
    const flux = costsOf('flux', 768).compute;
    within(flux.diffusion - flux.diffusionFlash, 600 * LOG_MB, 0.1, 'Flux 768 saving');
    const sd2 = costsOf('sd2', 768).compute;
    within(sd2.diffusion - sd2.diffusionFlash, 1400 * LOG_MB, 0.25, 'SD2 768 saving ("about")');
  });

  it('SD1.5 at 1024x1024 without flash attention: the 8360.93 MiB KoboldCpp logged (memory-facts.md:16)', () => {
    within(costsOf('sd1', 1024, 'rocm').compute.diffusion, 8360.93 * LOG_MB, 0.1, 'SD1.5 1024 unet');
  });

  it('grows quadratically in tokens without flash attention and linearly with it', () => {
    const small = diffusionActivation('sd1', 64 * 64);
    const large = diffusionActivation('sd1', 128 * 128);
    assert.equal(large.scores, 16 * small.scores);
    assert.ok(Math.abs(large.linear - 4 * small.linear) <= 2);
    for (const family of ['sd1', 'sd2', 'sdxl', 'sd3', 'flux', 'wan', 'unknown'] as const) {
      const costs = costsOf(family, 1024);
      assert.ok(costs.compute.diffusionFlash < costs.compute.diffusion, family);
    }
  });

  it('reads attention heads from the model width (SD3 Large is wider than Medium)', () => {
    const medium = { ...familyModel('sd3'), diffusionWidth: 1536 };
    const large = { ...familyModel('sd3'), diffusionWidth: 2432 };
    const job = square(1024);
    assert.ok(estimateImageJob(large, job, { backend: 'cuda' }).compute.diffusion > estimateImageJob(medium, job, { backend: 'cuda' }).compute.diffusion);
  });
});

describe('whole jobs', () => {
  it('SD1.5 at 512x512 uses ~4 GB: its weights plus the largest stage buffer (memory-facts.md:35)', () => {
    const model: ImageModelInfo = { ...familyModel('sd1'), weights: { textEncoder: 235 * LOG_MB, diffusion: 1.7e9, vae: 160 * LOG_MB } };
    const costs = estimateImageJob(model, square(512), { backend: 'cuda' });
    const weights = costs.weights.textEncoder + costs.weights.diffusion + costs.weights.vae;
    const largestStage = Math.max(costs.compute.textEncoder, costs.compute.diffusionFlash, costs.compute.vaeDecode);
    within(weights + largestStage, SD15_IN_USE_512, 0.1, 'SD1.5 512 in use');
  });

  it('puts the logged sd.cpp diffusion buffers (unet 830.86 MB, flux 650 MB) inside the range it estimates for 512-1024 px', () => {
    const range = (families: ImageModelFamily[]) => {
      const values = families.flatMap((family) => [512, 768, 1024].flatMap((size) => [costsOf(family, size).compute.diffusion, costsOf(family, size).compute.diffusionFlash]));
      return { min: Math.min(...values), max: Math.max(...values) };
    };
    const unet = range(['sd1', 'sd2', 'sdxl']);
    assert.ok(SDCPP_LOGGED_DIFFUSION_BUFFERS.unet > unet.min && SDCPP_LOGGED_DIFFUSION_BUFFERS.unet < unet.max);
    const flux = range(['flux']);
    assert.ok(SDCPP_LOGGED_DIFFUSION_BUFFERS.flux > flux.min && SDCPP_LOGGED_DIFFUSION_BUFFERS.flux < flux.max);
  });
});

describe('batches and video', () => {
  it('sd.cpp runs a batch image by image: buffers stay, time grows', () => {
    const one = costsOf('sdxl', 1024);
    const four = costsOf('sdxl', 1024, 'cuda', { batch: 4 });
    assert.deepEqual(four.compute, one.compute);
    assert.equal(four.time.samplingMs, 4 * one.time.samplingMs);
    assert.ok(Math.abs(four.time.vaeDecodeMs - 4 * one.time.vaeDecodeMs) <= 4);
    assert.equal(four.batch, 4);
  });

  it('an engine that batches on the device scales the activations', () => {
    const job = square(1024, { batch: 2 });
    const parallel = estimateImageJob(familyModel('sdxl'), job, { backend: 'cuda', batchInParallel: true });
    const one = costsOf('sdxl', 1024);
    assert.equal(parallel.compute.diffusionFlash, 2 * one.compute.diffusionFlash);
    within(parallel.compute.vaeDecode, 2 * one.compute.vaeDecode, 0.001, 'VAE of two images at once');
  });

  it('a WAN video samples (F - 1) / 4 + 1 latent frames and decodes every frame', () => {
    const wan = familyModel('wan');
    assert.deepEqual(latentSize(wan, { width: 832, height: 480, frames: 33 }), { width: 104, height: 60, frames: 9 });
    const video = estimateImageJob(wan, { width: 832, height: 480, batch: 1, frames: 33 }, { backend: 'cuda' });
    const still = estimateImageJob(wan, { width: 832, height: 480, batch: 1, frames: 1 }, { backend: 'cuda' });
    within(video.compute.vaeDecode, 33 * vaeDecodeBytes(832 * 480, 'cuda'), 0.001, 'video decode');
    assert.ok(Math.abs(video.compute.diffusionFlash - 9 * still.compute.diffusionFlash) <= 9);
    assert.equal(video.compute.vaeDecodeTiled, 4 * still.compute.vaeDecodeTiled);
    assert.equal(video.frames, 33);
  });
});

describe('time model', () => {
  it('VAE on the CPU costs "a few seconds" at 512-1024 px (memory-facts.md:69), more with more pixels', () => {
    for (const size of [512, 768, 1024]) {
      const { time } = costsOf('sdxl', size);
      const cpuTotal = time.vaeDecodeMs + time.vaeCpuExtraMs;
      assert.ok(cpuTotal >= 1000 && cpuTotal <= 5000, `${size}: ${cpuTotal} ms`);
    }
    assert.ok(costsOf('sdxl', 2048).time.vaeCpuExtraMs > costsOf('sdxl', 1024).time.vaeCpuExtraMs);
  });

  it('tiling costs extra GPU time that grows with size, less than a CPU decode at 1024', () => {
    const at1024 = costsOf('sdxl', 1024).time;
    assert.ok(at1024.vaeTiledExtraMs > 0);
    assert.ok(at1024.vaeTiledExtraMs < at1024.vaeCpuExtraMs);
    assert.ok(costsOf('sdxl', 2048).time.vaeTiledExtraMs > at1024.vaeTiledExtraMs);
    assert.equal(costsOf('sd1', 256).time.vaeTiledExtraMs, 5, 'one tile: only its launch cost');
  });

  it('offloading moves the diffusion weights over PCIe once per run; a T5 text encoder on the CPU is slow', () => {
    const model: ImageModelInfo = { ...familyModel('flux'), weights: { textEncoder: 9e9, diffusion: 12e9, vae: 160e6 } };
    const costs = estimateImageJob(model, square(1024), { backend: 'cuda' });
    assert.equal(costs.time.offloadExtraMs, Math.round(12e9 / PCIE4_BYTES_PER_MS));
    assert.deepEqual(costs.weights, model.weights);
    assert.ok(costs.time.textEncoderCpuExtraMs > costsOf('sd1', 512).time.textEncoderCpuExtraMs);
    assert.ok(costs.time.samplingMs > 0 && costs.time.textEncodeMs > 0);
  });

  it('more steps take longer', () => {
    assert.ok(costsOf('sd1', 512, 'cuda', { steps: 40 }).time.samplingMs === 2 * costsOf('sd1', 512, 'cuda', { steps: 20 }).time.samplingMs);
  });
});

describe('calibration beats the prior', () => {
  const model = { ...familyModel('sdxl'), modelPath: '/models/sdxl.safetensors' };
  const record = (fields: Partial<CalibrationRecord> & Pick<CalibrationRecord, 'key' | 'setting' | 'value'>): CalibrationRecord => ({
    model: model.modelPath,
    backend: 'cuda',
    unit: 'bytes',
    source: '[DEBUG] ggml_extend.hpp - vae compute buffer size: 7000.00 MB(VRAM)',
    recordedAt: 10,
    ...fields,
  });

  it('uses a measured VAE buffer at its size and scales it linearly to other sizes', () => {
    const store = new CalibrationStore([record({ key: 'vae.compute', setting: '1024x1024', value: 7000 * LOG_MB, scale: 1024 * 1024 })]);
    const at1024 = estimateImageJob(model, square(1024), { backend: 'cuda', calibration: store });
    assert.equal(at1024.compute.vaeDecode, 7000 * LOG_MB);
    assert.ok(at1024.calibrated.includes('compute.vaeDecode'));
    const at2048 = estimateImageJob(model, square(2048), { backend: 'cuda', calibration: store });
    assert.equal(at2048.compute.vaeDecode, 4 * 7000 * LOG_MB);
    const other = estimateImageJob({ ...model, modelPath: '/models/other.safetensors' }, square(1024), { backend: 'cuda', calibration: store });
    assert.equal(other.compute.vaeDecode, vaeDecodeBytes(1024 * 1024, 'cuda'));
    assert.deepEqual(other.calibrated, []);
  });

  it('uses a measured tiled peak at every size, and measured weights', () => {
    const store = new CalibrationStore([
      record({ key: 'vae.computeTiled', setting: 'tile=32x32', value: 300 * LOG_MB }),
      record({ key: 'diffusion.weights', setting: '', value: 5.2e9 }),
    ]);
    for (const size of [1024, 2048]) {
      const costs = estimateImageJob(model, square(size), { backend: 'cuda', calibration: store });
      assert.equal(costs.compute.vaeDecodeTiled, 300 * LOG_MB);
      assert.equal(costs.weights.diffusion, 5.2e9);
      assert.ok(costs.calibrated.includes('weights.diffusion'));
    }
  });

  it('corrects the diffusion prior by the ratio measured at another size', () => {
    const prior768 = costsOf('sdxl', 768).compute.diffusion;
    const store = new CalibrationStore([record({ key: 'diffusion.compute', setting: '768x768', value: prior768 * 0.9, estimate: prior768 })]);
    const costs = estimateImageJob(model, square(1024), { backend: 'cuda', calibration: store });
    assert.equal(costs.compute.diffusion, Math.round(costsOf('sdxl', 1024).compute.diffusion * 0.9));
  });
});
