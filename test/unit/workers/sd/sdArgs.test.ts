import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  buildSdArgs,
  GPU_PLACEMENT,
  InvalidImageJobError,
  UnsupportedPlacementError,
} from '../../../../sidecar/workers/sd/sdArgs';
import { FULL_SD_CAPABILITIES, type ImageJobSpec, type ImagePlacement, type SdCapabilities } from '../../../../sidecar/core/types';

const job: ImageJobSpec = {
  kind: 'image',
  modelPath: '/models/sd15.safetensors',
  prompt: 'a lighthouse at dusk',
  width: 768,
  height: 512,
  batch: 1,
  steps: 25,
  seed: 1234,
  outputPath: '/out/lighthouse.png',
};

const LEGACY: SdCapabilities = {
  cpuPlacementFlags: 'legacy',
  vaeTiling: true,
  offloadToCpu: false,
  diffusionFlashAttention: true,
  vaeConvDirect: false,
  videoGeneration: false,
  temporalTiling: false,
  backend: 'cuda',
};

/** The value after `flag`, or undefined. */
function valueOf(args: string[], flag: string): string | undefined {
  const i = args.indexOf(flag);
  return i >= 0 ? args[i + 1] : undefined;
}

describe('buildSdArgs', () => {
  it('maps the job onto sd-cli flags, with -v and the temporary output', () => {
    const args = buildSdArgs({ ...job, negativePrompt: 'blurry', cfgScale: 6.5, samplingMethod: 'euler' }, undefined, FULL_SD_CAPABILITIES, '/out/.tmp.png');
    assert.equal(valueOf(args, '-m'), '/models/sd15.safetensors');
    assert.equal(valueOf(args, '-p'), 'a lighthouse at dusk');
    assert.equal(valueOf(args, '-n'), 'blurry');
    assert.equal(valueOf(args, '-W'), '768');
    assert.equal(valueOf(args, '-H'), '512');
    assert.equal(valueOf(args, '--steps'), '25');
    assert.equal(valueOf(args, '--cfg-scale'), '6.5');
    assert.equal(valueOf(args, '--sampling-method'), 'euler');
    assert.equal(valueOf(args, '-s'), '1234');
    assert.equal(valueOf(args, '-b'), '1');
    assert.equal(valueOf(args, '-o'), '/out/.tmp.png');
    assert.ok(args.includes('-v'));
    // An all-GPU plan adds no placement flag.
    for (const flag of ['--backend', '--clip-on-cpu', '--vae-on-cpu', '--vae-tiling', '--offload-to-cpu', '--diffusion-fa']) {
      assert.ok(!args.includes(flag), flag);
    }
  });

  it('passes a prompt that looks like a flag as one argument (no shell, no splitting)', () => {
    const args = buildSdArgs({ ...job, prompt: '-v --help "quoted"; rm -rf /' }, GPU_PLACEMENT, FULL_SD_CAPABILITIES, '/o.png');
    assert.equal(valueOf(args, '-p'), '-v --help "quoted"; rm -rf /');
  });

  it('puts text encoder and VAE on the CPU with --backend on current builds', () => {
    const placement: ImagePlacement = { ...GPU_PLACEMENT, textEncoder: 'cpu', vae: 'cpu' };
    const args = buildSdArgs(job, placement, FULL_SD_CAPABILITIES, '/o.png', { autoFit: true });
    assert.equal(valueOf(args, '--backend'), 'te=cpu,vae=cpu');
    assert.equal(valueOf(args, '--auto-fit'), 'off');
    assert.ok(!args.includes('--clip-on-cpu'));
  });

  it('uses --clip-on-cpu / --vae-on-cpu on older builds', () => {
    const args = buildSdArgs(job, { ...GPU_PLACEMENT, textEncoder: 'cpu', vae: 'cpu' }, LEGACY, '/o.png');
    assert.ok(args.includes('--clip-on-cpu'));
    assert.ok(args.includes('--vae-on-cpu'));
    assert.ok(!args.includes('--backend'));
    assert.ok(!args.includes('--auto-fit'));
  });

  it('maps tiling, offload and flash attention', () => {
    const placement: ImagePlacement = { textEncoder: 'gpu', diffusion: 'offload', vae: 'gpu', vaeTiling: true, flashAttention: true };
    const args = buildSdArgs(job, placement, FULL_SD_CAPABILITIES, '/o.png');
    assert.ok(args.includes('--vae-tiling'));
    assert.ok(args.includes('--offload-to-cpu'));
    assert.ok(args.includes('--diffusion-fa'));
    assert.ok(!args.includes('--temporal-tiling'), 'temporal tiling is for video');
  });

  it('refuses a placement the binary cannot do', () => {
    assert.throws(() => buildSdArgs(job, { ...GPU_PLACEMENT, diffusion: 'offload' }, LEGACY, '/o.png'), UnsupportedPlacementError);
    assert.throws(
      () => buildSdArgs(job, { ...GPU_PLACEMENT, vae: 'cpu' }, { ...LEGACY, cpuPlacementFlags: 'none' }, '/o.png'),
      /cannot run the VAE on the CPU/,
    );
    assert.throws(
      () => buildSdArgs(job, { ...GPU_PLACEMENT, vae: 'cpu' }, LEGACY, '/o.png', { legacyCpuFlags: { clip: true, vae: false } }),
      /no --vae-on-cpu/,
    );
    assert.throws(() => buildSdArgs(job, { ...GPU_PLACEMENT, vaeTiling: true }, { ...LEGACY, vaeTiling: false }, '/o.png'), /--vae-tiling/);
  });

  it('loads split model files with --diffusion-model and the part flags', () => {
    const args = buildSdArgs(
      { ...job, modelPath: '/m/flux1-dev-q4.gguf', parts: { clipL: '/m/clip_l.safetensors', t5xxl: '/m/t5xxl.gguf', vae: '/m/ae.safetensors' } },
      undefined,
      FULL_SD_CAPABILITIES,
      '/o.png',
    );
    assert.equal(valueOf(args, '--diffusion-model'), '/m/flux1-dev-q4.gguf');
    assert.ok(!args.includes('-m'));
    assert.equal(valueOf(args, '--clip_l'), '/m/clip_l.safetensors');
    assert.equal(valueOf(args, '--t5xxl'), '/m/t5xxl.gguf');
    assert.equal(valueOf(args, '--vae'), '/m/ae.safetensors');
  });

  it('keeps -m for a checkpoint with only a replacement VAE', () => {
    const args = buildSdArgs({ ...job, parts: { vae: '/m/sdxl-vae-fp16-fix.safetensors' } }, undefined, FULL_SD_CAPABILITIES, '/o.png');
    assert.equal(valueOf(args, '-m'), '/models/sd15.safetensors');
    assert.equal(valueOf(args, '--vae'), '/m/sdxl-vae-fp16-fix.safetensors');
  });

  it('runs video with -M vid_gen, the frame count and temporal tiling', () => {
    const video: ImageJobSpec = { ...job, frames: 33 };
    const args = buildSdArgs(video, { ...GPU_PLACEMENT, vaeTiling: true }, FULL_SD_CAPABILITIES, '/o_%03d.png');
    assert.equal(valueOf(args, '-M'), 'vid_gen');
    assert.equal(valueOf(args, '--video-frames'), '33');
    assert.ok(args.includes('--temporal-tiling'));
    assert.ok(args.includes('--vae-tiling'));
    assert.ok(!args.includes('-b'));
    assert.throws(() => buildSdArgs(video, undefined, LEGACY, '/o.png'), /cannot generate video/);
  });

  it('overrides batch and seed for a batch split image by image', () => {
    const args = buildSdArgs({ ...job, batch: 4 }, undefined, FULL_SD_CAPABILITIES, '/o.png', { batch: 1, seed: 1236 });
    assert.equal(valueOf(args, '-b'), '1');
    assert.equal(valueOf(args, '-s'), '1236');
  });

  it('rejects a job no binary could run, saying what is wrong', () => {
    assert.throws(() => buildSdArgs({ ...job, width: 0 }, undefined, FULL_SD_CAPABILITIES, '/o.png'), InvalidImageJobError);
    assert.throws(() => buildSdArgs({ ...job, width: 500 }, undefined, FULL_SD_CAPABILITIES, '/o.png'), /multiple of 8/);
    assert.throws(() => buildSdArgs({ ...job, steps: 2.5 }, undefined, FULL_SD_CAPABILITIES, '/o.png'), /number of steps/);
  });
});
