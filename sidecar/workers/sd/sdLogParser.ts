/**
 * Reads sd.cpp's log as it arrives and turns it into events: stages, sampling steps, buffer sizes, saved files and
 * errors. Pure and incremental: feed it chunks of one stream (stdout or stderr, one parser each) in order.
 *
 * Lines it understands (from sd.cpp releases 2024-2026; the `[INFO ] file.cpp:123 - ` prefix varies and is ignored):
 *   get_learned_condition completed, taking 129 ms          (older builds: ms; newer: 0.16s)
 *   generating image: 1/2 - seed 42
 *     |=========>            | 7/20 - 1.23s/it               (`\r`-separated, `it/s` when fast, ANSI erase codes)
 *   sampling completed, taking 2.64s
 *   decoding 1 latents / latent 1 decoded, taking 0.13s / decode_first_stage completed, taking 0.13s
 *   generate_image completed in 2.97s                        (older: txt2img completed in; video: generate_video)
 *   save result image 0 to 'out.png' (success)               (older: save result image to 'out.png')
 *   vae compute buffer size: 1664.00 MB(VRAM)                (newer: ... MB(VRAM) on CUDA0 (peak across 1 segment))
 *   total params memory size = 6558.89MB (VRAM 6558.89MB, RAM 0.00MB): text_encoders 1564.36MB(VRAM), ...
 *   clip params backend buffer size =  469.44 MB(VRAM) (196 tensors)
 *   vae: failed to allocate the compute buffer / decode_first_stage failed for latent 1 / CUDA error: out of memory
 */

import type { MeasuredBuffer } from '../../core/ports';
import type { ImageComponent } from '../../core/types';
import { MiB } from '../../core/types';

/** The stages of one sd.cpp run, in order. `load` is reading the weights; `save` is writing the files. */
export type SdStage = 'load' | 'textEncode' | 'diffusion' | 'vaeDecode' | 'save';

export type SdErrorKind =
  /** An allocation failed: the plan asked for more memory than there was. */
  | 'oom'
  /** The VAE decode failed (newer builds; usually an allocation underneath). */
  | 'decodeFailed'
  /** A graph could not be computed. */
  | 'computeFailed'
  /** The model could not be read: wrong path, not a model, unsupported format. */
  | 'modelLoad'
  /** sd.cpp refused the command line. */
  | 'usage'
  /** The backend stopped the process (CUDA/ROCm/Vulkan error, GGML_ASSERT). */
  | 'backendAbort'
  /** Anything else sd.cpp logged at error level. */
  | 'other';

export type SdLogEvent =
  | { type: 'stage'; stage: SdStage; phase: 'start' | 'end'; ms?: number }
  | { type: 'image'; index: number; count: number; seed?: number }
  | { type: 'step'; step: number; totalSteps: number; secondsPerStep: number }
  | { type: 'buffer'; buffer: MeasuredBuffer; name: string }
  | { type: 'saved'; path: string; index?: number; ok: boolean }
  | { type: 'finished'; ms: number }
  | { type: 'backend'; backend: 'cuda' | 'vulkan' | 'rocm' | 'metal' | 'cpu' }
  | { type: 'error'; kind: SdErrorKind; message: string; component?: string };

/** Sizes in sd.cpp's logs are MiB printed as "MB". */
const mb = (text: string): number => Math.round(Number(text) * MiB);

/** Out-of-memory wordings seen across engines and drivers (lower case). */
export const OOM_SUBSTRINGS = [
  'out of memory',
  'out of device memory',
  'cudamalloc failed',
  'hipmalloc failed',
  'failed to allocate',
  'allocation failed',
  'alloc compute buffer failed',
  'not enough memory',
  'insufficient memory',
  'vk_error_out_of_device_memory',
  'erroroutofmemory',
  'erroroutofdevicememory',
];

/** sd.cpp module names (the `<name> compute buffer size` prefix) and the image component each belongs to. */
export function componentOf(name: string): ImageComponent | undefined {
  const n = name.toLowerCase();
  if (/^(clip|clip_[lg]|t5|t5xxl|umt5|llm|qwen(2|3)?vl|qwenvl|gemma|mistral|cond|conditioner|te|text_?encoders?)$/.test(n)) return 'textEncoder';
  if (/^(unet|flux|flux2|mmdit|dit|wan|diffusion|diffusion_model|qwen_image|z_image|chroma|lumina|ltx|ltxv|sd3|model)$/.test(n)) return 'diffusion';
  if (/^(vae|wan_vae|tae|taesd|autoencoder|first_stage|ltx_vae)$/.test(n)) return 'vae';
  return undefined;
}

function bufferKey(name: string, what: 'compute' | 'weights'): string {
  return `${componentOf(name) ?? name.toLowerCase()}.${what}`;
}

/**
 * Longest segment parsed; the rest of a longer one is ignored. sd.cpp's lines of interest are short, and a binary
 * that prints megabytes without a line break must not make the parser slow or hold it all.
 */
export const MAX_SEGMENT_CHARS = 8192;

const ANSI = /\x1b\[[0-9;?]*[A-Za-z]/g;
const STEP = /\|\s*(\d+)\/(\d+)\s*-\s*([\d.]+|inf|nan)\s*(s\/it|it\/s)/i;
// Names are matched as the whole word before the marker (the lookbehind), then cut to start at a letter: letting the
// regex try every position inside a long word as the start of the name takes quadratic time.
const COMPUTE_BUFFER = /(?<![\w.-])([\w.-]+) compute buffer size:\s*([\d.]+)\s*MB\s*\((VRAM|RAM)\)/;
const PARAMS_BUFFER = /(?<![\w.-])([\w.-]+) params backend buffer size\s*=\s*([\d.]+)\s*MB\s*\((VRAM|RAM)\)/;
const TOTAL_PARAMS = /total params memory size\s*=\s*[\d.]+\s*MB\s*\(VRAM\s*([\d.]+)\s*MB,\s*RAM\s*([\d.]+)\s*MB\)(?::\s*(.*))?/;
const TOTAL_PART = /(?<!\w)(\w+)\s+([\d.]+)\s*MB\s*\((VRAM|RAM)\)/g;
const TAKING = /taking\s+([\d.]+)\s*(ms|s)\b/;

/** Incremental parser of one output stream. */
export class SdLogParser {
  private pending = '';
  /** The start of a segment whose step was already reported, so that completing it does not report it twice. */
  private reportedPartial = '';
  private stage: SdStage | undefined;
  /** Bytes of an allocation the driver just refused, until the line naming whose buffer it was arrives. */
  private refusedBytes: number | undefined;

  /** A resident server starts a new job: its stages start over. */
  resetStage(): void {
    this.stage = undefined;
  }

  /** The stage the log last entered (undefined before the first stage line). */
  get currentStage(): SdStage | undefined {
    return this.stage;
  }

  /** Feeds a chunk; returns the events of every segment it completes (and of a progress bar still being drawn). */
  push(chunk: string): SdLogEvent[] {
    const events: SdLogEvent[] = [];
    const parts = (this.pending + chunk).split(/\r\n|\r|\n/);
    // Only the head of an unterminated segment is kept, so that a stream without line breaks costs linear time.
    this.pending = (parts.pop() ?? '').slice(0, MAX_SEGMENT_CHARS);
    for (const whole of parts) {
      const segment = whole.slice(0, MAX_SEGMENT_CHARS);
      // A bar already reported while drawn: the rest of its segment still counts.
      const reported = this.reportedPartial !== '' && segment.startsWith(this.reportedPartial);
      this.reportedPartial = '';
      events.push(...this.parseSegment(segment, reported));
    }
    // sd.cpp redraws its progress bar with `\r` and ends the line only after the last step: report steps at once.
    if (this.pending !== '' && !(this.reportedPartial !== '' && this.pending.startsWith(this.reportedPartial))) {
      const step = this.stepEvent(stripAnsi(this.pending));
      if (step) {
        events.push(...this.enter('diffusion'), step);
        this.reportedPartial = this.pending;
      }
    }
    return events;
  }

  /** Flushes the last unterminated segment (call when the stream ends). */
  end(): SdLogEvent[] {
    const rest = this.pending;
    this.pending = '';
    if (rest === '') return [];
    const reported = this.reportedPartial !== '' && rest.startsWith(this.reportedPartial);
    this.reportedPartial = '';
    return this.parseSegment(rest, reported);
  }

  /** Parses one complete segment (a line, or one redraw of the progress bar). */
  parseSegment(raw: string, skipStep = false): SdLogEvent[] {
    return this.parseLine(stripAnsi(raw.slice(0, MAX_SEGMENT_CHARS)), skipStep).filter(hasFiniteFigures);
  }

  private parseLine(line: string, skipStep: boolean): SdLogEvent[] {
    if (line.trim() === '') return [];
    const events: SdLogEvent[] = [];

    if (!skipStep) {
      const step = this.stepEvent(line);
      if (step) events.push(...this.enter('diffusion'), step);
    }

    // Backend announcements (before anything else in the log).
    if (/ggml_cuda_init: found|Using CUDA backend/i.test(line)) events.push({ type: 'backend', backend: /ROCm/i.test(line) ? 'rocm' : 'cuda' });
    else if (/ggml_vulkan: Found|Using Vulkan backend/i.test(line)) events.push({ type: 'backend', backend: 'vulkan' });
    else if (/Using Metal backend|ggml_metal_init/i.test(line)) events.push({ type: 'backend', backend: 'metal' });
    else if (/Using CPU backend/i.test(line)) events.push({ type: 'backend', backend: 'cpu' });

    // Stages.
    if (/loading (?:diffusion )?model from '/.test(line) && !/completed/.test(line)) events.push(...this.enter('load'));
    if (/get_learned_condition completed/.test(line)) {
      events.push(...this.enter('textEncode'), { type: 'stage', stage: 'textEncode', phase: 'end', ...taking(line) });
    }
    const image = /generating (?:image|video): (\d+)\/(\d+)(?: - seed (-?\d+))?/.exec(line);
    if (image) {
      events.push(...this.enter('diffusion'), {
        type: 'image',
        index: Number(image[1]),
        count: Number(image[2]),
        ...(image[3] !== undefined ? { seed: Number(image[3]) } : {}),
      });
    }
    if (/sampling completed, taking/.test(line)) events.push({ type: 'stage', stage: 'diffusion', phase: 'end', ...taking(line) });
    if (/decoding \d+ latents?/.test(line)) events.push(...this.enter('vaeDecode'));
    if (/decode_first_stage completed/.test(line)) {
      events.push(...this.enter('vaeDecode'), { type: 'stage', stage: 'vaeDecode', phase: 'end', ...taking(line) });
    }
    const finished = /(?:generate_image|generate_video|txt2img|img2img|img2vid) completed in ([\d.]+)\s*s/.exec(line);
    if (finished) events.push({ type: 'finished', ms: Math.round(Number(finished[1]) * 1000) });
    const saved = /save result (?:\w+ ){0,2}(?:image|video)(?: (\d+))? to '([^']*)'(?: \((success|failure)\))?/.exec(line);
    if (saved) {
      events.push(...this.enter('save'), {
        type: 'saved',
        path: saved[2],
        ...(saved[1] !== undefined ? { index: Number(saved[1]) } : {}),
        ok: saved[3] !== 'failure',
      });
    }

    // Buffers.
    const compute = COMPUTE_BUFFER.exec(line);
    if (compute) events.push(...bufferEvent(compute[1], 'compute', compute[2], compute[3]));
    const params = PARAMS_BUFFER.exec(line);
    if (params) events.push(...bufferEvent(params[1], 'weights', params[2], params[3]));
    const total = TOTAL_PARAMS.exec(line);
    if (total) {
      events.push(...this.enter('load'), { type: 'stage', stage: 'load', phase: 'end' });
      events.push({ type: 'buffer', name: 'total', buffer: { key: 'total.weights', bytes: mb(total[1]), where: 'gpu' } });
      events.push({ type: 'buffer', name: 'total', buffer: { key: 'total.weights', bytes: mb(total[2]), where: 'cpu' } });
      for (const part of (total[3] ?? '').matchAll(TOTAL_PART)) {
        if (Number(part[2]) > 0) events.push(...bufferEvent(part[1], 'weights', part[2], part[3]));
      }
    }

    // A refused compute buffer logs no size line; the driver's refusal says how much it asked for.
    const refused = /allocating ([\d.]+) MiB on device \d+: \w+ failed|memory allocation of size (\d+) failed/i.exec(line);
    if (refused) this.refusedBytes = refused[1] !== undefined ? mb(refused[1]) : Number(refused[2]);
    const error = errorEvent(line);
    if (error) {
      if (error.type === 'error' && error.component && this.refusedBytes !== undefined && /compute buffer/.test(line)) {
        events.push({ type: 'buffer', name: error.component, buffer: { key: bufferKey(error.component, 'compute'), bytes: this.refusedBytes, where: 'gpu' } });
        this.refusedBytes = undefined;
      }
      events.push(error);
    }
    return events;
  }

  private stepEvent(line: string): SdLogEvent | undefined {
    const m = STEP.exec(line);
    if (!m) return undefined;
    const value = Number(m[3]);
    const perStep = m[4].toLowerCase() === 's/it' ? value : value > 0 ? 1 / value : 0;
    if (!Number.isFinite(Number(m[1])) || !Number.isFinite(Number(m[2]))) return undefined;
    return { type: 'step', step: Number(m[1]), totalSteps: Number(m[2]), secondsPerStep: Number.isFinite(perStep) ? perStep : 0 };
  }

  /** A start event when the log moves to a new stage. */
  private enter(stage: SdStage): SdLogEvent[] {
    if (this.stage === stage) return [];
    this.stage = stage;
    return [{ type: 'stage', stage, phase: 'start' }];
  }
}

/** The buffer event of a size line; none when the word before the marker holds no name (no letter). */
function bufferEvent(word: string, what: 'compute' | 'weights', size: string, where: string): SdLogEvent[] {
  const name = word.replace(/^[^A-Za-z]+/, '');
  if (!name) return [];
  return [{ type: 'buffer', name, buffer: { key: bufferKey(name, what), bytes: mb(size), where: where === 'VRAM' ? 'gpu' : 'cpu' } }];
}

function taking(line: string): { ms?: number } {
  const m = TAKING.exec(line);
  if (!m) return {};
  const ms = Math.round(m[2] === 'ms' ? Number(m[1]) : Number(m[1]) * 1000);
  return Number.isFinite(ms) ? { ms } : {};
}

/** A figure sd.cpp never prints (`1.2.3 MB`, a 400-digit size) makes an event meaningless: it is dropped. */
function hasFiniteFigures(event: SdLogEvent): boolean {
  const figures = event.type === 'buffer' ? [event.buffer.bytes] : Object.values(event).filter((value) => typeof value === 'number');
  return figures.every((value) => Number.isFinite(value));
}

function stripAnsi(text: string): string {
  return text.replace(ANSI, '');
}

/** The error a line reports, if any. Lines that only mention a retry (`retrying`, `flushing`) are not errors. */
export function errorEvent(line: string): SdLogEvent | undefined {
  const lower = line.toLowerCase();
  const message = line.replace(/^\s*\[[A-Z ]+\]\s*(?:[\w./-]+:\d+\s*-\s*)?/, '').trim();
  const component = /(?:^|\s|-\s)([A-Za-z][\w]*): failed to allocate/.exec(line)?.[1];
  const withComponent = component ? { component } : {};

  if (/decode_first_stage failed|decode failed for latent/.test(lower)) return { type: 'error', kind: 'decodeFailed', message };
  if (/(cuda|rocm|hip|vulkan|metal|sycl) error|ggml_assert|ggml_abort|terminate called|segmentation fault|core dumped/.test(lower)) {
    // A backend error that is an out-of-memory stays one: the ladder of safer plans helps there.
    return { type: 'error', kind: OOM_SUBSTRINGS.some((s) => lower.includes(s)) ? 'oom' : 'backendAbort', message };
  }
  if (/retrying|flushing|will retry/.test(lower)) return undefined;
  if (OOM_SUBSTRINGS.some((s) => lower.includes(s))) return { type: 'error', kind: 'oom', message, ...withComponent };
  if (/compute failed/.test(lower)) return { type: 'error', kind: 'computeFailed', message };
  if (
    /load model from .* failed|get sd version from file failed|init model loader from file failed|failed to open '|failed to load model|new_sd_ctx_t failed|loading model from .* failed|invalid model|unknown model|file not found|no such file/.test(
      lower,
    )
  ) {
    return { type: 'error', kind: 'modelLoad', message };
  }
  if (/error: (unknown argument|invalid parameter|the following arguments are required|invalid weight format)/.test(lower)) {
    return { type: 'error', kind: 'usage', message };
  }
  if (/^\s*\[error\s*\]/.test(lower) || /generate failed/.test(lower)) return { type: 'error', kind: 'other', message };
  return undefined;
}

/** Keeps the largest figure per key and place: several text encoders log one buffer each, batches log per image. */
export function peakBuffers(buffers: readonly MeasuredBuffer[]): MeasuredBuffer[] {
  const peaks = new Map<string, MeasuredBuffer>();
  for (const b of buffers) {
    const id = `${b.key}\u0000${b.where}`;
    const seen = peaks.get(id);
    if (!seen || b.bytes > seen.bytes) peaks.set(id, { ...b });
  }
  return [...peaks.values()];
}
