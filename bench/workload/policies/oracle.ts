/**
 * An oracle that knows the future and the exact true sizes: a reference for the time the session could take.
 *
 * For each image job it tries every placement (text encoder and VAE on GPU or CPU, tiled decode, offloaded weights,
 * flash attention, images per run) and every LLM state the job can live beside (hot, warm, cold), checks each
 * stage's TRUE peak against the card minus the most other programs will hold while the job runs (it knows when
 * they come), with no safety margin, and picks the fastest; among equally fast ones, the one that leaves the LLM
 * highest. The LLM yields only when that plan needs it, and comes back just in time: it starts reloading so as to be
 * hot when the next request arrives. No failure, no retry, no waiting for the driver. It is a clairvoyant greedy
 * scheduler (the same job order as the others: LLM requests first, then images first come first served), not a
 * proven optimum.
 */

import type { Bytes, ImagePlacement, LlmState, Millis } from '../../../sidecar/core/types';
import { LLM_STATES_BY_FOOTPRINT, MiB } from '../../../sidecar/core/types';
import { LLM_META } from '../catalog';
import { Condition, Session, WaitQueue, type PolicyRun } from '../session';
import type { ImageArrival, Trace } from '../trace';
import type { ImageJobTruth, LlmTruth, SdBuild } from '../truth';
import { TrueLlm, TrueSdCli } from '../workers';
import { moveLlm, serve } from './common';
import { SHARED_GPU_SPEED } from '../world';

/** Allocations round up to 2 MiB pages: a few per stage. */
const ROUNDING_SLACK = 16 * MiB;

export interface OracleChoice {
  placement: ImagePlacement;
  batchPerRun: number;
  /** The highest state the LLM may be in while the job runs. */
  llmMax: LlmState;
  peak: Bytes;
  timeMs: Millis;
}

const level = (state: LlmState) => LLM_STATES_BY_FOOTPRINT.indexOf(state);

function llmBytes(truth: LlmTruth, layers: number, state: LlmState): Bytes {
  if (state === 'hot') return truth.hot(layers);
  if (state === 'warm') return truth.weights(layers);
  return 0;
}

/** The true peak and time of one way to run the job (as workers.ts allocates and spends them). */
export function evaluatePlacement(truth: ImageJobTruth, batch: number, placement: ImagePlacement, batchPerRun: number): { peak: Bytes; timeMs: Millis } {
  const w = truth.weights;
  const c = truth.compute;
  const t = truth.time;
  const offload = placement.diffusion === 'offload';
  const te = placement.textEncoder === 'gpu';
  const vae = placement.vae === 'gpu';
  const resident = offload ? 0 : (te ? w.textEncoder : 0) + w.diffusion + (vae ? w.vae : 0);
  const peak = Math.max(
    resident + (te ? (offload ? w.textEncoder : 0) + c.textEncoder : 0),
    resident + (offload ? w.diffusion : 0) + (placement.flashAttention ? c.diffusionFlash : c.diffusion),
    resident + (vae ? (offload ? w.vae : 0) + (placement.vaeTiling ? c.vaeDecodeTiled : c.vaeDecode) : 0),
  );
  let timeMs = 0;
  for (let done = 0; done < batch; done += batchPerRun) {
    const n = Math.min(batchPerRun, batch - done);
    timeMs += t.startMs;
    timeMs += te ? t.textEncodeGpuMs + (offload ? truth.offloadMs(w.textEncoder) : 0) : t.textEncodeCpuMs;
    timeMs += n * (placement.flashAttention ? t.samplingFlashMs : t.samplingMs) + (offload ? truth.offloadMs(w.diffusion) : 0);
    timeMs += vae ? n * (placement.vaeTiling ? t.vaeTiledMs : t.vaeGpuMs) + (offload ? truth.offloadMs(w.vae) : 0) : n * t.vaeCpuMs;
  }
  return { peak: peak + ROUNDING_SLACK, timeMs };
}

/** Every placement sd.cpp offers. */
function placements(): ImagePlacement[] {
  const out: ImagePlacement[] = [];
  for (const textEncoder of ['gpu', 'cpu'] as const) {
    for (const diffusion of ['gpu', 'offload'] as const) {
      for (const [vae, vaeTiling] of [['gpu', false], ['gpu', true], ['cpu', false]] as const) {
        for (const flashAttention of [false, true]) out.push({ textEncoder, diffusion, vae, vaeTiling, flashAttention });
      }
    }
  }
  return out;
}

/**
 * The fastest way to run `job` starting now with the LLM at `llmNow` (it may only go down), given the room the
 * card has besides other programs over the job's lifetime (`roomFor(durationMs)`).
 */
export function chooseOraclePlan(
  truth: ImageJobTruth,
  batch: number,
  llm: LlmTruth,
  layers: number,
  llmNow: LlmState,
  roomFor: (durationMs: Millis) => Bytes,
): OracleChoice | null {
  let best: OracleChoice | null = null;
  for (const llmMax of ['hot', 'warm', 'cold'] as const) {
    if (level(llmMax) < level(llmNow)) continue;
    // Lowering the LLM takes its own time before the job starts.
    const yieldMs = (level(llmNow) < 1 && level(llmMax) >= 1 ? llm.dropContextMs : 0) + (level(llmNow) < 2 && level(llmMax) >= 2 ? llm.dropWeightsMs : 0);
    for (const placement of placements()) {
      for (let runs = 1; runs <= batch; runs++) {
        const perRun = Math.ceil(batch / runs);
        if (runs > 1 && Math.ceil(batch / (runs - 1)) === perRun) continue;
        const { peak, timeMs } = evaluatePlacement(truth, batch, placement, perRun);
        const total = timeMs + yieldMs;
        if (best && total > best.timeMs + 0.5) continue;
        if (peak + llmBytes(llm, layers, llmMax) > roomFor(total)) continue;
        const better = !best || total < best.timeMs - 0.5 || level(llmMax) < level(best.llmMax);
        if (better) best = { placement, batchPerRun: perRun, llmMax, peak, timeMs: total };
      }
    }
  }
  return best;
}

export async function runOracle(trace: Trace, sdBuild: SdBuild = 'current'): Promise<PolicyRun> {
  const session = new Session(trace, sdBuild);
  const world = session.world;
  const layers = LLM_META.blockCount + 1;
  const llm = new TrueLlm(world, layers);
  llm.prime('hot');
  const sd = new TrueSdCli(world);
  const images = new WaitQueue<ImageArrival>();
  const requests = session.requestQueue();
  const changed = new Condition();
  let llmBusy = false;
  let llmMoving = false;
  /** From the moment an image job is taken until it ends (no preload meanwhile). */
  let imageActive = false;
  /** While an image job runs: the highest state the LLM may take. */
  let ceiling: LlmState | null = null;
  let arrived = 0;
  session.deliver((job) => {
    arrived++;
    if (job.kind === 'image') images.push(job);
    else requests.push(job);
    changed.notify();
  });

  const move = async (target: LlmState): Promise<boolean> => {
    await changed.wait(() => !llmMoving);
    llmMoving = true;
    const ok = llm.state() === target || (await moveLlm(llm, target));
    llmMoving = false;
    changed.notify();
    return ok;
  };

  // Images, first come first served, after any LLM request that waits.
  void (async () => {
    for (;;) {
      const job = await images.take();
      imageActive = true;
      await changed.wait(() => !llmBusy && requests.length === 0 && !llmMoving);
      const truth = world.imageTruth(job);
      const start = world.clock.now();
      const budget = trace.budget;
      // The job may run slower while it shares the GPU with the LLM: look that far ahead.
      const horizon = (ms: Millis) => start + ms / SHARED_GPU_SPEED + 2000;
      const choice = chooseOraclePlan(truth, job.batch, world.llm, layers, llm.state(), (ms) => budget - world.otherUseMax(start, horizon(ms)));
      if (!choice) {
        session.end(job.id, 'failed', 'the oracle found no way to run it');
        imageActive = false;
        continue;
      }
      ceiling = choice.llmMax;
      if (level(llm.state()) < level(choice.llmMax)) await move(choice.llmMax);
      const result = await sd.execute(job, choice.placement, { batchPerRun: choice.batchPerRun });
      ceiling = null;
      imageActive = false;
      changed.notify();
      if (result.ok) session.end(job.id, 'done');
      else session.end(job.id, result.failure === 'blank' ? 'blank' : 'failed', result.message);
      void preload();
    }
  })();

  // LLM requests, one at a time; a request waits only when the running image job keeps the LLM down.
  void (async () => {
    for (;;) {
      const job = await requests.take();
      llmBusy = true;
      if (llm.state() !== 'hot') {
        await changed.wait(() => ceiling === null || ceiling === 'hot');
        if (!(await move('hot'))) {
          session.end(job.id, 'failed', 'the LLM could not load');
          llmBusy = false;
          changed.notify();
          continue;
        }
      }
      await serve(session, llm, job);
      llmBusy = false;
      changed.notify();
    }
  })();

  /** After an image job: if the next thing to come is an LLM request, have the LLM hot just as it arrives. */
  async function preload(): Promise<void> {
    if (llm.state() === 'hot' || images.length > 0 || imageActive) return;
    const nextLlm = trace.jobs.slice(arrived).find((j) => j.kind === 'llm');
    const nextImage = trace.jobs.slice(arrived).find((j) => j.kind === 'image');
    if (!nextLlm || (nextImage && nextImage.at <= nextLlm.at)) return;
    const k = layers;
    const restoreMs = (level(llm.state()) >= 2 ? world.llm.loadMs(k) : 0) + world.llm.contextMs(k) + (llm.state() === 'stopped' ? world.llm.startMs : 0);
    const wait = nextLlm.at - restoreMs - world.clock.now();
    if (wait > 0) await world.clock.sleep(wait);
    await changed.wait(() => !llmMoving);
    if (imageActive || images.length > 0 || llm.state() === 'hot') return;
    await move('hot');
  }

  return session.finish('oracle', { llmReloads: () => llm.weightLoads });
}
