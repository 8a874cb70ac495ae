import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { FLUX_DEV_WEIGHTS, SDXL_WEIGHTS, VAE_WEIGHTS_RANGE } from '../../../sidecar/core/estimators/figures';
import { classifyTensor, detectFamily, imageModelInfoFromFiles, readImageModelInfo } from '../../../sidecar/models/imageModelInfo';
import { ModelFileError } from '../../../sidecar/models/modelFileError';
import {
  SD1_UNET,
  SD2_UNET,
  SDXL_UNET,
  clipTextTensors,
  fluxTensors,
  klVaeTensors,
  openClipTensors,
  parameterCount,
  sd3Tensors,
  t5EncoderTensors,
  unetTensors,
  wanTensors,
  wanVaeTensors,
  writeHeaderOnlyGguf,
  writeSafetensors,
  type TensorSpec,
} from './imageCheckpoints';

const MB = 1e6;
const MiB = 1024 * 1024;

function within(actual: number, expected: number, fraction: number, what: string): void {
  assert.ok(Math.abs(actual - expected) <= expected * fraction, `${what}: ${actual} not within ${fraction * 100}% of ${expected}`);
}

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'vram-relay-image-model-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

const sd15Checkpoint = (): TensorSpec[] => [
  ...unetTensors('model.diffusion_model.', SD1_UNET),
  ...clipTextTensors('cond_stage_model.transformer.text_model.'),
  ...klVaeTensors('first_stage_model.', 4),
  { name: 'alphas_cumprod', shape: [1000] },
];

describe('readImageModelInfo on single safetensors checkpoints', () => {
  it('splits an SD1.5 checkpoint into CLIP-L ~235 MB, UNet ~1.7 GB, VAE ~160 MB (memory-facts.md:35)', async () => {
    const path = join(dir, 'sd15.safetensors');
    await writeSafetensors(path, sd15Checkpoint(), 'F16');
    const info = await readImageModelInfo(path);
    assert.equal(info.family, 'sd1');
    within(info.weights.textEncoder, 235 * MiB, 0.05, 'CLIP-L');
    within(info.weights.diffusion, 1.7e9, 0.05, 'UNet');
    within(info.weights.vae, 160 * MiB, 0.05, 'VAE');
    assert.ok(info.weights.vae >= VAE_WEIGHTS_RANGE.min && info.weights.vae <= VAE_WEIGHTS_RANGE.max);
    assert.equal(info.weights.diffusion, (parameterCount(unetTensors('', SD1_UNET)) + 1000) * 2);
    assert.equal(info.latentChannels, 4);
    assert.equal(info.vaeScaleFactor, 8);
    assert.equal(info.vaeTemporalScaleFactor, 1);
    assert.equal(info.diffusionWidth, 320);
    assert.equal(info.files[0].format, 'safetensors');
  });

  it('tells SD2 from SD1 by the cross-attention context width (1024)', async () => {
    const path = join(dir, 'sd2.safetensors');
    await writeSafetensors(path, [...unetTensors('model.diffusion_model.', SD2_UNET), ...openClipTensors('cond_stage_model.model.', 1024, 24), ...klVaeTensors('first_stage_model.', 4)]);
    const info = await readImageModelInfo(path);
    assert.equal(info.family, 'sd2');
    assert.equal(info.weights.textEncoder, parameterCount(openClipTensors('', 1024, 24)) * 2);
  });

  it('reads an SDXL checkpoint as sdxl with ~7 GB of weights (memory-facts.md:36)', async () => {
    const path = join(dir, 'sdxl.safetensors');
    const tensors = [
      ...unetTensors('model.diffusion_model.', SDXL_UNET),
      ...clipTextTensors('conditioner.embedders.0.transformer.text_model.'),
      ...openClipTensors('conditioner.embedders.1.model.', 1280, 32),
      ...klVaeTensors('first_stage_model.', 4),
    ];
    await writeSafetensors(path, tensors, 'F16');
    const info = await readImageModelInfo(path);
    assert.equal(info.family, 'sdxl');
    const total = info.weights.textEncoder + info.weights.diffusion + info.weights.vae;
    within(total, SDXL_WEIGHTS, 0.05, 'SDXL weights');
    within(info.weights.diffusion, 2.567e9 * 2, 0.01, 'SDXL UNet');
    within(info.weights.textEncoder, (123.06e6 + 694.66e6) * 2, 0.01, 'CLIP-L + CLIP-G');
  });

  it('reads an SD3 checkpoint with its text encoders as sd3, 16 latent channels', async () => {
    const path = join(dir, 'sd3.safetensors');
    const tensors = [
      ...sd3Tensors('model.diffusion_model.'),
      ...clipTextTensors('text_encoders.clip_l.transformer.text_model.'),
      ...clipTextTensors('text_encoders.clip_g.transformer.text_model.', 1280, 32),
      ...klVaeTensors('first_stage_model.', 16, false),
    ];
    await writeSafetensors(path, tensors, 'F16');
    const info = await readImageModelInfo(path);
    assert.equal(info.family, 'sd3');
    assert.equal(info.latentChannels, 16);
    assert.equal(info.diffusionWidth, 1536);
    within(info.weights.diffusion, 2.08e9 * 2, 0.01, 'MMDiT');
  });
});

describe('readImageModelInfo on split files', () => {
  it('reads Flux.1-dev at fp8 (~12 GB, memory-facts.md:36) with split VAE, CLIP-L and T5 parts', async () => {
    const diffusion = join(dir, 'flux1-dev-fp8.safetensors');
    const vae = join(dir, 'ae.safetensors');
    const clipL = join(dir, 'clip_l.safetensors');
    const t5xxl = join(dir, 't5xxl.safetensors');
    await writeSafetensors(diffusion, fluxTensors(), 'F8_E4M3');
    await writeSafetensors(vae, klVaeTensors('', 16, false), 'F32');
    await writeSafetensors(clipL, clipTextTensors('text_model.'), 'F16');
    await writeSafetensors(t5xxl, t5EncoderTensors(''), 'F8_E4M3');
    const info = await readImageModelInfo(diffusion, { vae, clipL, t5xxl });
    assert.equal(info.family, 'flux');
    within(info.weights.diffusion, FLUX_DEV_WEIGHTS, 0.05, 'Flux.1-dev fp8');
    assert.equal(info.weights.vae, parameterCount(klVaeTensors('', 16, false)) * 4);
    assert.equal(info.weights.textEncoder, parameterCount(clipTextTensors('')) * 2 + parameterCount(t5EncoderTensors('')));
    assert.equal(info.latentChannels, 16);
    assert.equal(info.diffusionWidth, 3072);
    assert.deepEqual(
      info.files.map((file) => file.role),
      ['checkpoint', 'vae', 'clipL', 't5xxl'],
    );
  });

  it('reads a WAN 2.1 1.3B video model as wan with a 4x temporal VAE', async () => {
    const diffusion = join(dir, 'wan2.1_t2v_1.3B.safetensors');
    const vae = join(dir, 'wan_2.1_vae.safetensors');
    await writeSafetensors(diffusion, wanTensors(), 'F16');
    await writeSafetensors(vae, wanVaeTensors(), 'F32');
    const info = await readImageModelInfo(diffusion, { vae });
    assert.equal(info.family, 'wan');
    assert.equal(info.vaeTemporalScaleFactor, 4);
    assert.equal(info.latentChannels, 16);
    assert.equal(info.diffusionWidth, 1536);
    within(info.weights.diffusion, 1.42e9 * 2, 0.01, 'WAN 1.3B');
    assert.equal(info.weights.textEncoder, 0);
  });

  it('counts a part by its role even when its tensor names look like another component', async () => {
    const diffusion = join(dir, 'bare-unet.safetensors');
    const llm = join(dir, 'encoder.safetensors');
    await writeSafetensors(diffusion, unetTensors('', SD1_UNET));
    await writeSafetensors(llm, [{ name: 'decoder.weird.weight', shape: [1024, 1024] }]);
    const info = await readImageModelInfo(diffusion, { llm });
    assert.equal(info.family, 'sd1');
    assert.equal(info.weights.textEncoder, 1024 * 1024 * 2);
    assert.equal(info.weights.vae, 0);
  });
});

describe('readImageModelInfo on GGUF image checkpoints (node-llama-cpp reader)', () => {
  it('reads a Flux GGUF (architecture "flux", Q8_0) and reverses ggml dims into PyTorch order', async () => {
    const path = join(dir, 'flux1-dev-Q8_0.gguf');
    const tensors = fluxTensors('', 2, 2).map((tensor) => ({
      name: tensor.name,
      dims: tensor.shape.slice().reverse(),
      type: (tensor.shape.length === 2 && tensor.shape[1] % 32 === 0 ? 8 : 0) as 0 | 8,
    }));
    await writeHeaderOnlyGguf(path, tensors, 'flux');
    const info = await readImageModelInfo(path);
    assert.equal(info.family, 'flux');
    assert.equal(info.files[0].format, 'gguf');
    assert.equal(info.diffusionWidth, 3072);
    const expected = tensors.reduce((sum, tensor) => {
      const count = tensor.dims.reduce((product, dim) => product * dim, 1);
      return sum + (tensor.type === 8 ? (count / 32) * 34 : count * 4);
    }, 0);
    assert.equal(info.weights.diffusion, expected);
  });

  it('reads an sd.cpp-converted GGUF without general.architecture (SD1.5 names)', async () => {
    const path = join(dir, 'sd15-f16.gguf');
    const tensors = sd15Checkpoint().map((tensor) => ({ name: tensor.name, dims: tensor.shape.slice().reverse(), type: 1 as const }));
    await writeHeaderOnlyGguf(path, tensors);
    const info = await readImageModelInfo(path);
    assert.equal(info.family, 'sd1');
    within(info.weights.diffusion, 1.7e9, 0.05, 'UNet');
  });

  it('says a truncated GGUF is truncated', async () => {
    const path = join(dir, 'cut.gguf');
    await writeHeaderOnlyGguf(path, [{ name: 'img_in.weight', dims: [64, 3072], type: 1 }], 'flux', 4096);
    await assert.rejects(readImageModelInfo(path), (error: unknown) => error instanceof ModelFileError && error.kind === 'truncated' && /truncated/.test(error.message));
  });
});

describe('readImageModelInfo errors', () => {
  it('says what to do for a missing file, a text file and a pickled checkpoint', async () => {
    await assert.rejects(readImageModelInfo(join(dir, 'nope.safetensors')), /Model file not found: .*nope\.safetensors/);
    const text = join(dir, 'notes.txt');
    await writeFile(text, 'this is not a model at all, just some words');
    await assert.rejects(readImageModelInfo(text), (error: unknown) => error instanceof ModelFileError && error.kind === 'notModel' && /pick a \.safetensors or \.gguf/.test(error.message));
    const ckpt = join(dir, 'old.ckpt');
    await writeFile(ckpt, Buffer.concat([Buffer.from('PK\u0003\u0004'), Buffer.alloc(64)]));
    await assert.rejects(readImageModelInfo(ckpt), /pickled PyTorch checkpoint/);
    await assert.rejects(readImageModelInfo(dir), (error: unknown) => error instanceof ModelFileError && error.kind === 'notAFile');
  });
});

describe('tensor rules (pure)', () => {
  it('classifies names from every layout', () => {
    const cases: [string, string][] = [
      ['model.diffusion_model.input_blocks.0.0.weight', 'diffusion'],
      ['double_blocks.0.img_attn.qkv.weight', 'diffusion'],
      ['blocks.3.self_attn.q.weight', 'diffusion'],
      ['cond_stage_model.transformer.text_model.final_layer_norm.weight', 'textEncoder'],
      ['conditioner.embedders.1.model.text_projection', 'textEncoder'],
      ['text_encoders.t5xxl.transformer.encoder.block.0.layer.0.SelfAttention.q.weight', 'textEncoder'],
      ['encoder.block.0.layer.0.SelfAttention.q.weight', 'textEncoder'],
      ['shared.weight', 'textEncoder'],
      ['first_stage_model.decoder.conv_in.weight', 'vae'],
      ['decoder.up.0.block.0.conv1.weight', 'vae'],
      ['encoder.down.0.block.0.conv1.weight', 'vae'],
      ['post_quant_conv.weight', 'vae'],
      ['alphas_cumprod', 'diffusion'],
    ];
    for (const [name, component] of cases) assert.equal(classifyTensor(name), component, name);
  });

  it('detects the family from characteristic tensors, and unknown otherwise', () => {
    const bare = (tensors: TensorSpec[]) => tensors.map((tensor) => ({ ...tensor, bytes: 0 }));
    assert.equal(detectFamily(bare(unetTensors('', SD1_UNET))), 'sd1');
    assert.equal(detectFamily(bare(unetTensors('', SD2_UNET))), 'sd2');
    assert.equal(detectFamily(bare(unetTensors('', SDXL_UNET))), 'sdxl');
    assert.equal(detectFamily(bare(fluxTensors('', 1, 1))), 'flux');
    assert.equal(detectFamily(bare(sd3Tensors('', 2))), 'sd3');
    assert.equal(detectFamily(bare(wanTensors('', 1536, 1))), 'wan');
    assert.equal(detectFamily(bare([{ name: 'transformer_blocks.0.attn.to_q.weight', shape: [8, 8] }])), 'unknown');
    assert.equal(detectFamily([]), 'unknown');
  });

  it('a VAE-only file gives an unknown family and only VAE bytes', () => {
    const info = imageModelInfoFromFiles([
      { path: 'vae.safetensors', role: 'checkpoint', format: 'safetensors', fileSize: 0, tensors: klVaeTensors('', 4).map((t) => ({ ...t, bytes: 10 })) },
    ]);
    assert.equal(info.family, 'unknown');
    assert.equal(info.weights.diffusion, 0);
    assert.ok(info.weights.vae > 0);
    assert.equal(info.latentChannels, 4);
  });
});

// Keep the fixture sizes honest: these are the published parameter counts of each architecture.
describe('fixtures', () => {
  it('have the published parameter counts', () => {
    within(parameterCount(unetTensors('', SD1_UNET)), 859.52 * MB, 0.001, 'SD1.5 UNet');
    within(parameterCount(unetTensors('', SDXL_UNET)), 2567.46 * MB, 0.001, 'SDXL UNet');
    within(parameterCount(clipTextTensors('')), 123.06 * MB, 0.001, 'CLIP-L');
    within(parameterCount(klVaeTensors('', 4)), 83.65 * MB, 0.001, 'KL VAE');
    within(parameterCount(fluxTensors()), 11.9e9, 0.01, 'Flux.1');
  });
});
