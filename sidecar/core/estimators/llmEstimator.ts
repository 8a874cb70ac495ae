/**
 * Memory and time of an LLM under llama.cpp, from its GGUF header (pure functions).
 *
 * Layers follow llama.cpp's `-ngl` / node-llama-cpp's `gpuLayers`: a model with n_layer blocks has n_layer + 1
 * offloadable layers; `gpuLayers = k` puts the last min(k, n_layer) blocks on the GPU, and the output layer too
 * when k > n_layer ("offloaded 33/33 layers" for a 32-block model). The token embedding stays in host memory.
 * The KV cache of a block lives with the block (llama.cpp's default offload of KQV).
 */

import type { LlmModelMeta } from '../../models/llmModelMeta';
import { CALIBRATION_KEYS, calibratedValue, llmComputeSetting, llmKvSetting, llmLayersSetting, type CalibrationLookup } from '../calibration';
import type { Bytes, LlmCosts } from '../types';
import {
  KV_BYTES_PER_ELEMENT,
  LLAMA_COMPUTE_FF_TENSORS,
  LLAMA_COMPUTE_HIDDEN_TENSORS,
  LLAMA_COMPUTE_MASK_BYTES,
  LLAMA_DEFAULT_UBATCH,
  LLM_CONTEXT_CREATE_MS,
  LLM_KV_CLEAR_BYTES_PER_MS,
  LLM_PROCESS_START_MS,
  LLM_RELOAD_OVERHEAD_MS,
  PCIE4_BYTES_PER_MS,
} from './figures';

export type KvCacheType = keyof typeof KV_BYTES_PER_ELEMENT;

export interface LlmEstimateOptions {
  /** llama.cpp `-ngl`: 0 .. blockCount + 1 (larger values are clamped). */
  gpuLayers: number;
  contextSize: number;
  kvType: KvCacheType;
  /** Micro-batch the graph is reserved for (llama.cpp n_ubatch, default 512). */
  batchSize?: number;
  /** Flash attention keeps the attention scores out of the compute buffer. Default false (the larger estimate). */
  flashAttention?: boolean;
  /** Backend name for calibration lookups (`cuda`, `vulkan`, `metal`, ...). Default `unknown`. */
  backend?: string;
  /** Host-to-device bandwidth for reloads, bytes per ms. Default PCIe 4.0 x16. */
  hostToDeviceBytesPerMs?: number;
}

/** Layers llama.cpp can offload: every block plus the output layer. */
export function offloadableLayers(meta: LlmModelMeta): number {
  return meta.blockCount + 1;
}

/** Blocks on the GPU for a `gpuLayers` value (the last ones). */
export function gpuBlocks(meta: LlmModelMeta, gpuLayers: number): number {
  return Math.max(0, Math.min(Math.floor(gpuLayers), meta.blockCount));
}

/** Weights on the GPU: the offloaded blocks, plus the output layer when every layer is offloaded. */
export function llmWeightBytes(meta: LlmModelMeta, gpuLayers: number): Bytes {
  const blocks = gpuBlocks(meta, gpuLayers);
  const blockBytes = meta.layerBytes.slice(meta.blockCount - blocks).reduce((sum, bytes) => sum + bytes, 0);
  return blockBytes + (gpuLayers > meta.blockCount ? meta.outputBytes : 0);
}

/**
 * KV cache on the GPU: sum over the offloaded blocks of n_ctx * n_head_kv * (key + value width) * bytes per
 * element, i.e. 2 * n_layer * n_ctx * n_head_kv * head_dim * bytes when keys and values share the head width
 * (memory-facts.md:41).
 */
export function kvCacheBytes(meta: LlmModelMeta, contextSize: number, kvType: KvCacheType, gpuLayers = offloadableLayers(meta)): Bytes {
  const blocks = gpuBlocks(meta, gpuLayers);
  const heads = meta.headCountKvByLayer.slice(meta.blockCount - blocks).reduce((sum, count) => sum + count, 0);
  return Math.ceil(contextSize * heads * (meta.keyLength + meta.valueLength) * KV_BYTES_PER_ELEMENT[kvType]);
}

/**
 * Compute buffer, as the largest stage of the worst-case graph (figures.ts, LLAMA_COMPUTE_*): attention (scores
 * ubatch x n_ctx x n_head f32, absent with flash attention) or the feed-forward intermediates, both beside the
 * ubatch x n_ctx attention mask; or the logits (ubatch x n_vocab f32).
 */
export function llmComputeBytes(meta: LlmModelMeta, contextSize: number, options: { batchSize?: number; flashAttention?: boolean } = {}): Bytes {
  const ubatch = Math.max(1, Math.min(options.batchSize ?? LLAMA_DEFAULT_UBATCH, contextSize));
  const f32 = 4;
  const hidden = ubatch * meta.embeddingLength * f32;
  const flash = options.flashAttention ?? false;
  const scores = flash ? 0 : ubatch * contextSize * meta.headCount * f32;
  const mask = ubatch * contextSize * (flash ? LLAMA_COMPUTE_MASK_BYTES.flash : LLAMA_COMPUTE_MASK_BYTES.plain);
  const attention = mask + scores + LLAMA_COMPUTE_HIDDEN_TENSORS.attention * hidden;
  const feedForward = mask + LLAMA_COMPUTE_FF_TENSORS * ubatch * meta.feedForwardLength * f32;
  const output = ubatch * meta.vocabSize * f32 + LLAMA_COMPUTE_HIDDEN_TENSORS.output * hidden;
  return Math.max(attention, feedForward, output);
}

/** Memory and time of one LLM configuration; calibration records for the same model and backend win. */
export function estimateLlm(meta: LlmModelMeta, options: LlmEstimateOptions, calibration?: CalibrationLookup): LlmCosts {
  const gpuLayers = Math.max(0, Math.min(Math.floor(options.gpuLayers), offloadableLayers(meta)));
  const blocks = gpuBlocks(meta, gpuLayers);
  const ubatch = Math.max(1, Math.min(options.batchSize ?? LLAMA_DEFAULT_UBATCH, options.contextSize));
  const flash = options.flashAttention ?? false;
  const query = { model: meta.path, backend: options.backend ?? 'unknown' };

  const weights = calibratedValue(calibration, { ...query, key: CALIBRATION_KEYS.llmWeights, setting: llmLayersSetting(gpuLayers) }, llmWeightBytes(meta, gpuLayers));
  const kvCache = calibratedValue(
    calibration,
    {
      ...query,
      key: CALIBRATION_KEYS.llmKv,
      setting: llmKvSetting(options.contextSize, options.kvType, gpuLayers),
      scale: options.contextSize * blocks * KV_BYTES_PER_ELEMENT[options.kvType],
    },
    kvCacheBytes(meta, options.contextSize, options.kvType, gpuLayers),
  );
  // With no layer on the GPU the plan keeps the model off the device: no device compute buffer is counted.
  const computePrior = gpuLayers > 0 ? llmComputeBytes(meta, options.contextSize, { batchSize: ubatch, flashAttention: flash }) : 0;
  const compute = calibratedValue(calibration, { ...query, key: CALIBRATION_KEYS.llmCompute, setting: llmComputeSetting(options.contextSize, ubatch, flash) }, computePrior);

  const bandwidth = options.hostToDeviceBytesPerMs ?? PCIE4_BYTES_PER_MS;
  const reloadPrior = LLM_RELOAD_OVERHEAD_MS + weights.value / bandwidth;
  const contextPrior = LLM_CONTEXT_CREATE_MS + (kvCache.value + compute.value) / LLM_KV_CLEAR_BYTES_PER_MS;
  return {
    modelPath: meta.path,
    layerCount: offloadableLayers(meta),
    gpuLayers,
    contextSize: options.contextSize,
    weights: Math.round(weights.value),
    kvCache: Math.round(kvCache.value),
    compute: gpuLayers > 0 ? Math.round(compute.value) : 0,
    reloadWeightsMs: Math.round(calibratedValue(calibration, { ...query, key: CALIBRATION_KEYS.llmReloadMs, setting: '', scale: weights.value }, reloadPrior).value),
    recreateContextMs: Math.round(calibratedValue(calibration, { ...query, key: CALIBRATION_KEYS.llmContextMs, setting: '' }, contextPrior).value),
    startProcessMs: Math.round(calibratedValue(calibration, { ...query, key: CALIBRATION_KEYS.llmStartMs, setting: '' }, LLM_PROCESS_START_MS).value),
    modelBytes: meta.tensorBytes,
  };
}

/** Device bytes of a configuration: weights + KV cache + compute. */
export function llmDeviceBytes(costs: LlmCosts): Bytes {
  return costs.weights + costs.kvCache + costs.compute;
}

/**
 * The most layers (0 .. blockCount + 1) whose weights, KV cache and compute buffer fit in `freeBytes` for this
 * context. 0 when not even one block fits.
 */
export function layersThatFit(
  meta: LlmModelMeta,
  freeBytes: Bytes,
  contextSize: number,
  kvType: KvCacheType,
  options: Omit<LlmEstimateOptions, 'gpuLayers' | 'contextSize' | 'kvType'> & { calibration?: CalibrationLookup } = {},
): number {
  const { calibration, ...rest } = options;
  for (let layers = offloadableLayers(meta); layers > 0; layers--) {
    const costs = estimateLlm(meta, { ...rest, gpuLayers: layers, contextSize, kvType }, calibration);
    if (llmDeviceBytes(costs) <= freeBytes) return layers;
  }
  return 0;
}
