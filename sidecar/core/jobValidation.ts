/**
 * Admission checks that need no estimate: sizes, counts, paths and texts a job must have before it is queued. Each
 * problem comes back as a sentence that says what to use instead.
 */

import type { ImageJobSpec, JobSpec, LlmTask, SdCapabilities } from './types';

export interface JobLimits {
  /** Largest width or height accepted (sd.cpp has no hard limit; beyond this the VAE decode alone is tens of GB). */
  maxImageSide: number;
  maxBatch: number;
  maxSteps: number;
  maxFrames: number;
  /**
   * Longest prompt (and negative prompt) of an image job, in UTF-8 bytes. sd.cpp takes it as one command-line
   * argument, which Linux caps at 128 KiB; far below that, the text encoders have long stopped reading.
   */
  maxPromptBytes: number;
}

export const DEFAULT_JOB_LIMITS: JobLimits = { maxImageSide: 8192, maxBatch: 64, maxSteps: 1000, maxFrames: 1024, maxPromptBytes: 65_536 };

const LLM_TASKS: readonly LlmTask[] = ['completion', 'infill', 'chat', 'enhancePrompt', 'tagImage'];
const IMAGE_PARTS: readonly string[] = ['vae', 'clipL', 'clipG', 't5xxl', 'llm', 'taesd'];

/** The first problem with `spec`, or null when it can be queued. */
export function validateJobSpec(spec: JobSpec, limits: JobLimits = DEFAULT_JOB_LIMITS, caps?: SdCapabilities): string | null {
  if (!spec || typeof spec !== 'object') return 'A job needs a spec: give an object with `kind` "image" or "llm".';
  if (spec.kind === 'image') return imageProblem(spec, limits, caps);
  if (spec.kind === 'llm') {
    if (!LLM_TASKS.includes(spec.task)) return `Unknown LLM task ${JSON.stringify(spec.task)}: use one of ${LLM_TASKS.join(', ')}.`;
    if (!Number.isInteger(spec.contextSize) || spec.contextSize <= 0) {
      return `contextSize must be a whole number of tokens above 0, not ${String(spec.contextSize)}: use the context the request needs, such as 4096.`;
    }
    return null;
  }
  return `Unknown job kind ${JSON.stringify((spec as { kind?: unknown }).kind)}: use "image" or "llm".`;
}

function imageProblem(spec: ImageJobSpec, limits: JobLimits, caps?: SdCapabilities): string | null {
  if (typeof spec.modelPath !== 'string' || spec.modelPath.trim() === '') {
    return 'The image job has no model: set vramRelay.image.modelPath or give `modelPath`.';
  }
  if (typeof spec.outputPath !== 'string' || spec.outputPath.trim() === '') return 'The image job has nowhere to save its result: give an `outputPath`.';
  if (typeof spec.prompt !== 'string') return 'The image job has no prompt: give a `prompt` (text; it may be empty).';
  if (spec.negativePrompt !== undefined && typeof spec.negativePrompt !== 'string') return 'negativePrompt must be text: give text, or leave it out.';
  const parts = partsProblem(spec.parts);
  if (parts) return parts;
  // sd.cpp receives these as command-line arguments and paths, which cannot hold a NUL character.
  const texts: [string, string | undefined][] = [
    ['modelPath', spec.modelPath],
    ['outputPath', spec.outputPath],
    ['prompt', spec.prompt],
    ['negativePrompt', spec.negativePrompt],
    ['samplingMethod', spec.samplingMethod],
    ...Object.entries(spec.parts ?? {}).map(([part, path]): [string, string | undefined] => [`parts.${part}`, path]),
  ];
  for (const [name, text] of texts) {
    if (typeof text === 'string' && text.includes('\0')) return `${name} contains a NUL character (\\0), which no program can receive: remove it.`;
  }
  for (const [name, text] of [['prompt', spec.prompt], ['negativePrompt', spec.negativePrompt]] as const) {
    const bytes = Buffer.byteLength(text ?? '', 'utf8');
    if (bytes > limits.maxPromptBytes) {
      return `The ${name} is ${bytes} bytes long, above the limit of ${limits.maxPromptBytes}: shorten it (the text encoders read only its first few hundred words).`;
    }
  }
  for (const side of ['width', 'height'] as const) {
    const problem = checkSide(side, spec[side], limits.maxImageSide);
    if (problem) return problem;
  }
  const batch = checkCount('batch', spec.batch, limits.maxBatch, 'images per job');
  if (batch) return batch;
  const steps = checkCount('steps', spec.steps, limits.maxSteps, 'sampling steps');
  if (steps) return steps;
  if (spec.frames !== undefined) {
    const frames = checkCount('frames', spec.frames, limits.maxFrames, 'frames');
    if (frames) return frames;
    if (spec.frames > 1 && caps && !caps.videoGeneration) {
      return `This sd.cpp build cannot generate video (no -M vid_gen): use frames 1, or a newer sd.cpp release.`;
    }
  }
  // sd.cpp reads the seed as a 64-bit integer; beyond 2^53 JavaScript prints it in exponent form.
  if (!Number.isSafeInteger(spec.seed)) {
    return `seed must be a whole number (-1 for a random one), not ${String(spec.seed)}: use -1 or a whole number below ${Number.MAX_SAFE_INTEGER}.`;
  }
  if (spec.cfgScale !== undefined && (typeof spec.cfgScale !== 'number' || !Number.isFinite(spec.cfgScale))) {
    return `cfgScale must be a finite number, not ${String(spec.cfgScale)}: use a number such as 7, or leave it out.`;
  }
  return null;
}

function partsProblem(parts: ImageJobSpec['parts']): string | null {
  if (parts === undefined) return null;
  if (typeof parts !== 'object' || parts === null || Array.isArray(parts)) return `parts must be an object of file paths such as {"vae": "/models/vae.safetensors"}.`;
  for (const [part, path] of Object.entries(parts)) {
    if (!IMAGE_PARTS.includes(part)) return `Unknown model part ${JSON.stringify(part)}: use ${IMAGE_PARTS.join(', ')}.`;
    if (path !== undefined && (typeof path !== 'string' || path.trim() === '')) {
      return `parts.${part} must be the path of a model file, not ${JSON.stringify(path)}: give the path as text, or leave the part out.`;
    }
  }
  return null;
}

function checkSide(name: 'width' | 'height', value: number, max: number): string | null {
  if (typeof value !== 'number' || !Number.isInteger(value) || value <= 0) {
    return `${name} must be a whole number of pixels above 0, not ${String(value)}: use a multiple of 8 such as 512 or 1024.`;
  }
  if (value > max) return `${name} ${value} is above the ${max} px limit: use ${max} or less, and upscale afterwards if needed.`;
  if (value % 8 !== 0) {
    const lower = Math.floor(value / 8) * 8;
    const upper = lower + 8;
    // The nearest valid size first (the lower one on a tie).
    const options = lower === 0 ? `${upper}` : value - lower <= upper - value ? `${lower} or ${upper}` : `${upper} or ${lower}`;
    return `${name} ${value} is not a multiple of 8, which sd.cpp requires: use ${options}.`;
  }
  return null;
}

function checkCount(name: string, value: number, max: number, what: string): string | null {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) return `${name} must be a whole number of ${what}, at least 1, not ${String(value)}: use a number from 1 to ${max}.`;
  if (value > max) return `${name} ${value} is above the limit of ${max} ${what}: use ${max} or less, or split the job.`;
  return null;
}
