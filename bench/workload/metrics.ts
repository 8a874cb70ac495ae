/**
 * Figures of one policy run, and the targets VRAM Relay is held to (issue 5):
 * - no failed or gray image and no lost job, at every budget;
 * - total time (makespan) within 10% of the oracle's;
 * - LLM waiting at least 50% lower than "unload before every image", on the mean and on the p95 both.
 * A miss is reported, never thrown.
 */

import type { Bytes, Millis } from '../../sidecar/core/types';
import { evaluatePlacement } from './policies/oracle';
import type { JobRecord, PolicyId, PolicyRun } from './session';
import type { Trace } from './trace';
import { World } from './world';

export const POLICY_ORDER: readonly PolicyId[] = ['relay', 'bothResident', 'unloadPerImage', 'staticReservation', 'keepAlive', 'oracle'];

export const POLICY_NAMES: Record<PolicyId, string> = {
  relay: 'VRAM Relay',
  bothResident: 'Both resident, no arbitration',
  unloadPerImage: 'Unload LLM before every image',
  staticReservation: 'Static image reservation (KoboldCpp)',
  keepAlive: 'Keep-alive 5 min (Ollama)',
  oracle: 'Oracle (knows the future)',
};

export interface Summary {
  policy: PolicyId;
  budget: Bytes;
  images: number;
  failedImages: number;
  blankImages: number;
  /** LLM requests that failed, and jobs that never ended. */
  lostJobs: number;
  /** Completions asked, and those answered before the user typed on (the rest were superseded). */
  completions: number;
  completionsShown: number;
  makespanMs: Millis;
  llmRequests: number;
  waitP50Ms: Millis;
  waitP95Ms: Millis;
  waitMeanMs: Millis;
  llmReloads: number;
  peakUsed: Bytes;
  retries: number;
  notes: string[];
  /** Jobs that did not end well: id, outcome and the message the user saw. */
  problems: string[];
}

/** Nearest-rank percentile of sorted values. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

function isCompletionRecord(r: JobRecord): boolean {
  return r.completion === true;
}

/**
 * Each LLM request's waiting: how long after its own compute with the whole GPU (what `idealMs` is) the user got
 * its answer, for queueing, loading, sharing or CPU layers. A completion the user typed past (superseded) counts
 * until the next suggestion the editor showed, so a policy that answers none of a burst's completions waits for all
 * of them. Requests that failed or never ended are not waiting but lost.
 */
export function waitsOf(run: PolicyRun): Millis[] {
  const llm = run.records.filter((r) => r.kind === 'llm').sort((a, b) => a.at - b.at);
  const waits: Millis[] = [];
  let shownAt: Millis | undefined;
  // From the last request back: the next suggestion shown after each completion is known when it is reached.
  for (let i = llm.length - 1; i >= 0; i--) {
    const r = llm[i];
    if (isCompletionRecord(r) && r.outcome === 'done') shownAt = r.endedAt;
    const answeredAt = r.outcome === 'done' ? r.endedAt : r.outcome === 'superseded' ? shownAt : undefined;
    if (answeredAt !== undefined) waits.push(Math.max(0, answeredAt - r.at - (r.idealMs ?? 0)));
  }
  return waits.sort((a, b) => a - b);
}

export function summarize(run: PolicyRun): Summary {
  const images = run.records.filter((r) => r.kind === 'image');
  const llm = run.records.filter((r) => r.kind === 'llm');
  const waits = waitsOf(run);
  return {
    policy: run.policy,
    budget: run.budget,
    images: images.length,
    failedImages: images.filter((r) => r.outcome === 'failed').length,
    blankImages: images.filter((r) => r.outcome === 'blank').length,
    lostJobs: llm.filter((r) => r.outcome !== 'done' && r.outcome !== 'superseded').length + images.filter((r) => r.outcome === 'lost').length,
    completions: llm.filter(isCompletionRecord).length,
    completionsShown: llm.filter((r) => isCompletionRecord(r) && r.outcome === 'done').length,
    makespanMs: run.makespanMs,
    llmRequests: llm.length,
    waitP50Ms: percentile(waits, 50),
    waitP95Ms: percentile(waits, 95),
    waitMeanMs: waits.length ? waits.reduce((s, w) => s + w, 0) / waits.length : 0,
    llmReloads: run.llmReloads,
    peakUsed: run.peakUsed,
    retries: run.retries,
    notes: run.notes,
    problems: run.records.filter((r) => r.outcome !== 'done' && r.outcome !== 'superseded').map((r) => `${r.id} ${r.outcome}: ${firstSentences(oneLine(r.message ?? 'no message'), 320)}`),
  };
}

export type TargetId = 'noFailures' | 'nearOracle' | 'lessWaiting';

export interface TargetCheck {
  target: TargetId;
  budget: Bytes;
  pass: boolean;
  /** The figures behind the verdict, in words. */
  detail: string;
  /** For the waiting target: image jobs that cannot run beside the hot LLM on this card. */
  coexistence?: Coexistence;
}

export const TARGET_TEXT: Record<TargetId, string> = {
  noFailures: 'zero failed/gray images and zero lost jobs',
  nearOracle: 'total time within 10% of the oracle',
  lessWaiting: 'LLM waiting (mean and p95) at least 50% lower than "unload before every image"',
};

/** Checks VRAM Relay against the targets on one budget's summaries. */
export function checkTargets(byPolicy: Map<PolicyId, Summary>, trace?: Trace): TargetCheck[] {
  const relay = byPolicy.get('relay');
  const oracle = byPolicy.get('oracle');
  const unload = byPolicy.get('unloadPerImage');
  if (!relay || !oracle || !unload) return [];
  const budget = relay.budget;
  const failures = relay.failedImages + relay.blankImages + relay.lostJobs;
  const ratio = relay.makespanMs / Math.max(1, oracle.makespanMs);
  const meanRatio = relay.waitMeanMs / Math.max(1, unload.waitMeanMs);
  const p95Ratio = relay.waitP95Ms / Math.max(1, unload.waitP95Ms);
  return [
    {
      target: 'noFailures',
      budget,
      pass: failures === 0,
      detail: `${relay.failedImages} failed, ${relay.blankImages} gray, ${relay.lostJobs} lost (${relay.retries} recovered by a retry)`,
    },
    {
      target: 'nearOracle',
      budget,
      pass: ratio <= 1.1,
      detail: `${minutes(relay.makespanMs)} vs oracle ${minutes(oracle.makespanMs)} (${signedPct(ratio)})`,
    },
    {
      target: 'lessWaiting',
      budget,
      pass: meanRatio <= 0.5 && p95Ratio <= 0.5,
      detail: `mean ${seconds(relay.waitMeanMs)} vs ${seconds(unload.waitMeanMs)} (${signedPct(meanRatio)}), p95 ${seconds(relay.waitP95Ms)} vs ${seconds(unload.waitP95Ms)} (${signedPct(p95Ratio)})`,
      ...(trace ? { coexistence: coexistence(trace) } : {}),
    },
  ];
}

/** Whole sentences up to about `max` characters. */
function firstSentences(text: string, max: number): string {
  if (text.length <= max) return text;
  const cut = text.lastIndexOf('. ', max);
  return cut > 40 ? text.slice(0, cut + 1) : `${text.slice(0, max)}...`;
}

function oneLine(text: string): string {
  return text.replace(/\s+/g, ' ').trim();
}

export function minutes(ms: Millis): string {
  return `${(ms / 60_000).toFixed(1)} min`;
}

export function seconds(ms: Millis): string {
  return ms < 10_000 ? `${(ms / 1000).toFixed(2)} s` : `${(ms / 1000).toFixed(1)} s`;
}

/** `-12%` / `+3%` for a ratio of 0.88 / 1.03. */
export function signedPct(ratio: number): string {
  const pct = Math.round((ratio - 1) * 100);
  return `${pct >= 0 ? '+' : ''}${pct}%`;
}

export interface Coexistence {
  imageJobs: number;
  /** Image jobs that cannot run beside the hot LLM on this card at all. */
  apart: number;
  /** Their share of the session's image time. */
  apartTimeShare: number;
}

/**
 * Image jobs that cannot run beside the hot LLM even with their leanest placement (weights streamed from RAM, text
 * encoder and VAE on the CPU, flash attention, one image per run), true sizes, no margin, other programs as they are
 * when the job arrives. LLM requests that come during such a job cannot use the GPU LLM whatever the policy.
 */
export function coexistence(trace: Trace): Coexistence {
  const world = new World(trace);
  const hot = world.llm.hot(world.llm.meta.blockCount + 1);
  let apart = 0;
  let total = 0;
  let apartTime = 0;
  for (const job of trace.jobs) {
    if (job.kind !== 'image') continue;
    const truth = world.imageTruth(job);
    const lean = evaluatePlacement(truth, job.batch, { textEncoder: 'cpu', diffusion: 'offload', vae: 'cpu', vaeTiling: false, flashAttention: true }, 1);
    const fast = evaluatePlacement(truth, job.batch, { textEncoder: 'gpu', diffusion: 'gpu', vae: 'gpu', vaeTiling: true, flashAttention: true }, job.batch);
    total += fast.timeMs;
    if (lean.peak + hot > trace.budget - world.otherUseAt(job.at)) {
      apart++;
      apartTime += fast.timeMs;
    }
  }
  return { imageJobs: trace.jobs.filter((j) => j.kind === 'image').length, apart, apartTimeShare: total > 0 ? apartTime / total : 0 };
}
