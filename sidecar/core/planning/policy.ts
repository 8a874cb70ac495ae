/**
 * The planner's cost policy: how it weighs the time a yield costs against the time a safer placement costs.
 *
 * A placement change (tiled decode, VAE or text encoder on the CPU, offloaded weights) slows the image job itself,
 * so its extra time counts in full. A yield costs nothing while the image job runs; it costs the time to bring
 * the LLM back, which someone waits for only if the LLM is wanted again soon. So:
 *
 *   yield cost = yieldSettleMs + restore time x (1 when the LLM is needed soon, else idleRestoreWeight)
 *
 * "Needed soon" means an LLM request is queued or running, or the LLM served one within the arbiter's
 * recent-use window. `yieldSettleMs` is the typical wait for a driver's free figure to show a release
 * (0.5 to 1.5 s after a process frees memory, per Ollama's measurements), which the image job does wait for.
 *
 * Splitting a batch into several runs is a last resort: each run reloads the model, costing `extraRunMs` plus the
 * text encoding again.
 *
 * A yield also leaves the LLM unable to answer while the image job runs. Requests that arrive then wait for the job
 * to end: at a recent rate of r requests per ms over a job of T ms, about r x T requests wait T / 2 each, so a
 * yield costs `llmWaitWeight` x r x T^2 / 2 more. When the LLM is in steady use this favours keeping it hot and
 * taking a slower placement; when it is idle (r = 0) only the restore time counts.
 */

import type { Millis } from '../types';

/**
 * Share of the safety margin an image job may run in when nothing fits without it, every yield and safer option
 * taken. Refusing a job that misses by a few megabytes helps nobody; the other half of the margin still absorbs an
 * estimate that is low or another program that grows, and the recovery ladder catches what gets through.
 */
export const MARGIN_LAST_RESORT_SHARE = 0.5;

export interface PlannerPolicy {
  /** Share of the LLM's restore time counted when the LLM is not needed soon (0..1). */
  idleRestoreWeight: number;
  /** Expected wait for yielded memory to show as free before the job can start. */
  yieldSettleMs: Millis;
  /** Extra time of each additional sd.cpp run when a batch is split (model load). */
  extraRunMs: Millis;
  /** Weight of the expected waiting of LLM requests during an image job the LLM yielded for (0 ignores it). */
  llmWaitWeight: number;
}

export const DEFAULT_PLANNER_POLICY: PlannerPolicy = {
  idleRestoreWeight: 0.25,
  yieldSettleMs: 500,
  extraRunMs: 3000,
  llmWaitWeight: 1,
};

/**
 * The waiting that `busyMs` without an LLM to answer costs the requests arriving meanwhile: at `ratePerMs`, about
 * r x T of them wait T / 2 each, weighted by `llmWaitWeight` (see above).
 */
export function waitingCausedMs(policy: PlannerPolicy, ratePerMs: number, busyMs: Millis): Millis {
  return (policy.llmWaitWeight * Math.max(0, ratePerMs) * busyMs * busyMs) / 2;
}

export function resolvePolicy(policy?: Partial<PlannerPolicy>): PlannerPolicy {
  return policy ? { ...DEFAULT_PLANNER_POLICY, ...policy } : DEFAULT_PLANNER_POLICY;
}
