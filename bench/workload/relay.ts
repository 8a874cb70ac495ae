/**
 * VRAM Relay on the simulated machine: the real Arbiter (sidecar/core/arbiter.ts) with its real planner, fed by the
 * real estimators and an in-memory calibration store the way sidecar/service/costs.ts and engine.ts wire them
 * (figures from the model headers, corrected by the buffers the workers log), on the simulated device, driven by the
 * discrete-event clock. Settings are the extension's defaults: 512 MiB margin, LLM context dropped after 5 idle
 * minutes and weights after 30, image jobs at normal priority behind interactive LLM requests.
 *
 * The only differences from the service: model headers come from catalog.ts instead of files, and calibration
 * stays in memory.
 */

import { Arbiter } from '../../sidecar/core/arbiter';
import { CalibrationStore } from '../../sidecar/core/calibration';
import { estimateImageJob } from '../../sidecar/core/estimators/imageEstimator';
import { estimateLlm, layersThatFit } from '../../sidecar/core/estimators/llmEstimator';
import { LLM_KV_TYPE, recordsFromMeasured } from '../../sidecar/core/estimators/measuredRecords';
import { FULL_SD_CAPABILITIES, type DecisionEvent, type ImageJobSpec, type LlmCosts } from '../../sidecar/core/types';
import { LLM_CONTEXT, LLM_META, modelInfo, RELAY_MARGIN } from './catalog';
import { llmSpec } from './policies/common';
import { Session, type PolicyRun } from './session';
import type { Trace } from './trace';
import type { SdBuild } from './truth';
import { LLM_PID, SD_PID } from './world';
import { TrueLlm, TrueSdCli } from './workers';

const IDLE_WARM_SECONDS = 300;
const IDLE_COLD_SECONDS = 1800;

export interface RelayRun extends PolicyRun {
  /** The arbiter's decisions by kind, for the report. */
  decisionCounts: Record<string, number>;
}

export interface RelayOptions {
  /** Every decision of the arbiter, with its reason (for looking into a run). */
  onDecision?: (decision: DecisionEvent) => void;
  /** false: no CPU copy of the LLM (to see what it brings). */
  cpuLane?: boolean;
}

export async function runRelay(trace: Trace, sdBuild: SdBuild = 'current', options: RelayOptions = {}): Promise<RelayRun> {
  const session = new Session(trace, sdBuild);
  const world = session.world;
  const capabilities = FULL_SD_CAPABILITIES;
  const backend = capabilities.backend;
  const calibration = new CalibrationStore();
  const modelsByPath = new Map(Object.values(trace.models).map((m) => [m.path, m]));

  // As ModelCosts.llm: as many layers as fit in the device's total minus the margin, then the figures for them.
  let lastLlmCosts: LlmCosts | null = null;
  const llmCosts = (): LlmCosts => {
    const options = { backend, calibration };
    const gpuLayers = layersThatFit(LLM_META, Math.max(0, trace.budget - RELAY_MARGIN), LLM_CONTEXT, LLM_KV_TYPE, options);
    const costs = estimateLlm(LLM_META, { gpuLayers, contextSize: LLM_CONTEXT, kvType: LLM_KV_TYPE, backend }, calibration);
    if (lastLlmCosts && costs.gpuLayers !== lastLlmCosts.gpuLayers) llm.configure(costs.gpuLayers);
    lastLlmCosts = costs;
    return costs;
  };
  const imageCosts = (spec: ImageJobSpec) => {
    const model = modelsByPath.get(spec.modelPath);
    if (!model) throw new Error(`${spec.modelPath} is not in the catalog`);
    return estimateImageJob(
      modelInfo(model),
      { width: spec.width, height: spec.height, batch: spec.batch, frames: spec.frames ?? 1, steps: spec.steps },
      { backend, calibration },
    );
  };

  const llm = new TrueLlm(world, llmCosts().gpuLayers);
  llm.prime('hot');
  // The CPU copy the service starts beside an embedded LLM: no GPU layers, so no device memory.
  const llmCpu = options.cpuLane === false ? null : new TrueLlm(world, 0);
  const sd = new TrueSdCli(world);
  const arbiter = new Arbiter({
    device: () => world.device.snapshot(),
    marginBytes: RELAY_MARGIN,
    llm,
    llmCpu,
    image: sd,
    costs: { image: async (spec) => imageCosts(spec), llm: async () => llmCosts() },
    capabilities: () => capabilities,
    clock: world.clock,
    idleWarmSeconds: IDLE_WARM_SECONDS,
    idleColdSeconds: IDLE_COLD_SECONDS,
    ourPids: () => [LLM_PID, SD_PID],
  });

  // As ModelCosts.record: what the workers logged becomes calibration.
  arbiter.on('measured', (event) => {
    const model = event.job.spec.kind === 'image' ? modelsByPath.get(event.job.spec.modelPath) : undefined;
    calibration.addAll(
      recordsFromMeasured(event, {
        backend,
        at: world.clock.now(),
        imageModel: model ? modelInfo(model) : undefined,
        llm: lastLlmCosts ? { costs: lastLlmCosts, meta: LLM_META } : undefined,
      }),
    );
  });
  const decisionCounts: Record<string, number> = {};
  arbiter.on('decision', (d) => {
    decisionCounts[d.kind] = (decisionCounts[d.kind] ?? 0) + 1;
    options.onDecision?.(d);
  });

  session.deliver((job) => {
    const spec =
      job.kind === 'llm'
        ? llmSpec(job)
        : {
            kind: 'image' as const,
            modelPath: trace.models[job.model].path,
            prompt: job.id,
            width: job.width,
            height: job.height,
            batch: job.batch,
            steps: job.steps,
            seed: job.seed,
            outputPath: `/workspace/assets/generated/${job.id}.png`,
          };
    const info = arbiter.submit(spec);
    // The editor cancels a completion the user typed past, as the inline completion provider's token does.
    if (job.kind === 'llm') session.signal(job.id).addEventListener('abort', () => arbiter.cancel(info.id), { once: true });
    void arbiter.waitFor(info.id).then((done) => {
      const status = done.job.status;
      session.end(job.id, status === 'done' ? 'done' : 'failed', done.job.message);
    });
  });

  const run = await session.finish('relay', { llmReloads: () => llm.weightLoads, retries: () => decisionCounts.retry ?? 0 });
  arbiter.dispose();
  return { ...run, decisionCounts };
}
