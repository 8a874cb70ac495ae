/**
 * The LLM-request planner: a request needs the LLM hot (weights + context on the GPU). A pure function of the
 * LLM's costs and state, the device and the image worker.
 *
 * Policy when the LLM does not fit because an image job holds the memory: the request is answered by the CPU copy
 * of the model (`lane: 'cpu'`) when there is one and that is expected to end sooner than waiting for the image job
 * and then loading the LLM, counting the requests that would wait for the copy meanwhile; otherwise it WAITS for
 * the image job to end (`fits: false`, the reason says so). It never loads the GPU LLM with fewer layers: its layer
 * count is fixed until the next reload, so it would stay several times slower long after the image job. An idle
 * resident sd-server, by contrast, is stopped to make room.
 */

import { formatBytes, formatDuration } from '../format';
import type { Bytes, LlmJobSpec, Millis, Plan, StagePlan, YieldStep } from '../types';
import type { PlannerDevice, PlannerImageResident, PlannerLlm } from './imagePlanner';
import { llmFootprint, llmRestoreMs } from './llmFootprint';
import { type PlannerPolicy, resolvePolicy, waitingCausedMs } from './policy';

export interface LlmPlanInput {
  jobId: string;
  spec: Pick<LlmJobSpec, 'contextSize'>;
  device: PlannerDevice;
  llm: PlannerLlm;
  image: PlannerImageResident;
  /** The CPU copy of the model, when one may serve requests: what this request is expected to take there. */
  cpu?: CpuLaneEstimate;
  policy?: Partial<PlannerPolicy>;
}

export interface CpuLaneEstimate {
  /** The request on the CPU copy. */
  requestMs: Millis;
  /** Starting the CPU copy first (0 when it is running). */
  startMs: Millis;
  /** The same request on the GPU LLM once it is hot. */
  gpuRequestMs: Millis;
  /**
   * Recent LLM requests per ms. The copy answers one request at a time, so the ones that arrive while it answers
   * this one wait for it: priced as for a yield (policy.ts), r x T^2 / 2 for T on the copy.
   */
  requestRatePerMs?: number;
}

export function planLlmJob(input: LlmPlanInput): Plan {
  const { llm, device, image } = input;
  const base = { jobId: input.jobId, deviceId: device.id, available: device.effectiveFree };
  const costs = llm.costs;
  if (!costs) {
    return {
      ...base,
      llmTarget: 'hot',
      fits: false,
      yields: [],
      stages: [],
      peak: 0,
      extraTimeMs: 0,
      reason: 'no LLM figures: no LLM model is configured, or its file could not be read',
      suggestions: ['set an LLM model (vramRelay.llm.modelPath) that exists and is a GGUF file'],
    };
  }

  const hot = llmFootprint(costs, 'hot');
  const stages: StagePlan[] = [
    { stage: 'llmLoad', peak: costs.weights, parts: [{ label: 'LLM weights', bytes: costs.weights }] },
    {
      stage: 'llmInfer',
      peak: hot,
      parts: [
        { label: 'LLM weights', bytes: costs.weights },
        { label: `KV cache (${costs.contextSize} tokens)`, bytes: costs.kvCache },
        { label: 'LLM compute', bytes: costs.compute },
      ].filter((p) => p.bytes > 0),
    },
  ];
  const need = hot - llmFootprint(costs, llm.state);
  const restoreMs = llmRestoreMs(costs, llm.state, 'hot');
  const common = { ...base, llmTarget: 'hot' as const, stages, peak: hot, extraTimeMs: restoreMs, suggestions: [] as string[] };
  const loadText = loadWhat(llm.state);

  if (need <= 0) {
    return { ...common, fits: true, yields: [], reason: `LLM is hot: nothing to load (holds ${formatBytes(hot)})` };
  }
  if (need <= device.effectiveFree) {
    return {
      ...common,
      fits: true,
      yields: [],
      reason: `${loadText} needs ${formatBytes(need)}, free ${formatBytes(device.effectiveFree)} -> load, est. +${formatDuration(restoreMs)}`,
    };
  }
  const imageHeld = image.state === 'resident' ? image.heldBytes : 0;
  if (imageHeld > 0 && !image.busy && need <= device.effectiveFree + imageHeld) {
    const step: YieldStep = { resident: 'image', from: 'resident', to: 'stopped', frees: imageHeld, restoreMs: 0 };
    return {
      ...common,
      fits: true,
      yields: [step],
      reason: `${loadText} needs ${formatBytes(need)}, free ${formatBytes(device.effectiveFree)} -> stop the idle image worker (frees ${formatBytes(imageHeld)}), est. +${formatDuration(restoreMs)}`,
    };
  }
  if (image.busy) {
    const blocked = `${loadText} needs ${formatBytes(need)}, free ${formatBytes(device.effectiveFree)} while an image job holds memory`;
    const cpu = input.cpu;
    if (!cpu) return { ...common, fits: false, yields: [], reason: `${blocked} -> wait for it to end (the LLM keeps all its GPU layers)` };
    // Waiting: the image job's time left, then loading the LLM, then the request on the GPU.
    const waitMs = (image.remainingMs ?? 0) + restoreMs + cpu.gpuRequestMs;
    const cpuMs = cpu.startMs + cpu.requestMs;
    const holdsOthersMs = Math.round(waitingCausedMs(resolvePolicy(input.policy), cpu.requestRatePerMs ?? 0, cpuMs));
    const compare =
      `on the CPU est. ${formatDuration(cpuMs)}${cpu.startMs > 0 ? ` with its start` : ''}` +
      (holdsOthersMs >= 1000 ? ` + ${formatDuration(holdsOthersMs)} of waiting for requests that come meanwhile` : '') +
      `, waiting est. ${formatDuration(waitMs)}`;
    if (cpuMs + holdsOthersMs < waitMs) {
      return {
        ...base,
        fits: true,
        lane: 'cpu',
        yields: [],
        stages: [],
        peak: 0,
        extraTimeMs: Math.max(0, Math.round(cpuMs - cpu.gpuRequestMs)),
        reason: `${blocked} -> answer on the CPU (${compare}; no VRAM used)`,
        suggestions: [],
      };
    }
    return { ...common, fits: false, yields: [], reason: `${blocked} -> wait for it to end (${compare})` };
  }
  const shortfall = need - device.effectiveFree - imageHeld;
  const suggestions = [`a smaller context or a smaller/more quantized LLM: the KV cache for ${costs.contextSize} tokens takes ${formatBytes(costs.kvCache)}`];
  const otherUse = device.otherUse ?? 0;
  if (otherUse > 0 && shortfall <= otherUse) {
    suggestions.push(`closing other programs that use the GPU: they hold ${formatBytes(otherUse)}, ${formatBytes(shortfall)} more is needed`);
  }
  return {
    ...common,
    fits: false,
    yields: [],
    reason: `nothing fits: ${loadText} needs ${formatBytes(need)} (${needParts(costs, llm.state)}), free ${formatBytes(device.effectiveFree + imageHeld)}`,
    suggestions,
  };
}

function needParts(costs: NonNullable<PlannerLlm['costs']>, state: PlannerLlm['state']): string {
  const parts = state === 'warm' ? [] : [`weights ${formatBytes(costs.weights)}`];
  parts.push(`KV cache ${formatBytes(costs.kvCache)}`, `compute ${formatBytes(costs.compute)}`);
  return parts.join(' + ');
}

function loadWhat(state: PlannerLlm['state']): string {
  switch (state) {
    case 'warm':
      return 'LLM context';
    case 'cold':
      return 'LLM weights and context';
    default:
      return 'starting the LLM';
  }
}

/** Bytes the LLM would add to the device to become hot from `state`. */
export function llmBytesToHot(llm: PlannerLlm): Bytes {
  return Math.max(0, llmFootprint(llm.costs, 'hot') - llmFootprint(llm.costs, llm.state));
}
