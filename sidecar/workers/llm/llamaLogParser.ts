/**
 * Reads llama.cpp's log (llama-server's stderr, or the lines node-llama-cpp forwards from the embedded library)
 * and pulls out what the arbiter needs: the buffers each device really got, how many layers were offloaded, what
 * each device had free at load time, and allocation failures.
 *
 * llama.cpp has renamed its log prefixes over time (`llm_load_tensors:` -> `load_tensors:`,
 * `llama_kv_cache_init:` -> `llama_kv_cache:`, `llama_new_context_with_model:` -> `llama_context:` /
 * `sched_reserve:`) and some builds prefix a timestamp and colour codes, so lines are matched by their stable
 * middle part. Pure functions: no I/O.
 */

import type { MeasuredBuffer } from '../../core/ports';
import { GiB, KiB, MiB, type Bytes } from '../../core/types';

export type LlamaBufferKind = 'model' | 'kv' | 'compute' | 'output';

export type LlamaLogEvent =
  /** `load_tensors: CUDA0 model buffer size = 852.89 MiB`, `llama_kv_cache: CUDA0 KV buffer size = ...`, ... */
  | { type: 'buffer'; kind: LlamaBufferKind; device: string; where: 'gpu' | 'cpu'; bytes: Bytes }
  /** `load_tensors: offloaded 33/33 layers to GPU` */
  | { type: 'offload'; offloaded: number; total: number }
  /** `llama_model_load_from_file_impl: using device CUDA0 (NVIDIA GeForce RTX 4090) - 22994 MiB free` */
  | { type: 'device'; device: string; name: string; free: Bytes }
  /** An allocation failure or a fatal load error, with the line that said so. */
  | { type: 'error'; oom: boolean; message: string };

// ANSI colour codes some builds put around the level and timestamp.
const ANSI = /\u001b\[[0-9;]*m/g;
const UNIT: Record<string, number> = { B: 1, KiB, KB: KiB, MiB, MB: MiB, GiB, GB: GiB };

/** Longest line parsed; the rest of a longer one is ignored (the lines of interest are short). */
export const MAX_LINE_CHARS = 8192;

// The device name starts only where a word starts (the lookbehind): otherwise every position inside a long run
// of non-space characters is tried as a start, and such a line takes quadratic time.
const BUFFER = /(?<!\S)(\S+)\s+(model |KV |compute |output )?buffer size\s*=\s*([\d.]+)\s*(GiB|MiB|KiB|GB|MB|KB|B)\b/;
const OLD_VRAM_USED = /llm_load_tensors: VRAM used:\s*([\d.]+)\s*(GiB|MiB|GB|MB)\b/;
const OFFLOAD = /offloaded (\d+)\/(\d+) layers to GPU/;
const DEVICE = /using device (\S+) \((.*?)\)(?: \([^)]*\))? - (\d+) MiB free/;
const OOM =
  /out of memory|out of device memory|cudaMalloc failed|hipMalloc failed|failed to allocate|allocation failed|not enough memory|insufficient memory|vk_error_out_of_device_memory|erroroutofmemory/i;
const FATAL = /error loading model|failed to load model|failed to open GGUF file|failed to create context|unable to load model/i;

/** One log line -> what it says, or null when it says nothing the arbiter uses. */
export function parseLlamaLogLine(rawLine: string): LlamaLogEvent | null {
  const line = rawLine.slice(0, MAX_LINE_CHARS).replace(ANSI, '').trim();
  if (!line) return null;
  const event = eventOf(line);
  // A figure llama.cpp never prints (`1.2.3 MiB`, a 400-digit count) makes the event meaningless.
  if (event && Object.values(event).some((value) => typeof value === 'number' && !Number.isFinite(value))) return null;
  return event;
}

function eventOf(line: string): LlamaLogEvent | null {

  const buffer = BUFFER.exec(line);
  if (buffer) {
    const [, device, kindWord, amount, unit] = buffer;
    return { type: 'buffer', kind: bufferKind(kindWord, line), device, where: deviceWhere(device), bytes: toBytes(amount, unit) };
  }
  const vramUsed = OLD_VRAM_USED.exec(line);
  if (vramUsed) return { type: 'buffer', kind: 'model', device: 'GPU', where: 'gpu', bytes: toBytes(vramUsed[1], vramUsed[2]) };

  const offload = OFFLOAD.exec(line);
  if (offload) return { type: 'offload', offloaded: Number(offload[1]), total: Number(offload[2]) };

  const device = DEVICE.exec(line);
  if (device) return { type: 'device', device: device[1], name: device[2], free: Number(device[3]) * MiB };

  if (OOM.test(line)) return { type: 'error', oom: true, message: line };
  if (FATAL.test(line)) return { type: 'error', oom: false, message: line };
  return null;
}

/** Which memory a llama.cpp buffer type lives in: `CPU`, `CPU_Mapped`, `CPU_REPACK`, `CUDA_Host` are host RAM. */
export function deviceWhere(device: string): 'gpu' | 'cpu' {
  return /^CPU/i.test(device) || /_Host$/i.test(device) ? 'cpu' : 'gpu';
}

function bufferKind(word: string | undefined, line: string): LlamaBufferKind {
  const explicit = word?.trim();
  if (explicit === 'model') return 'model';
  if (explicit === 'KV') return 'kv';
  if (explicit === 'compute') return 'compute';
  if (explicit === 'output') return 'output';
  // Older builds: `llm_load_tensors: CUDA0 buffer size = ...` names only the device.
  if (/kv_cache/.test(line)) return 'kv';
  if (/load_tensors/.test(line)) return 'model';
  return 'compute';
}

function toBytes(amount: string, unit: string): Bytes {
  return Math.round(Number(amount) * (UNIT[unit] ?? 1));
}

/** What one load (and its contexts) logged, accumulated line by line. */
export interface LlamaLogFacts {
  buffers: Extract<LlamaLogEvent, { type: 'buffer' }>[];
  offload?: { offloaded: number; total: number };
  devices: Extract<LlamaLogEvent, { type: 'device' }>[];
  errors: Extract<LlamaLogEvent, { type: 'error' }>[];
}

/** Accumulates facts from a stream of log text that may arrive in arbitrary chunks. */
export class LlamaLogParser {
  private partial = '';
  private facts: LlamaLogFacts = { buffers: [], devices: [], errors: [] };

  constructor(private readonly onEvent?: (event: LlamaLogEvent, line: string) => void) {}

  /** Feeds a chunk of log text; complete lines are parsed at once, a trailing fragment waits for the rest. */
  push(chunk: string): void {
    const lines = (this.partial + chunk).split(/\r?\n/);
    // Only the head of an unfinished line is kept: a stream without line breaks stays linear in time and small.
    this.partial = (lines.pop() ?? '').slice(0, MAX_LINE_CHARS);
    for (const line of lines) this.pushLine(line.slice(0, MAX_LINE_CHARS));
  }

  /** Parses whatever fragment is still waiting (at process exit). */
  flush(): void {
    if (this.partial) this.pushLine(this.partial);
    this.partial = '';
  }

  pushLine(line: string): void {
    const event = parseLlamaLogLine(line);
    if (!event) return;
    switch (event.type) {
      case 'buffer':
        this.facts.buffers.push(event);
        break;
      case 'offload':
        this.facts.offload = { offloaded: event.offloaded, total: event.total };
        break;
      case 'device':
        this.facts.devices.push(event);
        break;
      case 'error':
        this.facts.errors.push(event);
        break;
    }
    this.onEvent?.(event, line);
  }

  snapshot(): LlamaLogFacts {
    return {
      buffers: [...this.facts.buffers],
      offload: this.facts.offload,
      devices: [...this.facts.devices],
      errors: [...this.facts.errors],
    };
  }

  /** Forget what was seen (a new load starts). */
  reset(): void {
    this.facts = { buffers: [], devices: [], errors: [] };
  }
}

const KEY_OF_KIND: Record<LlamaBufferKind, string> = {
  model: 'llm.weights',
  kv: 'llm.kv',
  // The output buffer (logits) is allocated with the context, like the compute buffers.
  compute: 'llm.compute',
  output: 'llm.compute',
};

/** Sums logged buffers into calibration figures: `llm.weights`, `llm.kv`, `llm.compute`, per gpu/cpu. */
export function toMeasuredBuffers(buffers: readonly Extract<LlamaLogEvent, { type: 'buffer' }>[]): MeasuredBuffer[] {
  const sums = new Map<string, MeasuredBuffer>();
  for (const buffer of buffers) {
    const key = KEY_OF_KIND[buffer.kind];
    const id = `${key}|${buffer.where}`;
    const existing = sums.get(id);
    if (existing) existing.bytes += buffer.bytes;
    else sums.set(id, { key, bytes: buffer.bytes, where: buffer.where });
  }
  return [...sums.values()];
}
