/**
 * Admission checks that need no estimate: sizes, counts and paths a job must have before it is queued. Each
 * problem comes back as a sentence that says what to use instead.
 */

import type { JobSpec, LlmTask, SdCapabilities } from './types';

export interface JobLimits {
  /** Largest width or height accepted (sd.cpp has no hard limit; beyond this the VAE decode alone is tens of GB). */
  maxImageSide: number;
  maxBatch: number;
  maxSteps: number;
  maxFrames: number;
}

export const DEFAULT_JOB_LIMITS: JobLimits = { maxImageSide: 8192, maxBatch: 64, maxSteps: 1000, maxFrames: 1024 };

const LLM_TASKS: readonly LlmTask[] = ['completion', 'infill', 'chat', 'enhancePrompt', 'tagImage'];

/** The first problem with `spec`, or null when it can be queued. */
export function validateJobSpec(spec: JobSpec, limits: JobLimits = DEFAULT_JOB_LIMITS, caps?: SdCapabilities): string | null {
  if (!spec || typeof spec !== 'object') return 'A job needs a spec object with `kind` "image" or "llm".';
  if (spec.kind === 'image') {
    if (typeof spec.modelPath !== 'string' || spec.modelPath.trim() === '') {
      return 'The image job has no model: set vramRelay.image.modelPath or give `modelPath`.';
    }
    if (typeof spec.outputPath !== 'string' || spec.outputPath.trim() === '') return 'The image job needs an `outputPath` for its result.';
    if (typeof spec.prompt !== 'string') return 'The image job needs a `prompt` (text; it may be empty).';
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
    if (!Number.isInteger(spec.seed)) return `seed must be a whole number (-1 for a random one), not ${String(spec.seed)}.`;
    return null;
  }
  if (spec.kind === 'llm') {
    if (!LLM_TASKS.includes(spec.task)) return `Unknown LLM task ${JSON.stringify(spec.task)}: use one of ${LLM_TASKS.join(', ')}.`;
    if (!Number.isInteger(spec.contextSize) || spec.contextSize <= 0) {
      return `contextSize must be a whole number of tokens above 0, not ${String(spec.contextSize)}.`;
    }
    return null;
  }
  return `Unknown job kind ${JSON.stringify((spec as { kind?: unknown }).kind)}: use "image" or "llm".`;
}

function checkSide(name: 'width' | 'height', value: number, max: number): string | null {
  if (typeof value !== 'number' || !Number.isInteger(value) || value <= 0) {
    return `${name} must be a whole number of pixels above 0, not ${String(value)}.`;
  }
  if (value > max) return `${name} ${value} is above the ${max} px limit: use ${max} or less, and upscale afterwards if needed.`;
  if (value % 8 !== 0) {
    const lower = Math.floor(value / 8) * 8;
    const upper = lower + 8;
    const options = lower > 0 ? `${lower} or ${upper}` : `${upper}`;
    return `${name} ${value} is not a multiple of 8, which sd.cpp requires: use ${options}.`;
  }
  return null;
}

function checkCount(name: string, value: number, max: number, what: string): string | null {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) return `${name} must be a whole number of ${what}, at least 1, not ${String(value)}.`;
  if (value > max) return `${name} ${value} is above the limit of ${max} ${what}: use ${max} or less, or split the job.`;
  return null;
}
