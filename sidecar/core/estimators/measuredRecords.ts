/**
 * What a finished stage teaches calibration: the buffers a worker logged, each stored beside the estimator's prior
 * for the same job (not the calibrated figure the plan used), so that a later job of another size scales its own
 * prior by measured/prior, and the accuracy table compares the estimator itself with what was seen. Pure: the
 * service and the workload benchmark both turn the arbiter's `measured` events into records here.
 */

import type { ImageModelInfo } from '../../models/imageModelInfo';
import type { LlmModelMeta } from '../../models/llmModelMeta';
import type { MeasuredEvent } from '../arbiter';
import { recordsFromImageRun, recordsFromLlmRun, type CalibrationRecord } from '../calibration';
import type { LlmCosts, Millis } from '../types';
import { KV_BYTES_PER_ELEMENT, LLAMA_DEFAULT_UBATCH } from './figures';
import { estimateImageJob, type ImageBackend } from './imageEstimator';
import { estimateLlm, gpuBlocks } from './llmEstimator';

/** The KV cache type the sidecar runs the LLM with. */
export const LLM_KV_TYPE = 'f16';

export interface MeasuredContext {
  backend: ImageBackend;
  at: Millis;
  /** The image model's header figures, for an image job's prior; without them records carry no estimate. */
  imageModel?: ImageModelInfo;
  /** The LLM's figures as planned and its header, for an LLM stage. */
  llm?: { costs: LlmCosts; meta: LlmModelMeta };
}

export function recordsFromMeasured(event: MeasuredEvent, context: MeasuredContext): CalibrationRecord[] {
  const spec = event.job.spec;
  const { backend, at } = context;
  if (spec.kind === 'image') {
    const placement = event.plan?.placement;
    if (!placement) return [];
    const size = { width: spec.width, height: spec.height, batch: spec.batch, frames: spec.frames ?? 1, steps: spec.steps };
    const prior = context.imageModel ? estimateImageJob(context.imageModel, size, { backend }) : undefined;
    return recordsFromImageRun(
      { model: spec.modelPath, backend, width: spec.width, height: spec.height, frames: spec.frames, placement, source: 'sd.cpp log', at, estimate: prior },
      event.buffers,
    );
  }
  if (!context.llm) return [];
  const { costs, meta } = context.llm;
  return recordsFromLlmRun(
    {
      model: costs.modelPath,
      backend,
      gpuLayers: costs.gpuLayers,
      contextSize: costs.contextSize,
      kvType: LLM_KV_TYPE,
      kvBytesPerElement: KV_BYTES_PER_ELEMENT[LLM_KV_TYPE],
      gpuBlocks: gpuBlocks(meta, costs.gpuLayers),
      ubatch: LLAMA_DEFAULT_UBATCH,
      flashAttention: false,
      estimate: estimateLlm(meta, { gpuLayers: costs.gpuLayers, contextSize: costs.contextSize, kvType: LLM_KV_TYPE, backend }),
      source: 'llama.cpp log',
      at,
    },
    event.buffers,
  );
}
