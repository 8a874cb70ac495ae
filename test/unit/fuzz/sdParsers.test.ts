/**
 * Fuzzing of what the sd.cpp worker reads from the binary: its log (SdLogParser) and its usage text (parseSdHelp).
 * Properties: no exception (the help parser may only refuse with SdBinaryError), no NaN or infinite figure, the
 * same events whatever the chunk boundaries, and every input done in bounded time (the test timeout).
 */

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { parseSdHelp, SdBinaryError } from '../../../sidecar/workers/sd/sdHelp';
import { SdLogParser, type SdLogEvent } from '../../../sidecar/workers/sd/sdLogParser';
import { SD_2024_HELP, SD_CLI_2025_HELP, SD_CLI_2026_HELP, SD_SERVER_2026_HELP } from '../workers/sd/fixtures/helpSamples';
import { assertFiniteNumbers, cases, describeCase, fuzz, mutateTextTimes, randomChunks } from './fuzzKit';

/** A run of a current sd-cli at -v, as its lines look (engines.md), with an allocation failure and a retry. */
const SD_LOG = [
  '[INFO ] ggml_extend.hpp:65   - ggml_cuda_init: found 1 CUDA devices:',
  "[INFO ] stable-diffusion.cpp:201  - loading model from 'models/sdxl.safetensors'",
  '  |==================================================| 2513/2513 - 1.98GB/s',
  '[INFO ] stable-diffusion.cpp:702  - total params memory size = 6558.89MB (VRAM 6558.89MB, RAM 0.00MB): text_encoders 1564.36MB(VRAM), diffusion_model 4900.07MB(VRAM), vae 94.47MB(VRAM)',
  '[INFO ] stable-diffusion.cpp:380  - clip params backend buffer size =  469.44 MB(VRAM) (196 tensors)',
  '[DEBUG] ggml_extend.hpp:1579 - clip compute buffer size: 1.40 MB(VRAM)',
  '[INFO ] stable-diffusion.cpp:2410 - get_learned_condition completed, taking 129 ms',
  '[INFO ] stable-diffusion.cpp:2490 - generating image: 1/2 - seed 42',
  '[DEBUG] ggml_extend.hpp:1579 - unet compute buffer size: 830.41 MB(VRAM) on CUDA0 (peak across 1 segment)',
  '\r  |=====>            | 3/20 - 1.23s/it\x1b[K\r  |==========>       | 7/20 - 4.10it/s\x1b[K\r  |==================| 20/20 - 4.12it/s\x1b[K',
  '[INFO ] stable-diffusion.cpp:2530 - sampling completed, taking 2.64s',
  '[INFO ] stable-diffusion.cpp:2601 - decoding 1 latents',
  'ggml_backend_cuda_buffer_type_alloc_buffer: allocating 6656.25 MiB on device 0: cudaMalloc failed: out of memory',
  '[ERROR] ggml_extend.hpp:1600 - vae: failed to allocate the compute buffer',
  '[INFO ] stable-diffusion.cpp:2620 - vae compute buffer size: 6656.25 MB(VRAM)',
  '[INFO ] stable-diffusion.cpp:2622 - latent 1 decoded, taking 0.13s',
  '[INFO ] stable-diffusion.cpp:2630 - decode_first_stage completed, taking 0.13s',
  '[INFO ] stable-diffusion.cpp:2700 - generate_image completed in 2.97s',
  "[INFO ] main.cpp:441  - save result image 0 to 'out.png' (success)",
  "[INFO ] main.cpp:441  - save result image to 'out_1.png'",
  '[ERROR] stable-diffusion.cpp:2633 - decode_first_stage failed for latent 1',
  'CUDA error: out of memory',
  'GGML_ASSERT(ctx) failed',
  "[ERROR] model.cpp:1000 - load model from 'x.gguf' failed",
  'error: unknown argument: --bogus',
  '',
].join('\n');

const SD_WORDS = [
  ' compute buffer size: ',
  ' params backend buffer size = ',
  'total params memory size = ',
  ' MB(VRAM)',
  ' MB(RAM)',
  'MB(VRAM), ',
  'taking ',
  ' ms',
  's/it',
  'it/s',
  '| 1/1 - ',
  'generating image: ',
  'generating video: 1/1',
  "save result image to '",
  'generate_image completed in ',
  'decoding 2 latents',
  'failed to allocate',
  'memory allocation of size 123456 failed',
  'allocating 12.5 MiB on device 0: cudaMalloc failed',
  'load model from ',
  'loading model from ',
  '[ERROR] ',
  'vae: ',
  'retrying',
];

const KNOWN_EVENTS = new Set(['stage', 'image', 'step', 'buffer', 'saved', 'finished', 'backend', 'error']);
const STAGES = new Set(['load', 'textEncode', 'diffusion', 'vaeDecode', 'save']);

function parseChunks(chunks: readonly string[]): SdLogEvent[] {
  const parser = new SdLogParser();
  const events: SdLogEvent[] = [];
  for (const chunk of chunks) events.push(...parser.push(chunk));
  events.push(...parser.end());
  return events;
}

function checkEvents(events: SdLogEvent[], where: string): void {
  assertFiniteNumbers(events, where);
  for (const event of events) {
    assert.ok(KNOWN_EVENTS.has(event.type), `${where}: unknown event ${JSON.stringify(event)}`);
    if (event.type === 'stage') assert.ok(STAGES.has(event.stage), `${where}: unknown stage ${event.stage}`);
    if (event.type === 'buffer') assert.ok(event.buffer.bytes >= 0, `${where}: negative buffer ${JSON.stringify(event)}`);
    if (event.type === 'step') assert.ok(event.secondsPerStep >= 0, `${where}: negative step time`);
  }
}

describe('fuzz: sd.cpp log parser', () => {
  it('turns mutated logs into the same sane events whatever the chunking', { timeout: 60_000 }, async () => {
    let withEvents = 0;
    await fuzz('sdLog', cases(1500), (random, index) => {
      const text = mutateTextTimes(random, SD_LOG, SD_WORDS);
      const where = describeCase('sdLog', index, text);
      const whole = parseChunks([text]);
      checkEvents(whole, where);
      assert.deepEqual(parseChunks(randomChunks(random, text, 80)), whole, `${where}: chunking changed the events`);
      if (whole.length > 0) withEvents++;
    });
    assert.ok(withEvents > 0, 'the mutated logs still produce events (the corpus is not all garbage)');
  });

  it('stays linear on pathological lines: huge words, no newline for megabytes, repeated markers', { timeout: 60_000 }, async () => {
    const pathological = [
      'a'.repeat(200_000),
      `x${' compute buffer size: '.repeat(5000)}`,
      'load model from '.repeat(10_000),
      '|'.repeat(100_000),
      `| 1/2 - ${'1'.repeat(100_000)}`,
      `total params memory size = 1MB (VRAM 1MB, RAM 1MB): ${'text_encoders'.repeat(20_000)}`,
      '\x1b['.repeat(50_000),
      `${'9'.repeat(400)} compute buffer size: ${'9'.repeat(400)} MB(VRAM)`,
    ];
    for (const [index, line] of pathological.entries()) {
      const where = describeCase('sdLog-pathological', index, line);
      const parser = new SdLogParser();
      const events: SdLogEvent[] = [];
      // Fed in 4 KiB chunks without a newline (a binary spewing one endless line), then ended.
      for (let at = 0; at < line.length; at += 4096) events.push(...parser.push(line.slice(at, at + 4096)));
      events.push(...parser.end(), ...parser.push(`${line}\n`));
      checkEvents(events, where);
      // Lets the test's timeout fire between cases if one is slow.
      await new Promise((resolve) => setImmediate(resolve));
    }
  });
});

const HELPS = [SD_2024_HELP, SD_CLI_2025_HELP, SD_CLI_2026_HELP, SD_SERVER_2026_HELP];
const HELP_WORDS = ['  --vae-tiling  ', '\n  -M, --mode <string>  vid_gen', '--backend', 'usage:', '\nCLI Options:\n', '\nServer Options:\n', '  -', ', --', '<int>'];

describe('fuzz: sd.cpp --help parser', () => {
  it('reads mutated usage texts, or refuses them with SdBinaryError naming the binary', { timeout: 60_000 }, async () => {
    const binary = '/opt/sd/bin/sd-cli';
    let accepted = 0;
    let refused = 0;
    await fuzz('sdHelp', cases(1500), (random, index) => {
      const mutated = mutateTextTimes(random, random.pick(HELPS), HELP_WORDS);
      // A third are cut short, as by a binary that dies while printing.
      const text = random.chance(0.3) ? mutated.slice(0, random.int(mutated.length)) : mutated;
      const where = describeCase('sdHelp', index, text);
      try {
        const info = parseSdHelp(text, binary);
        accepted++;
        assert.ok(['sd-cli', 'sd', 'sd-server'].includes(info.kind), `${where}: kind ${info.kind}`);
        assert.ok(info.flags.every((flag) => /^--?[A-Za-z][\w-]*$/.test(flag)), `${where}: odd flag in ${info.flags.join(' ')}`);
        assert.equal(info.binaryPath, binary);
      } catch (error) {
        assert.ok(error instanceof SdBinaryError, `${where}: threw ${String(error)}`);
        assert.equal(error.reason, 'not-sdcpp', where);
        assert.ok(error.message.includes(binary), `${where}: message does not name the binary: ${error.message}`);
        assert.match(error.message, /vramRelay\.image\.binaryPath/, where);
        refused++;
      }
    });
    assert.ok(accepted > 0 && refused > 0, `both outcomes seen (accepted ${accepted}, refused ${refused})`);
  });

  it('refuses output that is not a usage text at all, and huge outputs, quickly', { timeout: 30_000 }, () => {
    for (const text of ['', '\0\0\0', 'ls: cannot access', '\x7fELF\x02\x01\x01', '-'.repeat(500_000), `usage:\n${'  --x  y\n'.repeat(100_000)}`]) {
      assert.throws(() => parseSdHelp(text, '/bin/ls'), (error: unknown) => error instanceof SdBinaryError && error.reason === 'not-sdcpp' && error.message.includes('/bin/ls'));
    }
  });
});
