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
 */

import type { Millis } from '../types';

export interface PlannerPolicy {
  /** Share of the LLM's restore time counted when the LLM is not needed soon (0..1). */
  idleRestoreWeight: number;
  /** Expected wait for yielded memory to show as free before the job can start. */
  yieldSettleMs: Millis;
  /** Extra time of each additional sd.cpp run when a batch is split (model load). */
  extraRunMs: Millis;
}

export const DEFAULT_PLANNER_POLICY: PlannerPolicy = {
  idleRestoreWeight: 0.25,
  yieldSettleMs: 500,
  extraRunMs: 3000,
};

export function resolvePolicy(policy?: Partial<PlannerPolicy>): PlannerPolicy {
  return policy ? { ...DEFAULT_PLANNER_POLICY, ...policy } : DEFAULT_PLANNER_POLICY;
}
