/**
 * The image-job planner: a pure function of (job costs, device, residents, engine capabilities) -> Plan.
 *
 * It enumerates every way to run the job (what the LLM yields, where each sd.cpp component sits, tiled decode,
 * flash attention, images per run), computes each stage's peak, keeps the options that fit and picks the
 * cheapest by expected extra time (see policy.ts), not the most conservative one.
 *
 * Memory model (sd.cpp): every GPU-placed component's weights stay resident for the whole job; with
 * --offload-to-cpu the weights live in RAM and each component's come to the GPU only for its own stage; each stage
 * adds its own compute buffer; what the LLM still holds after its yield counts in every stage. The image worker's resident bytes (an idle sd-server) count as room
 * for the job, since the job runs in that worker (reused or restarted with the plan's flags).
 *
 * `ImageJobCosts.compute.diffusion` is for the whole batch (activations scale with batch x latent area); the
 * VAE decodes the batch's latents one by one, so its buffer is per image.
 */

import { formatBytes, formatExtraTime, formatImageSize } from '../format';
import type {
  Bytes,
  ImageJobCosts,
  ImageJobSpec,
  ImagePlacement,
  ImageWorkerState,
  LlmCosts,
  LlmState,
  Millis,
  Plan,
  RecoveryRung,
  SdCapabilities,
  StageName,
  StagePlan,
  YieldStep,
} from '../types';
import { RECOVERY_LADDER } from '../types';
import { describeLlmYield, llmFootprint, llmLevel, llmRestoreMs, llmStateAtLevel } from './llmFootprint';
import { type PlannerPolicy, resolvePolicy, waitingCausedMs } from './policy';

/** The device as the planner sees it. */
export interface PlannerDevice {
  id: string;
  /** Effective free memory now, already minus the safety margin: min(reported free, total - accounted) - margin. */
  effectiveFree: Bytes;
  /** Largest single allocation the driver allows (Vulkan), when known. */
  maxAllocation?: Bytes;
  /** Other programs' use, when known; used only to suggest closing them. */
  otherUse?: Bytes;
  /**
   * Part of the safety margin a plan may run in when nothing fits without it (a last resort: the recovery
   * ladder still catches an out-of-memory). 0 or absent: never.
   */
  marginReserve?: Bytes;
}

export interface PlannerLlm {
  state: LlmState;
  /** Null when no LLM is configured or its figures are unknown: then a yield frees nothing the plan can count on. */
  costs: LlmCosts | null;
  /** Serving a request now (the arbiter waits for it before yielding); counts as needed soon. */
  busy: boolean;
  /** An LLM request is queued, or one was served recently: the restore time counts in full. */
  neededSoon?: boolean;
  /** LLM requests per millisecond of late (0 or absent: none): prices the waiting a yield causes during the job. */
  requestRatePerMs?: number;
}

export interface PlannerImageResident {
  state: ImageWorkerState;
  /** Bytes an idle sd-server holds now (already missing from `effectiveFree`). */
  heldBytes: Bytes;
  /** An image job is running (used by LLM plans). */
  busy?: boolean;
  /** The running image job's expected time left, by its plan (used by LLM plans). */
  remainingMs?: Millis;
}

/** A plan the new one must be at least as safe as, in every dimension (recovery after a failed run). */
export interface PlanFloor {
  placement: ImagePlacement;
  llmState: LlmState;
  batchPerRun?: number;
}

export interface ImagePlanInput {
  jobId: string;
  spec: Pick<ImageJobSpec, 'width' | 'height' | 'batch'> & { frames?: number };
  device: PlannerDevice;
  llm: PlannerLlm;
  image: PlannerImageResident;
  costs: ImageJobCosts;
  capabilities: SdCapabilities;
  /** Recovery: the plan must climb at least to this rung of RECOVERY_LADDER (and every rung before it). */
  minimumRung?: RecoveryRung;
  floor?: PlanFloor;
  policy?: Partial<PlannerPolicy>;
}

/** One way to run the job, as safety levels per dimension (0 = fastest / most memory). */
interface Choice {
  /** 0 hot, 1 warm, 2 cold, 3 stopped (never below the LLM's current level). */
  llm: number;
  /** 0 GPU, 1 CPU. */
  te: number;
  /** 0 weights stay on the GPU, 1 weights offloaded to RAM (--offload-to-cpu: each comes to the GPU for its stage). */
  diffusion: number;
  /** 0 GPU whole, 1 GPU tiled, 2 CPU. */
  vae: number;
  /** 0 off, 1 flash attention. */
  flash: number;
  batchPerRun: number;
}

interface Evaluated {
  choice: Choice;
  llmTo: LlmState;
  stages: StagePlan[];
  /** The job's own use per stage (without what the LLM keeps). */
  own: Bytes[];
  ownPeak: Bytes;
  peak: Bytes;
  frees: Bytes;
  /** Room for the job's own use after the yields. */
  room: Bytes;
  fits: boolean;
  /** The first GPU buffer above the driver's single-allocation cap, if any. */
  overCap?: { stage: StageName; bytes: Bytes };
  extraMs: Millis;
  /** The job's expected time from start to end (Score.runMs). */
  runMs: Millis;
  degradations: number;
}

type Levels = Omit<Choice, 'batchPerRun'>;

const STAGE_LABEL: Record<StageName, string> = {
  textEncode: 'text encoding',
  diffusion: 'diffusion',
  vaeDecode: 'VAE decode',
  llmLoad: 'LLM load',
  llmInfer: 'LLM inference',
};

const VAE_PLACEMENT_TEXT = ['', 'tiled decode', 'VAE on CPU'];

/** Shared context of one planning call: inputs resolved once. */
interface Ctx {
  input: ImagePlanInput;
  policy: PlannerPolicy;
  costs: ImageJobCosts;
  llmNow: Bytes;
  llmLevelNow: number;
  restoreWeight: number;
  /** Effective free plus the idle image worker's bytes: the room before any LLM yield. */
  baseRoom: Bytes;
}

export function planImageJob(input: ImagePlanInput): Plan {
  const policy = resolvePolicy(input.policy);
  const ctx: Ctx = {
    input,
    policy,
    costs: input.costs,
    llmNow: llmFootprint(input.llm.costs, input.llm.state),
    llmLevelNow: llmLevel(input.llm.state),
    restoreWeight: input.llm.busy || input.llm.neededSoon ? 1 : policy.idleRestoreWeight,
    baseRoom: input.device.effectiveFree + (input.image.state === 'resident' ? input.image.heldBytes : 0),
  };
  const allowed = allowedLevels(input.capabilities, ctx.llmLevelNow);
  const required = requiredLevels(input, allowed);
  const batch = Math.max(1, input.costs.batch);
  const maxPerRun = Math.min(batch, input.floor?.batchPerRun ?? batch);

  const baseline = evaluate(ctx, { llm: ctx.llmLevelNow, te: 0, diffusion: 0, vae: 0, flash: 0, batchPerRun: batch });
  const best = cheapestOverRuns(ctx, allowed, required, batch, maxPerRun);
  if (best) return toPlan(ctx, best, fitReason(ctx, best, baseline), []);

  // Last resort: run in part of the safety margin rather than refuse a job that misses by a little, with every
  // safer option taken so that as little of the margin as possible is used.
  const reserve = Math.max(0, input.device.marginReserve ?? 0);
  if (reserve > 0) {
    const wider: Ctx = { ...ctx, baseRoom: ctx.baseRoom + reserve };
    const inMargin = cheapestOverRuns(wider, allowed, maxLevels(allowed), batch, maxPerRun);
    if (inMargin) {
      const marginUsed = Math.max(0, inMargin.ownPeak - (inMargin.room - reserve));
      const reason = `${fitReason(ctx, inMargin, baseline)}; nothing else can yield: runs ${formatBytes(marginUsed)} into the safety margin`;
      return { ...toPlan(ctx, inMargin, reason, []), marginUsed };
    }
  }

  const safest = evaluate(ctx, { ...maxLevels(allowed), batchPerRun: 1 });
  return toPlan(ctx, safest, nothingFitsReason(ctx, safest), suggestionsWhenNothingFits(ctx, safest, allowed));
}

/**
 * The cheapest plan that fits, whole batch first; splitting it reloads the model per run, so it is tried only when
 * nothing else fits. Fewest runs first, each run as even as the batch allows (4 -> 4, 2+2, 1+1+1+1).
 */
function cheapestOverRuns(ctx: Ctx, allowed: Allowed, required: Levels, batch: number, maxPerRun: number): Evaluated | undefined {
  let lastPerRun = 0;
  for (let runs = Math.ceil(batch / maxPerRun); runs <= batch; runs++) {
    const perRun = Math.ceil(batch / runs);
    if (perRun === lastPerRun) continue;
    lastPerRun = perRun;
    const best = cheapestFitting(ctx, allowed, required, perRun);
    if (best) return best;
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------------------------
// Options

interface Allowed {
  llm: number[];
  te: number[];
  diffusion: number[];
  vae: number[];
  flash: number[];
}

function allowedLevels(caps: SdCapabilities, llmLevelNow: number): Allowed {
  const cpu = caps.cpuPlacementFlags !== 'none';
  const vae = [0];
  if (caps.vaeTiling) vae.push(1);
  if (cpu) vae.push(2);
  const llm: number[] = [];
  for (let level = llmLevelNow; level <= 3; level++) llm.push(level);
  return {
    llm,
    te: cpu ? [0, 1] : [0],
    diffusion: caps.offloadToCpu ? [0, 1] : [0],
    vae,
    flash: caps.diffusionFlashAttention ? [0, 1] : [0],
  };
}

function maxLevels(allowed: Allowed): Levels {
  const last = (list: number[]) => list[list.length - 1];
  return { llm: last(allowed.llm), te: last(allowed.te), diffusion: last(allowed.diffusion), vae: last(allowed.vae), flash: last(allowed.flash) };
}

/** What each recovery rung asks of each dimension. */
const RUNG_REQUIREMENT: Record<RecoveryRung, Partial<Levels>> = {
  vaeTiling: { vae: 1 },
  vaeOnCpu: { vae: 2 },
  textEncoderOnCpu: { te: 1 },
  offloadWeights: { diffusion: 1 },
  stopLlm: { llm: 3 },
};

/**
 * Minimum level per dimension from the recovery rung (cumulative: a rung includes the ones before it) and the
 * floor. A requirement the engine cannot meet is capped at the safest level it offers.
 */
function requiredLevels(input: ImagePlanInput, allowed: Allowed): Levels {
  const req: Levels = { llm: 0, te: 0, diffusion: 0, vae: 0, flash: 0 };
  const raise = (key: keyof Levels, level: number) => {
    const list = allowed[key];
    req[key] = Math.max(req[key], Math.min(level, list[list.length - 1]));
  };
  if (input.minimumRung) {
    const last = RECOVERY_LADDER.indexOf(input.minimumRung);
    for (let i = 0; i <= last; i++) {
      for (const [key, level] of Object.entries(RUNG_REQUIREMENT[RECOVERY_LADDER[i]])) raise(key as keyof Levels, level);
    }
  }
  if (input.floor) {
    const f = placementLevels(input.floor.placement);
    for (const key of ['te', 'diffusion', 'vae', 'flash'] as const) raise(key, f[key]);
    raise('llm', llmLevel(input.floor.llmState));
  }
  return req;
}

function placementLevels(p: ImagePlacement): Omit<Levels, 'llm'> {
  return {
    te: p.textEncoder === 'cpu' ? 1 : 0,
    diffusion: p.diffusion === 'offload' ? 1 : 0,
    vae: p.vae === 'cpu' ? 2 : p.vaeTiling ? 1 : 0,
    flash: p.flashAttention ? 1 : 0,
  };
}

function toPlacement(c: Choice): ImagePlacement {
  return {
    textEncoder: c.te ? 'cpu' : 'gpu',
    diffusion: c.diffusion ? 'offload' : 'gpu',
    vae: c.vae === 2 ? 'cpu' : 'gpu',
    vaeTiling: c.vae === 1,
    flashAttention: c.flash === 1,
  };
}

function cheapestFitting(ctx: Ctx, allowed: Allowed, req: Levels, batchPerRun: number): Evaluated | undefined {
  // Numbers only while searching; the winner alone is built in full (stage parts, labels).
  let best: Score | undefined;
  let bestChoice: Choice | undefined;
  for (const llm of allowed.llm) {
    if (llm < req.llm) continue;
    for (const te of allowed.te) {
      if (te < req.te) continue;
      for (const diffusion of allowed.diffusion) {
        if (diffusion < req.diffusion) continue;
        for (const vae of allowed.vae) {
          if (vae < req.vae) continue;
          for (const flash of allowed.flash) {
            if (flash < req.flash) continue;
            const choice = { llm, te, diffusion, vae, flash, batchPerRun };
            const score = scoreOf(ctx, choice);
            if (score.fits && (!best || cheaper(score, best))) {
              best = score;
              bestChoice = choice;
            }
          }
        }
      }
    }
  }
  return bestChoice ? evaluate(ctx, bestChoice) : undefined;
}

/** Cheaper = less expected extra time; then fewer changes; then more headroom. */
function cheaper(a: Score, b: Score): boolean {
  if (Math.abs(a.costMs - b.costMs) > 0.5) return a.costMs < b.costMs;
  if (a.degradations !== b.degradations) return a.degradations < b.degradations;
  return a.room - a.ownPeak > b.room - b.ownPeak;
}

// ---------------------------------------------------------------------------------------------------------------
// Evaluation

interface Score {
  fits: boolean;
  ownPeak: Bytes;
  room: Bytes;
  /** Expected extra time: safer placements, split runs, and a yield's settling and (weighted) restore time. */
  extraMs: Millis;
  /** What plans are ranked by: extraMs plus the LLM waiting a yield is expected to cause during the job. */
  costMs: Millis;
  /** The job's expected time from start to end: its stages, safer placements, split runs and yields. */
  runMs: Millis;
  degradations: number;
}

/** The numbers of one option: what the LLM keeps, the job's own use per stage and each stage's GPU buffer. */
interface Footprint {
  llmTo: LlmState;
  llmAfter: Bytes;
  frees: Bytes;
  room: Bytes;
  offload: boolean;
  /** Weights on the GPU for the whole job (none when offloading). */
  resident: Bytes;
  teCompute: Bytes;
  diffusionCompute: Bytes;
  vaeCompute: Bytes;
  /** The job's own use in textEncode, diffusion, vaeDecode. */
  own: [Bytes, Bytes, Bytes];
}

// Without offloading, sd.cpp keeps every GPU-placed component's weights for the whole job. With --offload-to-cpu
// all weights live in RAM and each component's weights come to the GPU only for its own stage.
function footprintOf(ctx: Ctx, choice: Choice): Footprint {
  const { costs, input } = ctx;
  const w = costs.weights;
  const c = costs.compute;
  const batch = Math.max(1, costs.batch);
  const llmTo = llmStateAtLevel(choice.llm);
  const llmAfter = llmFootprint(input.llm.costs, llmTo);
  const frees = ctx.llmNow - llmAfter;
  const offload = choice.diffusion === 1;
  const teOnGpu = choice.te === 0;
  const vaeOnGpu = choice.vae !== 2;
  const resident = offload ? 0 : (teOnGpu ? w.textEncoder : 0) + w.diffusion + (vaeOnGpu ? w.vae : 0);
  const teCompute = teOnGpu ? c.textEncoder : 0;
  const diffusionCompute = (choice.flash ? c.diffusionFlash : c.diffusion) * (choice.batchPerRun / batch);
  const vaeCompute = choice.vae === 0 ? c.vaeDecode : choice.vae === 1 ? c.vaeDecodeTiled : 0;
  const streamedTe = offload && teOnGpu ? w.textEncoder : 0;
  const streamedDiffusion = offload ? w.diffusion : 0;
  const streamedVae = offload && vaeOnGpu ? w.vae : 0;
  return {
    llmTo,
    llmAfter,
    frees,
    room: ctx.baseRoom + frees,
    offload,
    resident,
    teCompute,
    diffusionCompute,
    vaeCompute,
    own: [resident + streamedTe + teCompute, resident + streamedDiffusion + diffusionCompute, resident + streamedVae + vaeCompute],
  };
}

function overCapOf(ctx: Ctx, f: Footprint): { stage: StageName; bytes: Bytes } | undefined {
  const cap = ctx.input.device.maxAllocation;
  if (cap === undefined) return undefined;
  if (f.teCompute > cap) return { stage: 'textEncode', bytes: f.teCompute };
  if (f.diffusionCompute > cap) return { stage: 'diffusion', bytes: f.diffusionCompute };
  if (f.vaeCompute > cap) return { stage: 'vaeDecode', bytes: f.vaeCompute };
  return undefined;
}

function scoreOf(ctx: Ctx, choice: Choice, f: Footprint = footprintOf(ctx, choice)): Score {
  const { costs, input, policy } = ctx;
  const ownPeak = Math.max(f.own[0], f.own[1], f.own[2]);
  const t = costs.time;
  let placementMs = 0;
  if (choice.te) placementMs += t.textEncoderCpuExtraMs;
  if (choice.diffusion) placementMs += t.offloadExtraMs;
  if (choice.vae === 1) placementMs += t.vaeTiledExtraMs;
  if (choice.vae === 2) placementMs += t.vaeCpuExtraMs;
  const runs = Math.ceil(Math.max(1, costs.batch) / choice.batchPerRun);
  const batchMs = (runs - 1) * (policy.extraRunMs + t.textEncodeMs);
  const yieldMs =
    choice.llm > ctx.llmLevelNow ? policy.yieldSettleMs + llmRestoreMs(input.llm.costs, f.llmTo, input.llm.state) * ctx.restoreWeight : 0;
  // Requests that come while the job runs with the LLM off the GPU wait for its end (see policy.ts).
  const rate = input.llm.costs ? (input.llm.requestRatePerMs ?? 0) : 0;
  const jobMs = t.textEncodeMs + t.samplingMs + t.vaeDecodeMs + placementMs + batchMs;
  const unavailableMs = choice.llm > 0 ? waitingCausedMs(policy, rate, jobMs) : 0;
  return {
    fits: ownPeak <= f.room && !overCapOf(ctx, f),
    ownPeak,
    room: f.room,
    extraMs: placementMs + batchMs + yieldMs,
    costMs: placementMs + batchMs + yieldMs + unavailableMs,
    runMs: jobMs + yieldMs,
    degradations: choice.llm - ctx.llmLevelNow + choice.te + choice.diffusion + choice.vae + choice.flash + (runs > 1 ? 1 : 0),
  };
}

/** One option in full: its score plus each stage's peak and the parts that make it up. */
function evaluate(ctx: Ctx, choice: Choice): Evaluated {
  const w = ctx.costs.weights;
  const f = footprintOf(ctx, choice);
  const score = scoreOf(ctx, choice, f);
  type Part = { label: string; bytes: Bytes };
  const resident: Part[] = [];
  if (f.llmAfter > 0) resident.push({ label: `LLM (${f.llmTo})`, bytes: f.llmAfter });
  if (!f.offload) {
    if (!choice.te) resident.push({ label: 'text encoder weights', bytes: w.textEncoder });
    resident.push({ label: 'diffusion weights', bytes: w.diffusion });
    if (choice.vae !== 2) resident.push({ label: 'VAE weights', bytes: w.vae });
  }
  const streamed = (label: string, bytes: Bytes): Part[] => (f.offload ? [{ label: `${label} (from RAM)`, bytes }] : []);
  const extras: [StageName, Part[]][] = [
    ['textEncode', choice.te ? [] : [...streamed('text encoder weights', w.textEncoder), { label: 'text encoder compute', bytes: f.teCompute }]],
    [
      'diffusion',
      [
        ...streamed('diffusion weights', w.diffusion),
        { label: choice.flash ? 'diffusion compute (flash attention)' : 'diffusion compute', bytes: f.diffusionCompute },
      ],
    ],
    [
      'vaeDecode',
      choice.vae === 2
        ? []
        : [...streamed('VAE weights', w.vae), { label: choice.vae === 1 ? 'VAE decode compute (tiled)' : 'VAE decode compute', bytes: f.vaeCompute }],
    ],
  ];
  const stages: StagePlan[] = extras.map(([stage, parts], i) => ({
    stage,
    // The peak is the footprint's figure; the parts list what it is made of, for the panel.
    peak: f.llmAfter + f.own[i],
    parts: [...resident, ...parts].filter((p) => p.bytes > 0),
  }));
  return {
    choice,
    llmTo: f.llmTo,
    stages,
    own: [...f.own],
    ownPeak: score.ownPeak,
    peak: f.llmAfter + score.ownPeak,
    frees: f.frees,
    room: f.room,
    fits: score.fits,
    overCap: overCapOf(ctx, f),
    extraMs: score.extraMs,
    runMs: score.runMs,
    degradations: score.degradations,
  };
}

function toPlan(ctx: Ctx, e: Evaluated, reason: string, suggestions: string[]): Plan {
  const { input } = ctx;
  const yields: YieldStep[] = [];
  if (e.llmTo !== input.llm.state) {
    yields.push({
      resident: 'llm',
      from: input.llm.state,
      to: e.llmTo,
      frees: e.frees,
      restoreMs: llmRestoreMs(input.llm.costs, e.llmTo, input.llm.state),
    });
  }
  const plan: Plan = {
    jobId: input.jobId,
    deviceId: input.device.id,
    fits: e.fits,
    placement: toPlacement(e.choice),
    yields,
    stages: e.stages,
    peak: e.peak,
    available: input.device.effectiveFree,
    extraTimeMs: Math.round(e.extraMs),
    estimatedMs: Math.round(e.runMs),
    reason,
    suggestions,
  };
  if (e.choice.batchPerRun < Math.max(1, ctx.costs.batch)) plan.batchPerRun = e.choice.batchPerRun;
  return plan;
}

// ---------------------------------------------------------------------------------------------------------------
// Reasons

function sizeText(ctx: Ctx): string {
  const { costs, input } = ctx;
  return formatImageSize({ width: input.spec.width, height: input.spec.height, batch: costs.batch, frames: costs.frames });
}

/** What the chosen option changes versus "everything on the GPU, nothing yields". */
function changesText(ctx: Ctx, e: Evaluated): string[] {
  const changes: string[] = [];
  if (e.llmTo !== ctx.input.llm.state) {
    changes.push(`${describeLlmYield(ctx.input.llm.state, e.llmTo)} (frees ${formatBytes(e.frees)})`);
  }
  if (e.choice.vae) changes.push(VAE_PLACEMENT_TEXT[e.choice.vae]);
  if (e.choice.te) changes.push('text encoder on CPU');
  if (e.choice.diffusion) changes.push('weights offloaded to RAM');
  if (e.choice.flash) changes.push('flash attention');
  const batch = Math.max(1, ctx.costs.batch);
  if (e.choice.batchPerRun < batch) {
    changes.push(e.choice.batchPerRun === 1 ? 'run image by image' : `run ${e.choice.batchPerRun} images at a time`);
  }
  return changes;
}

/** The stage that stops the baseline from fitting, with the buffer that is too big and the room beside it. */
function blockingStage(e: Evaluated, room: Bytes): { stage: StageName; buffer: Bytes; beside: Bytes } | undefined {
  let worst: { stage: StageName; buffer: Bytes; beside: Bytes; over: Bytes } | undefined;
  e.stages.forEach((s, i) => {
    const over = e.own[i] - room;
    if (over <= 0) return;
    // The stage's own buffer is its last part; the rest is weights that stay and what the LLM keeps.
    const buffer = s.parts[s.parts.length - 1]?.bytes ?? 0;
    const beside = room - (e.own[i] - buffer);
    if (!worst || over > worst.over) worst = { stage: s.stage, buffer, beside, over };
  });
  return worst;
}

function fitReason(ctx: Ctx, chosen: Evaluated, baseline: Evaluated): string {
  const size = sizeText(ctx);
  const changes = changesText(ctx, chosen);
  const extra = `est. ${formatExtraTime(chosen.extraMs)}`;
  if (changes.length === 0) {
    const peakIndex = chosen.own.indexOf(chosen.ownPeak);
    const llm = ctx.input.llm.state === 'hot' || ctx.input.llm.state === 'warm' ? `LLM stays ${ctx.input.llm.state}` : 'no LLM on the GPU';
    return `estimate ${formatBytes(chosen.ownPeak)} peak for ${STAGE_LABEL[chosen.stages[peakIndex].stage]} ${size}, free ${formatBytes(ctx.baseRoom)} -> all on the GPU, ${llm}, ${extra}`;
  }
  const todo = changes.join(', ');
  if (baseline.fits) {
    const rung = ctx.input.minimumRung ? ` (recovery rung ${ctx.input.minimumRung})` : ' (recovery)';
    return `retry${rung} for ${size}: estimate ${formatBytes(chosen.ownPeak)} peak, free ${formatBytes(chosen.room)} -> ${todo}, ${extra}`;
  }
  if (baseline.overCap && baseline.own.every((own) => own <= ctx.baseRoom)) {
    const cap = ctx.input.device.maxAllocation ?? 0;
    return `estimate ${formatBytes(baseline.overCap.bytes)} for ${STAGE_LABEL[baseline.overCap.stage]} ${size} in one buffer, the driver allows ${formatBytes(cap)} per allocation -> ${todo}, ${extra}`;
  }
  const block = blockingStage(baseline, ctx.baseRoom);
  if (!block) return `estimate ${formatBytes(chosen.ownPeak)} peak for ${size}, free ${formatBytes(ctx.baseRoom)} -> ${todo}, ${extra}`;
  if (block.beside > 0) {
    return `estimate ${formatBytes(block.buffer)} for ${STAGE_LABEL[block.stage]} ${size}, free ${formatBytes(block.beside)} beside the weights -> ${todo}, ${extra}`;
  }
  // The weights alone do not leave room for the buffer: state the stage's whole need.
  const index = baseline.stages.findIndex((s) => s.stage === block.stage);
  return `estimate ${formatBytes(baseline.own[index])} for ${STAGE_LABEL[block.stage]} ${size} with all weights on the GPU, free ${formatBytes(ctx.baseRoom)} -> ${todo}, ${extra}`;
}

function nothingFitsReason(ctx: Ctx, safest: Evaluated): string {
  const size = sizeText(ctx);
  const changes = changesText(ctx, safest);
  const even = changes.length ? ` even with ${changes.join(', ')}` : '';
  if (safest.ownPeak <= safest.room && safest.overCap) {
    const cap = ctx.input.device.maxAllocation ?? 0;
    return `nothing fits: ${STAGE_LABEL[safest.overCap.stage]} ${size} needs one ${formatBytes(safest.overCap.bytes)} buffer${even}, the driver allows ${formatBytes(cap)} per allocation`;
  }
  const index = safest.own.indexOf(safest.ownPeak);
  const stage = safest.stages[index];
  const parts = stage.parts.filter((p) => !p.label.startsWith('LLM'));
  const detail = parts.length > 1 ? ` (${parts.map((p) => `${p.label} ${formatBytes(p.bytes)}`).join(' + ')})` : '';
  return `nothing fits: ${STAGE_LABEL[stage.stage]} ${size} needs ${formatBytes(safest.ownPeak)}${detail}${even}, free ${formatBytes(safest.room)}`;
}

// ---------------------------------------------------------------------------------------------------------------
// Suggestions when nothing fits

/** Scales the size-dependent buffers to another size: compute buffers grow with pixels, the rest does not. */
export function scaleImageCosts(costs: ImageJobCosts, width: number, height: number): ImageJobCosts {
  const f = (width * height) / (costs.width * costs.height);
  return {
    ...costs,
    width,
    height,
    compute: {
      ...costs.compute,
      diffusion: costs.compute.diffusion * f,
      diffusionFlash: costs.compute.diffusionFlash * f,
      vaeDecode: costs.compute.vaeDecode * f,
    },
  };
}

function suggestionsWhenNothingFits(ctx: Ctx, safest: Evaluated, allowed: Allowed): string[] {
  const suggestions: string[] = [];
  const { width, height } = ctx.input.spec;
  const safestLevels = maxLevels(allowed);

  // Largest size with the same aspect ratio (sides in steps of 64 px) that fits with every safer option.
  const longSide = Math.max(width, height);
  for (let side = Math.floor((longSide - 1) / 64) * 64; side >= 256; side -= 64) {
    const w = width >= height ? side : Math.max(64, Math.round((side * width) / height / 64) * 64);
    const h = width >= height ? Math.max(64, Math.round((side * height) / width / 64) * 64) : side;
    const scaled: Ctx = { ...ctx, costs: scaleImageCosts(ctx.costs, w, h) };
    if (evaluate(scaled, { ...safestLevels, batchPerRun: 1 }).fits) {
      suggestions.push(`a smaller size: ${w}x${h} fits now`);
      break;
    }
  }

  const weights = ctx.costs.weights;
  const largestWeights = Math.max(weights.diffusion, weights.textEncoder, weights.vae);
  suggestions.push(
    `a smaller or quantized model (q8_0 about halves the weights, q4 about quarters them): this one needs ${formatBytes(safest.ownPeak)} at its safest, its largest part ${formatBytes(largestWeights)}`,
  );

  const shortfall = safest.ownPeak - safest.room;
  const otherUse = ctx.input.device.otherUse ?? 0;
  if (otherUse > 0 && shortfall > 0 && shortfall <= otherUse) {
    suggestions.push(`closing other programs that use the GPU: they hold ${formatBytes(otherUse)}, ${formatBytes(shortfall)} more is needed`);
  }
  return suggestions;
}

// ---------------------------------------------------------------------------------------------------------------
// Recovery

/** Where a plan stands on each recovery rung. */
export function planSatisfiesRung(plan: Plan, rung: RecoveryRung): boolean {
  const p = plan.placement;
  const llmTo = (plan.yields.find((y) => y.resident === 'llm')?.to as LlmState | undefined) ?? undefined;
  switch (rung) {
    case 'vaeTiling':
      return !!p && (p.vaeTiling || p.vae === 'cpu');
    case 'vaeOnCpu':
      return p?.vae === 'cpu';
    case 'textEncoderOnCpu':
      return p?.textEncoder === 'cpu';
    case 'offloadWeights':
      return p?.diffusion === 'offload';
    case 'stopLlm':
      return llmTo === 'stopped';
  }
}

/**
 * The next rung to climb after `failed` ran and failed: the first rung the plan does not satisfy yet and that the
 * engine can do. Null when every rung is used up. `llmState` is the LLM's state during the failed run.
 */
export function nextRecoveryRung(failed: Plan, caps: SdCapabilities, llmState: LlmState): RecoveryRung | null {
  const cpu = caps.cpuPlacementFlags !== 'none';
  const possible: Record<RecoveryRung, boolean> = {
    vaeTiling: caps.vaeTiling || cpu,
    vaeOnCpu: cpu,
    textEncoderOnCpu: cpu,
    offloadWeights: caps.offloadToCpu,
    stopLlm: llmState !== 'stopped',
  };
  for (const rung of RECOVERY_LADDER) {
    if (possible[rung] && !planSatisfiesRung(failed, rung)) return rung;
  }
  return null;
}

/** The floor a retry must not go below: the failed plan's placement and the LLM state it ran with. */
export function floorOf(plan: Plan, llmStateDuringRun: LlmState): PlanFloor | undefined {
  if (!plan.placement) return undefined;
  const floor: PlanFloor = { placement: plan.placement, llmState: llmStateDuringRun };
  if (plan.batchPerRun !== undefined) floor.batchPerRun = plan.batchPerRun;
  return floor;
}
