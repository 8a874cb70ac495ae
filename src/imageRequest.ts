/**
 * What a user types into Generate Image, checked before anything is sent: size presets, custom sizes in the
 * multiples the model needs, steps, seed and batch. Every message says what to type instead.
 */

import type { ImageJobSpec } from '../sidecar/core/types';

export const MIN_SIDE = 64;
export const MAX_SIDE = 4096;
export const MAX_STEPS = 150;
export const MAX_BATCH = 16;
export const MAX_PROMPT_CHARS = 4000;
/** sd.cpp seeds are 64-bit; JavaScript numbers are exact up to 2^53. */
export const MAX_SEED = Number.MAX_SAFE_INTEGER;

export interface SizePreset {
  label: string;
  width: number;
  height: number;
  detail: string;
}

export const SIZE_PRESETS: readonly SizePreset[] = [
  { label: '512 × 512', width: 512, height: 512, detail: 'SD 1.x native size' },
  { label: '768 × 768', width: 768, height: 768, detail: 'SD 2.x native size' },
  { label: '1024 × 1024', width: 1024, height: 1024, detail: 'SDXL, SD3 and Flux native size' },
  { label: '832 × 1216', width: 832, height: 1216, detail: 'Portrait (SDXL bucket)' },
  { label: '1216 × 832', width: 1216, height: 832, detail: 'Landscape (SDXL bucket)' },
  { label: '1344 × 768', width: 1344, height: 768, detail: 'Wide (SDXL bucket)' },
];

/**
 * The pixel multiple a model needs: the VAE downsamples by 8, and transformer models (SD3, Flux, WAN) group
 * latents in 2x2 patches, so they need 16.
 */
export function sizeMultipleFor(modelPath: string): number {
  const name = modelPath.toLowerCase().split(/[\\/]/).pop() ?? '';
  return /flux|sd3|sd-3|sd_3|wan|chroma|qwen/.test(name) ? 16 : 8;
}

function nearestMultiples(value: number, multiple: number): [number, number] {
  const below = Math.max(multiple, Math.floor(value / multiple) * multiple);
  const above = Math.ceil(value / multiple) * multiple;
  return [below, above];
}

/** Checks one side; undefined when it is fine. */
export function validateSide(name: 'Width' | 'Height', value: number, multiple = 8): string | undefined {
  if (!Number.isInteger(value)) return `${name} must be a whole number of pixels.`;
  if (value < MIN_SIDE || value > MAX_SIDE) return `${name} ${value} is out of range: use ${MIN_SIDE} to ${MAX_SIDE} pixels.`;
  if (value % multiple !== 0) {
    const [below, above] = nearestMultiples(value, multiple);
    const options = below === above ? `${below}` : `${below} or ${Math.min(above, MAX_SIDE)}`;
    return `${name} ${value} is not a multiple of ${multiple} (this model needs it): use ${options}.`;
  }
  return undefined;
}

export interface ParsedSize {
  width: number;
  height: number;
}

/**
 * Parses `1024x768`, `1024 × 768`, `1024*768`, `1024,768` or `1024` (square). Returns the size or a message
 * that says how to write it.
 */
export function parseSize(text: string, multiple = 8): ParsedSize | { error: string } {
  const trimmed = text.trim();
  if (trimmed === '') return { error: 'Type a size such as 1024x768 (width x height in pixels).' };
  const match = /^(\d+)\s*(?:[x×*,]\s*(\d+))?$/i.exec(trimmed);
  if (!match) return { error: `"${trimmed}" is not a size: type width x height in pixels, such as 1024x768.` };
  const width = Number(match[1]);
  const height = match[2] === undefined ? width : Number(match[2]);
  const error = validateSide('Width', width, multiple) ?? validateSide('Height', height, multiple);
  return error ? { error } : { width, height };
}

export function validateSteps(text: string): string | undefined {
  const n = Number(text.trim());
  if (text.trim() === '' || !Number.isInteger(n)) return 'Steps must be a whole number, such as 20.';
  if (n < 1 || n > MAX_STEPS) return `Steps must be between 1 and ${MAX_STEPS}.`;
  return undefined;
}

export function validateBatch(text: string): string | undefined {
  const n = Number(text.trim());
  if (text.trim() === '' || !Number.isInteger(n)) return 'Batch must be a whole number of images, such as 1.';
  if (n < 1 || n > MAX_BATCH) return `Batch must be between 1 and ${MAX_BATCH} images.`;
  return undefined;
}

/** Blank, `random` or `-1` mean a random seed (undefined); otherwise a whole number. */
export function parseSeed(text: string): number | undefined | { error: string } {
  const trimmed = text.trim().toLowerCase();
  if (trimmed === '' || trimmed === 'random' || trimmed === '-1') return undefined;
  const n = Number(trimmed);
  if (!Number.isInteger(n) || n < 0 || n > MAX_SEED) {
    return { error: `Seed must be a whole number from 0 to ${MAX_SEED}, or empty for a random seed.` };
  }
  return n;
}

export function validatePrompt(prompt: string): string | undefined {
  if (prompt.trim() === '') return 'Describe the image to generate.';
  if (prompt.length > MAX_PROMPT_CHARS) return `The prompt is ${prompt.length} characters long: keep it under ${MAX_PROMPT_CHARS}.`;
  return undefined;
}

export function randomSeed(random: () => number = Math.random): number {
  return Math.floor(random() * 0xffffffff);
}

export interface ImageRequest {
  prompt: string;
  negativePrompt?: string;
  modelPath: string;
  width: number;
  height: number;
  steps: number;
  batch: number;
  seed: number;
}

/** Every problem with a request, empty when it can be sent. */
export function validateImageRequest(request: ImageRequest): string[] {
  const problems: string[] = [];
  const promptError = validatePrompt(request.prompt);
  if (promptError) problems.push(promptError);
  if (!request.modelPath) problems.push('No image model is set: run "VRAM Relay: Select Models" or set vramRelay.image.modelPath.');
  const multiple = sizeMultipleFor(request.modelPath);
  for (const error of [validateSide('Width', request.width, multiple), validateSide('Height', request.height, multiple)]) {
    if (error) problems.push(error);
  }
  const stepsError = validateSteps(String(request.steps));
  if (stepsError) problems.push(stepsError);
  const batchError = validateBatch(String(request.batch));
  if (batchError) problems.push(batchError);
  if (!Number.isInteger(request.seed) || request.seed < 0 || request.seed > MAX_SEED) problems.push(`Seed must be a whole number from 0 to ${MAX_SEED}.`);
  return problems;
}

export function toImageJobSpec(request: ImageRequest, outputPath: string): ImageJobSpec {
  return {
    kind: 'image',
    modelPath: request.modelPath,
    prompt: request.prompt.trim(),
    ...(request.negativePrompt ? { negativePrompt: request.negativePrompt } : {}),
    width: request.width,
    height: request.height,
    batch: request.batch,
    steps: request.steps,
    seed: request.seed,
    outputPath,
  };
}
