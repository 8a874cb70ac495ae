/**
 * Runs every policy on the traces of every budget and checks VRAM Relay's targets.
 */

import { checkTargets, seconds, summarize, type Summary } from './metrics';
import { runBothResident } from './policies/bothResident';
import { runKeepAlive } from './policies/keepAlive';
import { runOracle } from './policies/oracle';
import { runStaticReservation } from './policies/staticReservation';
import { runUnloadPerImage } from './policies/unloadPerImage';
import { runRelay } from './relay';
import type { BenchResult, BudgetResult } from './report';
import type { PolicyId, PolicyRun } from './session';
import { makeTraces, type Trace } from './trace';
import type { SdBuild } from './truth';

export const POLICIES: Record<PolicyId, (trace: Trace, sdBuild: SdBuild) => Promise<PolicyRun>> = {
  relay: runRelayWithAblation,
  bothResident: runBothResident,
  unloadPerImage: runUnloadPerImage,
  staticReservation: runStaticReservation,
  keepAlive: runKeepAlive,
  oracle: runOracle,
};

/** VRAM Relay, with a note of what the LLM waiting would be without its CPU copy of the LLM. */
async function runRelayWithAblation(trace: Trace, sdBuild: SdBuild): Promise<PolicyRun> {
  const run = await runRelay(trace, sdBuild);
  const without = summarize(await runRelay(trace, sdBuild, { cpuLane: false }));
  const withLane = summarize(run);
  run.notes.push(
    `LLM wait p50 / p95 / mean ${seconds(withLane.waitP50Ms)} / ${seconds(withLane.waitP95Ms)} / ${seconds(withLane.waitMeanMs)}; ` +
      `without the CPU copy of the LLM ${seconds(without.waitP50Ms)} / ${seconds(without.waitP95Ms)} / ${seconds(without.waitMeanMs)}`,
  );
  return run;
}

/** Every policy on one trace, one after the other (each in its own world). */
export async function runBudget(trace: Trace, sdBuild: SdBuild): Promise<BudgetResult> {
  const summaries: Summary[] = [];
  for (const run of Object.values(POLICIES)) summaries.push(summarize(await run(trace, sdBuild)));
  return { trace, summaries, checks: checkTargets(new Map(summaries.map((s) => [s.policy, s])), trace) };
}

export interface BenchmarkOptions {
  seed: number;
  sdBuild: SdBuild;
  /** Also run the sessions with the older sd.cpp build (when the main run uses the current one). */
  olderBuild: boolean;
  /** Seeds whose target verdicts are listed too. */
  otherSeeds: number[];
  /** The CPU's LLM speed as a share of the assumed figures (1: as assumed). */
  cpuSpeed?: number;
  onProgress?: (line: string) => void;
}

export async function runBenchmark(options: BenchmarkOptions): Promise<BenchResult> {
  const traceOptions = { cpuSpeed: options.cpuSpeed };
  const budgets: BudgetResult[] = [];
  for (const trace of makeTraces(options.seed, traceOptions)) {
    options.onProgress?.(`seed ${options.seed}, ${(trace.budget / 2 ** 30).toFixed(0)} GB, ${options.sdBuild} build`);
    budgets.push(await runBudget(trace, options.sdBuild));
  }
  let olderBuild: BudgetResult[] | undefined;
  if (options.olderBuild && options.sdBuild === 'current') {
    olderBuild = [];
    for (const trace of makeTraces(options.seed, traceOptions)) {
      options.onProgress?.(`seed ${options.seed}, ${(trace.budget / 2 ** 30).toFixed(0)} GB, older build`);
      olderBuild.push(await runBudget(trace, 'older'));
    }
  }
  const otherSeeds = [];
  for (const seed of options.otherSeeds) {
    const checks = [];
    for (const trace of makeTraces(seed, traceOptions)) {
      options.onProgress?.(`seed ${seed}, ${(trace.budget / 2 ** 30).toFixed(0)} GB`);
      checks.push(...(await runBudget(trace, options.sdBuild)).checks);
    }
    otherSeeds.push({ seed, checks });
  }
  return { seed: options.seed, sdBuild: options.sdBuild, cpuSpeed: options.cpuSpeed ?? 1, budgets, olderBuild, otherSeeds };
}
