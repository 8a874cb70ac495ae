/**
 * Plain-language description of what a plan gives up compared with running everything on the GPU, for the
 * confirmation before a run ("VAE will decode tiled, LLM context dropped") and for the status bar.
 */

import type { Plan, YieldStep } from '../sidecar/core/types';
import { formatBytes, formatDuration } from './format';

function describeYield(step: YieldStep): string | undefined {
  if (step.resident === 'llm') {
    if (step.to === 'warm') return 'LLM context dropped';
    if (step.to === 'cold') return 'LLM unloaded from the GPU';
    if (step.to === 'stopped') return 'LLM stopped';
    return undefined;
  }
  if (step.to === 'stopped') return 'resident image server stopped';
  return undefined;
}

/** Each thing the plan degrades, in the order a person would care about; empty when nothing is degraded. */
export function planDegradations(plan: Plan, batch?: number): string[] {
  const out: string[] = [];
  const p = plan.placement;
  if (p) {
    if (p.vae === 'cpu') out.push(p.vaeTiling ? 'VAE will decode tiled on the CPU' : 'VAE will decode on the CPU');
    else if (p.vaeTiling) out.push('VAE will decode tiled');
    if (p.textEncoder === 'cpu') out.push('text encoder will run on the CPU');
    if (p.diffusion === 'offload') out.push('diffusion weights will stream from system RAM');
  }
  for (const step of plan.yields) {
    const text = describeYield(step);
    if (text) out.push(text);
  }
  if (plan.batchPerRun !== undefined && batch !== undefined && plan.batchPerRun < batch) {
    out.push(`batch runs ${plan.batchPerRun} image${plan.batchPerRun === 1 ? '' : 's'} at a time`);
  }
  return out;
}

function capitalise(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/**
 * One line for a confirmation: `VAE will decode tiled, LLM context dropped (about +1.8 s)`, or undefined when
 * the plan runs everything as fast as it can.
 */
export function summarisePlan(plan: Plan, batch?: number): string | undefined {
  const parts = planDegradations(plan, batch);
  if (parts.length === 0) return undefined;
  const extra = plan.extraTimeMs > 0 ? ` (about +${formatDuration(plan.extraTimeMs)})` : '';
  return `${capitalise(parts.join(', '))}${extra}.`;
}

/** What a plan that does not fit says, with what would. */
export function describeNoFit(plan: Plan): string {
  const base = `This job does not fit: it needs ${formatBytes(plan.peak)} at its peak and ${formatBytes(plan.available)} can be made free.`;
  const why = plan.reason ? ` ${capitalise(plan.reason.replace(/\.$/, ''))}.` : '';
  const what = plan.suggestions.length > 0 ? ` Try: ${plan.suggestions.join('; ')}.` : '';
  return base + why + what;
}
