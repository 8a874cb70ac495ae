/**
 * What the LLM holds on the GPU in each state, and what it costs to climb back to a state after yielding.
 * Shared by the planner (what a yield frees and costs) and the arbiter (what it has accounted for).
 */

import type { Bytes, LlmCosts, LlmState, Millis } from '../types';
import { LLM_STATES_BY_FOOTPRINT } from '../types';

/** 0 for hot, 1 warm, 2 cold, 3 stopped: a higher level holds less and takes longer to come back. */
export function llmLevel(state: LlmState): number {
  return LLM_STATES_BY_FOOTPRINT.indexOf(state);
}

export function llmStateAtLevel(level: number): LlmState {
  return LLM_STATES_BY_FOOTPRINT[Math.max(0, Math.min(LLM_STATES_BY_FOOTPRINT.length - 1, level))];
}

/** Bytes on the GPU in `state`: hot = weights + KV cache + compute buffers, warm = weights, cold/stopped = 0. */
export function llmFootprint(costs: LlmCosts | null, state: LlmState): Bytes {
  if (!costs) return 0;
  switch (state) {
    case 'hot':
      return costs.weights + costs.kvCache + costs.compute;
    case 'warm':
      return costs.weights;
    default:
      return 0;
  }
}

/** Time to climb from `lower` back up to `upper` (0 when `lower` is not below `upper`). */
export function llmRestoreMs(costs: LlmCosts | null, lower: LlmState, upper: LlmState): Millis {
  if (!costs) return 0;
  let ms = 0;
  for (let level = llmLevel(lower); level > llmLevel(upper); level--) {
    const to = llmStateAtLevel(level - 1);
    if (to === 'hot') ms += costs.recreateContextMs;
    else if (to === 'warm') ms += costs.reloadWeightsMs;
    else ms += costs.startProcessMs;
  }
  return ms;
}

/** What moving from `from` down to `to` does, in words: `drop the LLM context`. */
export function describeLlmYield(from: LlmState, to: LlmState): string {
  if (from === to) return `LLM stays ${from}`;
  switch (to) {
    case 'warm':
      return 'drop the LLM context';
    case 'cold':
      return from === 'warm' ? 'unload the LLM weights' : 'unload the LLM';
    case 'stopped':
      return 'stop the LLM';
    default:
      return `LLM ${from} -> ${to}`;
  }
}
