/**
 * The log lines below are sd.cpp output as users posted it in leejet/stable-diffusion.cpp issues (#376, #395, #673,
 * #838, #872, #1044, PR #1621) and in public notes of sd-cli runs (SDXL on CUDA, 2026); file:line prefixes as
 * printed.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { MiB } from '../../../../sidecar/core/types';
import { errorEvent, peakBuffers, SdLogParser, type SdLogEvent } from '../../../../sidecar/workers/sd/sdLogParser';

const SDXL_RUN = `[INFO ] ggml_extend.hpp:63   - ggml_cuda_init: found 1 CUDA devices (Total VRAM: 24454 MiB):
[INFO ] stable-diffusion.cpp:212  - loading model from '.\\models\\checkpoints\\animaPencilXL_v500.safetensors'
[INFO ] stable-diffusion.cpp:305  - Version: SDXL
  |==================================================| 2513/2513 - 2.07GB/s
[INFO ] model.cpp:999  - loading tensors completed, taking 3.09s (process: 0.00s, read: 0.95s, memcpy: 0.00s, convert: 0.00s, copy_to_backend: 2.02s)
[INFO ] stable-diffusion.cpp:873  - total params memory size = 6558.89MB (VRAM 6558.89MB, RAM 0.00MB): text_encoders 1564.36MB(VRAM), diffusion_model 4900.07MB(VRAM), vae 94.47MB(VRAM), controlnet 0.00MB(VRAM), pmid 0.00MB(VRAM)
[INFO ] stable-diffusion.cpp:931  - running in eps-prediction mode
[INFO ] stable-diffusion.cpp:3367 - generate_image 512x512
[INFO ] stable-diffusion.cpp:2814 - sampling using Euler A method
[INFO ] stable-diffusion.cpp:3168 - get_learned_condition completed, taking 0.16s
[INFO ] stable-diffusion.cpp:3401 - generating image: 1/1 - seed 42
\r  |==>                                               | 1/20 - 7.62it/s\x1b[K\r  |=====>                                            | 2/20 - 7.62it/s\x1b[K\r  |==================================================| 20/20 - 7.62it/s\x1b[K
[INFO ] stable-diffusion.cpp:3432 - sampling completed, taking 2.64s
[INFO ] stable-diffusion.cpp:3452 - generating 1 latent images completed, taking 2.66s
[INFO ] stable-diffusion.cpp:3192 - decoding 1 latents
[DEBUG] ggml_extend.hpp:1583 - vae compute buffer size: 6656.25 MB(VRAM)
[INFO ] stable-diffusion.cpp:3208 - latent 1 decoded, taking 0.13s
[INFO ] stable-diffusion.cpp:3212 - decode_first_stage completed, taking 0.13s
[INFO ] stable-diffusion.cpp:3591 - generate_image completed in 2.97s
[INFO ] main.cpp:441  - save result image 0 to 'output.png' (success)
[INFO ] main.cpp:490  - 1/1 images saved
`;

function parseAll(text: string, chunkSize = text.length): SdLogEvent[] {
  const parser = new SdLogParser();
  const events: SdLogEvent[] = [];
  for (let i = 0; i < text.length; i += chunkSize) events.push(...parser.push(text.slice(i, i + chunkSize)));
  events.push(...parser.end());
  return events;
}

const of = <T extends SdLogEvent['type']>(events: SdLogEvent[], type: T) =>
  events.filter((e): e is Extract<SdLogEvent, { type: T }> => e.type === type);

describe('SdLogParser', () => {
  it('follows a current sd-cli run through its stages in order', () => {
    const events = parseAll(SDXL_RUN);
    const starts = of(events, 'stage').filter((e) => e.phase === 'start').map((e) => e.stage);
    assert.deepEqual(starts, ['load', 'textEncode', 'diffusion', 'vaeDecode', 'save']);
    const ends = of(events, 'stage').filter((e) => e.phase === 'end');
    assert.deepEqual(ends.map((e) => [e.stage, e.ms]), [['load', undefined], ['textEncode', 160], ['diffusion', 2640], ['vaeDecode', 130]]);
    assert.deepEqual(of(events, 'finished'), [{ type: 'finished', ms: 2970 }]);
    assert.deepEqual(of(events, 'saved'), [{ type: 'saved', path: 'output.png', index: 0, ok: true }]);
    assert.deepEqual(of(events, 'backend'), [{ type: 'backend', backend: 'cuda' }]);
    assert.deepEqual(of(events, 'error'), []);
  });

  it('reports sampling steps (not the tensor-loading bar), with s/it from it/s', () => {
    const steps = of(parseAll(SDXL_RUN), 'step');
    assert.deepEqual(steps.map((s) => [s.step, s.totalSteps]), [[1, 20], [2, 20], [20, 20]]);
    assert.ok(Math.abs(steps[0].secondsPerStep - 1 / 7.62) < 1e-9);
  });

  it('gives the same events whatever the chunking', () => {
    const whole = parseAll(SDXL_RUN);
    for (const size of [1, 7, 64]) assert.deepEqual(parseAll(SDXL_RUN, size), whole, `chunks of ${size}`);
  });

  it('reports a progress bar step while it is still being drawn, and only once', () => {
    const parser = new SdLogParser();
    const first = parser.push('\r  |=====>      | 3/20 - 1.23s/it');
    assert.deepEqual(of(first, 'step').map((s) => s.step), [3]);
    const next = parser.push('\r  |======>     | 4/20 - 1.20s/it');
    assert.deepEqual(of(next, 'step').map((s) => s.step), [4], 'step 3 is not reported again when its segment completes');
    assert.deepEqual(of(parser.end(), 'step').map((s) => s.step), []);
  });

  it('measures buffers as bytes with their component keys', () => {
    const buffers = of(parseAll(SDXL_RUN), 'buffer').map((e) => e.buffer);
    assert.deepEqual(
      buffers.filter((b) => b.key !== 'total.weights'),
      [
        { key: 'textEncoder.weights', bytes: Math.round(1564.36 * MiB), where: 'gpu' },
        { key: 'diffusion.weights', bytes: Math.round(4900.07 * MiB), where: 'gpu' },
        { key: 'vae.weights', bytes: Math.round(94.47 * MiB), where: 'gpu' },
        { key: 'vae.compute', bytes: Math.round(6656.25 * MiB), where: 'gpu' },
      ],
    );
    assert.deepEqual(buffers.filter((b) => b.key === 'total.weights').map((b) => [b.where, b.bytes]), [
      ['gpu', Math.round(6558.89 * MiB)],
      ['cpu', 0],
    ]);
  });

  it('reads older buffer lines: per-module params buffers and the clip/unet total', () => {
    const text = [
      'ggml_extend.hpp:1050 - clip params backend buffer size =  1346.53 MB(VRAM) (388 tensors)',
      'ggml_extend.hpp:1050 - unet params backend buffer size =  2179.71 MB(VRAM) (686 tensors)',
      '[DEBUG] ggml_extend.hpp:1029 - t5 params backend buffer size =  9083.77 MB(RAM) (219 tensors)',
      '[INFO ] stable-diffusion.cpp:486  - total params memory size = 13145.92MB (VRAM 3827.08MB, RAM 9318.83MB): clip 9318.83MB(RAM), unet 3732.51MB(VRAM), vae 94.57MB(VRAM), controlnet 0.00MB(VRAM), pmid 0.00MB(RAM)',
      '[DEBUG] ggml_extend.hpp:1583 - clip compute buffer size: 1.40 MB(VRAM)',
      '[DEBUG] ggml_extend.hpp:1583 - clip compute buffer size: 2.33 MB(VRAM)',
      '[DEBUG] ggml_extend.hpp:1583 - unet compute buffer size: 830.86 MB(VRAM)',
      '[DEBUG] ggml_extend.hpp:1550 - wan_vae compute buffer size: 19349.82 MB(RAM)',
      '',
    ].join('\n');
    const buffers = of(parseAll(text), 'buffer').map((e) => e.buffer);
    const keyed = (key: string, where: 'gpu' | 'cpu') => buffers.filter((b) => b.key === key && b.where === where).map((b) => b.bytes);
    assert.deepEqual(keyed('textEncoder.weights', 'gpu'), [Math.round(1346.53 * MiB)]);
    assert.deepEqual(keyed('textEncoder.weights', 'cpu'), [Math.round(9083.77 * MiB), Math.round(9318.83 * MiB)]);
    assert.deepEqual(keyed('diffusion.weights', 'gpu'), [Math.round(2179.71 * MiB), Math.round(3732.51 * MiB)]);
    assert.deepEqual(keyed('vae.compute', 'cpu'), [Math.round(19349.82 * MiB)]);
    const peaks = peakBuffers(buffers);
    assert.deepEqual(peaks.find((b) => b.key === 'textEncoder.compute'), { key: 'textEncoder.compute', bytes: Math.round(2.33 * MiB), where: 'gpu' });
    assert.equal(peaks.filter((b) => b.key === 'diffusion.weights').length, 1);
  });

  it('reads the newest log format (short level tags, device suffixes)', () => {
    const text =
      '[I] total params memory size = 8808.62MB (VRAM 6432.71MB, RAM 2375.91MB): text_encoders 2375.91MB(RAM), diffusion_model 6272.71MB(VRAM), vae 160.00MB(VRAM), controlnet 0.00MB(N/A), extensions 0.00MB(N/A) --- diffusion_engine.cpp:1328\n' +
      '[DEBUG] ggml_runner.cpp:280 - flux compute buffer size: 1234.50 MB(VRAM) on CUDA0 (peak across 1 segment)\n';
    const buffers = of(parseAll(text), 'buffer').map((e) => e.buffer);
    assert.ok(buffers.some((b) => b.key === 'textEncoder.weights' && b.where === 'cpu' && b.bytes === Math.round(2375.91 * MiB)));
    assert.ok(buffers.some((b) => b.key === 'diffusion.compute' && b.bytes === Math.round(1234.5 * MiB)));
    assert.ok(!buffers.some((b) => b.key.startsWith('controlnet')));
  });

  it('finds a progress step glued to a buffer line (the bar is not ended before the DEBUG line)', () => {
    const text =
      '  |==========================================>       | 17/20 - 247.67s/it\x1b[K[DEBUG] ggml_extend.hpp:1691 - vae compute buffer size: 1664.00 MB(RAM)\n';
    const events = parseAll(text);
    assert.deepEqual(of(events, 'step').map((s) => [s.step, s.secondsPerStep]), [[17, 247.67]]);
    assert.deepEqual(of(events, 'buffer').map((e) => e.buffer), [{ key: 'vae.compute', bytes: Math.round(1664 * MiB), where: 'cpu' }]);
  });

  it('reports a VAE decode that ran out of memory (current builds)', () => {
    const text = [
      '[INFO ] stable-diffusion.cpp:3192 - decoding 1 latents',
      '[ERROR] ggml_backend_cuda_buffer_type_alloc_buffer: allocating 6658.00 MiB on device 0: cudaMalloc failed: out of memory',
      '[ERROR] vae: failed to allocate the compute buffer',
      '[ERROR] decode_first_stage failed for latent 1',
      '',
    ].join('\n');
    const parser = new SdLogParser();
    const events = [...parser.push(text), ...parser.end()];
    const errors = of(events, 'error');
    assert.deepEqual(errors.map((e) => e.kind), ['oom', 'oom', 'decodeFailed']);
    assert.equal(errors[1].component, 'vae');
    // The size the decode asked for is kept for calibration, from the driver's refusal.
    assert.deepEqual(of(events, 'buffer').map((e) => e.buffer), [{ key: 'vae.compute', bytes: 6658 * MiB, where: 'gpu' }]);
    assert.equal(parser.currentStage, 'vaeDecode');
  });

  it('classifies backend aborts, retries and other error lines', () => {
    assert.equal(errorEvent('[ERROR] ggml_extend.hpp:70   - ROCm error: out of memory')?.type, 'error');
    assert.deepEqual(
      (errorEvent('[ERROR] ggml_extend.hpp:70   - ROCm error: out of memory') as { kind: string }).kind,
      'oom',
    );
    assert.equal((errorEvent('ggml/src/ggml-cuda/ggml-cuda.cu:75: CUDA error') as { kind: string }).kind, 'backendAbort');
    assert.equal(
      errorEvent('[DEBUG] ggml_extend.hpp:61   - ROCm pool[0]: alloc of 1209.60 MiB failed, flushing 935.90 MiB of cached buffers and retrying'),
      undefined,
    );
    assert.equal((errorEvent('ggml_vulkan: Requested buffer size exceeds device buffer size limit: ErrorOutOfDeviceMemory') as { kind: string }).kind, 'oom');
    assert.equal((errorEvent("[ERROR] model.cpp:1043 - init model loader from file failed: '/m/x.safetensors'") as { kind: string }).kind, 'modelLoad');
    assert.equal((errorEvent('[ERROR] main.cpp:212 - error: unknown argument: --backend') as { kind: string }).kind, 'usage');
    assert.equal((errorEvent('[ERROR] stable-diffusion.cpp:2256 - diffusion model compute failed') as { kind: string }).kind, 'computeFailed');
    assert.equal(errorEvent('[INFO ] stable-diffusion.cpp:3212 - decode_first_stage completed, taking 0.13s'), undefined);
  });

  it('reads older wordings: ms timings, txt2img, save without index', () => {
    const text = [
      '[INFO ] stable-diffusion.cpp:2033 - get_learned_condition completed, taking 129 ms',
      '  |==================================================| 20/20 - 2.00it/s',
      '[INFO ] stable-diffusion.cpp:5317 - sampling completed, taking 964.10s',
      '[INFO ] stable-diffusion.cpp:5335 - latent 1 decoded, taking 98.39s',
      '[INFO ] stable-diffusion.cpp:2475 - txt2img completed in 81.89s',
      "save result PNG image to 'output.png' (success)",
      "save result image to 'output_2.png'",
      "[INFO ] main.cpp:470 - save result MJPG AVI video to 'clip.avi'",
      '',
    ].join('\n');
    const events = parseAll(text);
    assert.equal(of(events, 'stage').find((e) => e.stage === 'textEncode' && e.phase === 'end')?.ms, 129);
    assert.deepEqual(of(events, 'finished'), [{ type: 'finished', ms: 81890 }]);
    assert.deepEqual(of(events, 'saved').map((e) => [e.path, e.ok]), [['output.png', true], ['output_2.png', true], ['clip.avi', true]]);
  });
});
