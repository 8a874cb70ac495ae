/**
 * The seeded workload: a 40-minute session of someone who codes and makes images on one GPU.
 *
 * - Code completions while typing (bursts of a few minutes, a request every ~7 s), questions about the code every
 *   few minutes, a prompt enhancement before most image jobs. LLM requests carry their prompt and generated tokens.
 * - Image sessions every ~3.5 minutes: one to five jobs, SD1.5 / SDXL / Flux, 512x512 to 2048x2048, batches of 1,
 *   2 or 4 (single images at 1536 px and more; Flux stays at or below 1536 px, where it already takes minutes).
 * - Other programs' VRAM (desktop, browser, a video call, a game...) comes and goes: a base of 0.3-0.6 GB plus
 *   episodes of a few minutes, never more than 15% of the card in all.
 *
 * The same seed gives the same sequence of requests on every card; what depends on the card is the size of the
 * other programs' episodes (a share of the card), the Flux quantisation (catalog.ts), and sizes that cannot run on
 * that card at all: an image whose diffusion weights and smallest compute buffer do not fit the card minus the
 * other programs' peak minus 512 MB of headroom is stepped down (x0.75 per side) until it does, as its user would.
 */

import { BUDGETS, imageModelsFor, type ImageModel, type ImageModelKind } from './catalog';
import { Rng } from './rng';
import { INFILL_PREFIX_CHARS, INFILL_PREFIX_STEP, INFILL_SUFFIX_CHARS } from '../../src/llmTasks';
import { CHARS_PER_TOKEN } from '../../sidecar/core/estimators/figures';
import { imageTruth } from './truth';
import { MiB, type Bytes, type LlmTask, type Millis } from '../../sidecar/core/types';
import type { OtherUseStep } from '../../sidecar/devices/simulatedDevice';

export interface LlmArrival {
  kind: 'llm';
  id: string;
  at: Millis;
  task: Extract<LlmTask, 'completion' | 'chat' | 'enhancePrompt'>;
  promptTokens: number;
  genTokens: number;
  /** Completions: where in which file, which decides how much of the prompt the one before shares. */
  place?: CompletionPlace;
}

/**
 * Where a completion is asked, in tokens, as the inline completion provider builds its prompt (src/llmTasks.ts):
 * the file from the prefix window's start to the cursor, then the suffix after the cursor. While the user types in
 * one place the window's start stays put, so two completions there share the prefix up to the earlier cursor.
 */
export interface CompletionPlace {
  /** A place in a file: a new one at each typing burst and each jump elsewhere. */
  doc: number;
  windowStart: number;
  cursor: number;
  suffix: number;
}

export interface ImageArrival {
  kind: 'image';
  id: string;
  at: Millis;
  model: ImageModelKind;
  width: number;
  height: number;
  batch: number;
  steps: number;
  seed: number;
  /** Seed of the job's noise in the true cost model. */
  truthSeed: number;
  /** The size first asked for, when the card could not run it and it was stepped down. */
  asked?: { width: number; height: number };
}

export type Arrival = LlmArrival | ImageArrival;

export interface Trace {
  seed: number;
  budget: Bytes;
  durationMs: Millis;
  jobs: Arrival[];
  /** Other programs' use over time, from the start of the session. */
  otherUse: OtherUseStep[];
  otherUsePeak: Bytes;
  models: Record<ImageModelKind, ImageModel>;
  /** Seed of the LLM's noise in the true cost model. */
  llmTruthSeed: number;
  /** Seed of each image model's systematic error in the true cost model. */
  imageBiasSeed: number;
  /** The CPU's LLM speed as a share of the assumed figures (truth.ts); 1 when not set. */
  cpuSpeed?: number;
}

export interface TraceOptions {
  durationMs?: Millis;
  cpuSpeed?: number;
}

export const DEFAULT_DURATION_MS = 40 * 60_000;
/** Room kept when deciding whether a card can run an image at all. */
const FEASIBILITY_HEADROOM = 512 * MiB;
const OTHER_USE_CAP_SHARE = 0.15;
/** The inline completion provider's windows in tokens: the suffix sent, the least prefix and its grid step. */
const SUFFIX_TOKENS = INFILL_SUFFIX_CHARS / CHARS_PER_TOKEN;
const PREFIX_MIN_TOKENS = INFILL_PREFIX_CHARS / CHARS_PER_TOKEN;
const PREFIX_STEP_TOKENS = INFILL_PREFIX_STEP / CHARS_PER_TOKEN;
/** The window start moves on once the prefix reaches this, so a prefix is always shorter. */
const PREFIX_LIMIT_TOKENS = PREFIX_MIN_TOKENS + PREFIX_STEP_TOKENS;
/** The suffix's share of a prompt drawn for a new place: about the provider's suffix / (prefix + suffix) windows. */
const SUFFIX_SHARE = 0.27;
/** Chance that the user moved elsewhere (another function, another file) before a completion in a burst. */
const JUMP_CHANCE = 0.15;

type Size = readonly [number, number];
const SIZES: readonly (readonly [Size, number])[] = [
  [[512, 512], 0.14],
  [[768, 768], 0.14],
  [[1024, 1024], 0.34],
  [[832, 1216], 0.1],
  [[1216, 832], 0.06],
  [[1536, 1536], 0.14],
  [[2048, 2048], 0.08],
];

interface BaseImage {
  at: Millis;
  model: ImageModelKind;
  size: Size;
  batch: number;
  seed: number;
  truthSeed: number;
}

interface BaseEpisode {
  start: Millis;
  end: Millis;
  share: number;
}

interface BaseTrace {
  llm: Omit<LlmArrival, 'id'>[];
  images: BaseImage[];
  baseOtherUse: Bytes;
  episodes: BaseEpisode[];
  llmTruthSeed: number;
  imageBiasSeed: number;
}

/** The session for `seed` on a card of `budget` bytes. */
export function makeTrace(seed: number, budget: Bytes, options: TraceOptions = {}): Trace {
  const durationMs = options.durationMs ?? DEFAULT_DURATION_MS;
  const base = baseTrace(seed, durationMs);
  const models = imageModelsFor(budget);
  const { steps: otherUse, peak } = otherUseSchedule(base, budget);
  const room = budget - peak - FEASIBILITY_HEADROOM;

  const jobs: Arrival[] = [];
  let llmCount = 0;
  let imageCount = 0;
  for (const request of base.llm) jobs.push({ ...request, id: `llm-${String(++llmCount).padStart(3, '0')}` });
  for (const image of base.images) {
    const model = models[image.model];
    const steps = model.steps;
    let [width, height] = image.size;
    while (!runnable(model, width, height, steps, image.truthSeed, base.imageBiasSeed, room) && Math.max(width, height) > 512) {
      width = Math.max(256, Math.round((width * 0.75) / 64) * 64);
      height = Math.max(256, Math.round((height * 0.75) / 64) * 64);
    }
    const job: ImageArrival = {
      kind: 'image',
      id: `img-${String(++imageCount).padStart(3, '0')}`,
      at: image.at,
      model: image.model,
      width,
      height,
      batch: image.batch,
      steps,
      seed: image.seed,
      truthSeed: image.truthSeed,
    };
    if (width !== image.size[0] || height !== image.size[1]) job.asked = { width: image.size[0], height: image.size[1] };
    jobs.push(job);
  }
  jobs.sort((a, b) => a.at - b.at || a.id.localeCompare(b.id));
  const trace: Trace = { seed, budget, durationMs, jobs, otherUse, otherUsePeak: peak, models, llmTruthSeed: base.llmTruthSeed, imageBiasSeed: base.imageBiasSeed };
  if (options.cpuSpeed !== undefined && options.cpuSpeed !== 1) trace.cpuSpeed = options.cpuSpeed;
  return trace;
}

/** A hand-made trace (for tests): the given jobs on a card of `budget` bytes, other programs at a constant use. */
export function traceOf(budget: Bytes, jobs: Arrival[], options: { otherUse?: Bytes; seed?: number } = {}): Trace {
  const rng = new Rng(options.seed ?? 1);
  const otherUse = options.otherUse ?? 400 * MiB;
  return {
    seed: options.seed ?? 1,
    budget,
    durationMs: Math.max(0, ...jobs.map((j) => j.at)),
    jobs: [...jobs].sort((a, b) => a.at - b.at),
    otherUse: [{ atMs: 0, bytes: otherUse }],
    otherUsePeak: otherUse,
    models: imageModelsFor(budget),
    llmTruthSeed: rng.fork(),
    imageBiasSeed: rng.fork(),
  };
}

/** Traces for every budget of the benchmark. */
export function makeTraces(seed: number, options: TraceOptions = {}): Trace[] {
  return BUDGETS.map((budget) => makeTrace(seed, budget, options));
}

/** The smallest footprint the job can have: diffusion weights plus its flash-attention buffer, all else elsewhere. */
function runnable(model: ImageModel, width: number, height: number, steps: number, truthSeed: number, biasSeed: number, room: Bytes): boolean {
  const truth = imageTruth(model, { width, height, steps, truthSeed }, 'current', biasSeed);
  return truth.weights.diffusion + truth.compute.diffusionFlash <= room;
}

function baseTrace(seed: number, durationMs: Millis): BaseTrace {
  const rng = new Rng(seed);
  // Where completions are asked comes from a generator of its own, so the rest of the session is as it always was.
  const places = new Rng(seed * 7919 + 104_729);
  const llm: Omit<LlmArrival, 'id'>[] = [];
  const images: BaseImage[] = [];
  const s = 1000;
  const min = 60_000;

  // Typing bursts with completions.
  let doc = 0;
  for (let t = rng.uniform(0, 1) * min; t < durationMs; ) {
    const end = Math.min(durationMs, t + rng.uniform(2, 6) * min);
    let place: CompletionPlace | null = null;
    let last = t;
    for (let at = t + rng.uniform(1, 5) * s; at < end; at += Math.max(1.5 * s, rng.exponential(7 * s))) {
      const request: Omit<LlmArrival, 'id'> = { kind: 'llm', at: Math.round(at), task: 'completion', promptTokens: rng.int(600, 2000), genTokens: Math.round(rng.logUniform(8, 64)) };
      place = nextPlace(place, request.promptTokens, (at - last) / s, places, () => ++doc);
      last = at;
      request.place = place;
      request.promptTokens = place.cursor - place.windowStart + place.suffix;
      llm.push(request);
    }
    t = end + rng.uniform(0.5, 4) * min;
  }
  // Questions about the code.
  for (let t = rng.exponential(3 * min); t < durationMs; t += rng.exponential(3 * min)) {
    llm.push({ kind: 'llm', at: Math.round(t), task: 'chat', promptTokens: rng.int(300, 3000), genTokens: rng.int(120, 500) });
  }
  // Image sessions, most jobs after a prompt enhancement.
  for (let t = rng.exponential(3.5 * min); t < durationMs; t += rng.exponential(3.5 * min)) {
    const count = rng.int(1, 5);
    let at = t;
    for (let i = 0; i < count && at < durationMs; i++) {
      if (rng.chance(i === 0 ? 0.7 : 0.3)) {
        llm.push({ kind: 'llm', at: Math.round(at), task: 'enhancePrompt', promptTokens: rng.int(80, 200), genTokens: rng.int(60, 160) });
        at += rng.uniform(8, 25) * s;
      }
      const model = rng.weighted<ImageModelKind>([
        ['sd15', 0.3],
        ['sdxl', 0.45],
        ['flux', 0.25],
      ]);
      let size = rng.weighted(SIZES);
      if (model === 'flux' && Math.max(...size) > 1536) size = [1536, 1536];
      const batch = Math.max(...size) >= 1536 ? 1 : rng.weighted([
        [1, 0.55],
        [2, 0.25],
        [4, 0.2],
      ]);
      images.push({ at: Math.round(at), model, size, batch, seed: rng.int(1, 2 ** 31 - 1), truthSeed: rng.fork() });
      at += rng.uniform(5, 90) * s;
    }
  }
  // Other programs: a base, and episodes that come and go.
  const baseOtherUse = Math.round(rng.uniform(300, 600)) * MiB;
  const episodes: BaseEpisode[] = [];
  for (let t = rng.exponential(7 * min); t < durationMs; t += rng.exponential(7 * min)) {
    episodes.push({ start: Math.round(t), end: Math.round(t + rng.uniform(1, 6) * min), share: rng.uniform(0.03, 0.1) });
  }
  return { llm, images, baseOtherUse, episodes, llmTruthSeed: rng.fork(), imageBiasSeed: rng.fork() };
}

/**
 * The place of the next completion: a new one (its prompt as long as drawn) at the start of a burst or when the user
 * moved elsewhere; otherwise the same place with what was typed since (2-6 characters a second), the prefix window
 * moving on by a step once it has grown by one (src/llmTasks.ts infillPrefixStart).
 */
function nextPlace(place: CompletionPlace | null, drawnTokens: number, secondsSince: number, rng: Rng, newDoc: () => number): CompletionPlace {
  if (!place || rng.chance(JUMP_CHANCE)) {
    // The provider never sends more prefix than its window (at least 1000 tokens, less than one step more).
    const suffix = Math.min(SUFFIX_TOKENS, Math.round(drawnTokens * SUFFIX_SHARE));
    return { doc: newDoc(), windowStart: 0, cursor: Math.min(drawnTokens - suffix, PREFIX_LIMIT_TOKENS - 1), suffix };
  }
  const cursor = place.cursor + Math.max(1, Math.round(secondsSince * rng.uniform(0.5, 1.5)));
  const windowStart = cursor - place.windowStart >= PREFIX_LIMIT_TOKENS ? place.windowStart + PREFIX_STEP_TOKENS : place.windowStart;
  return { ...place, cursor, windowStart };
}

/** Prompt tokens of `request` that an LLM context still holding `held`'s prompt need not evaluate again. */
export function sharedPromptTokens(held: LlmArrival | null | undefined, request: LlmArrival): number {
  const a = held?.place;
  const b = request.place;
  if (!a || !b || a.doc !== b.doc || a.windowStart !== b.windowStart) return 0;
  return Math.min(a.cursor, b.cursor) - b.windowStart;
}

function otherUseSchedule(base: BaseTrace, budget: Bytes): { steps: OtherUseStep[]; peak: Bytes } {
  const cap = Math.max(base.baseOtherUse, Math.round(OTHER_USE_CAP_SHARE * budget));
  const times = [...new Set([0, ...base.episodes.flatMap((e) => [e.start, e.end])])].sort((a, b) => a - b);
  const steps: OtherUseStep[] = [];
  let peak = 0;
  for (const at of times) {
    const active = base.episodes.filter((e) => e.start <= at && at < e.end);
    const bytes = Math.min(cap, base.baseOtherUse + active.reduce((sum, e) => sum + Math.round(e.share * budget), 0));
    const rounded = Math.floor(bytes / MiB) * MiB;
    if (steps.length > 0 && steps[steps.length - 1].bytes === rounded) continue;
    steps.push({ atMs: at, bytes: rounded });
    peak = Math.max(peak, rounded);
  }
  return { steps, peak };
}
