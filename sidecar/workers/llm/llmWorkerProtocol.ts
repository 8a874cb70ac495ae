/**
 * The IPC messages between the sidecar and the embedded LLM worker process (node-llama-cpp).
 *
 * Every request carries an `id`; the worker answers each with exactly one `result` or `error` of that id. A
 * `generate` request also streams `text` messages before its answer, and can be stopped by a `cancel` naming it.
 * The worker sends `hello` once when it starts and `log` whenever llama.cpp says something worth keeping.
 * Types only, shared by both processes.
 */

import type { MeasuredBuffer } from '../../core/ports';
import type { Bytes, LlmJobSpec, Millis } from '../../core/types';

/** `llama.getVramState()` of the worker's backend (all zero on a CPU-only build). */
export interface WorkerVramState {
  total: Bytes;
  used: Bytes;
  free: Bytes;
  unifiedSize: Bytes;
}

/** What the worker holds and what the device says, after any request that changes memory. */
export interface WorkerMemoryReport {
  vram: WorkerVramState;
  /** `model.size`: the weights llama.cpp loaded (GPU and CPU parts together); 0 without a model. */
  modelBytes: Bytes;
  /** `context.stateSize`: the context's state as llama.cpp counts it; 0 without a context. */
  contextStateBytes: Bytes;
  /** Buffers llama.cpp logged for the current model and context (`llm.weights`, `llm.kv`, `llm.compute`). */
  measured: MeasuredBuffer[];
}

/** Which backend to ask node-llama-cpp for; `auto` falls back to CPU where no GPU build works. */
export type WorkerGpuChoice = 'auto' | 'cuda' | 'vulkan' | 'metal' | false;

// ---------------------------------------------------------------------------------------------------------------
// Sidecar -> worker

export interface InitRequest {
  type: 'init';
  id: number;
  gpu: WorkerGpuChoice;
}
export interface InitResult {
  /** The backend node-llama-cpp chose (`cuda`, `vulkan`, `metal`) or false for CPU only. */
  gpu: string | false;
  memory: WorkerMemoryReport;
}

export interface LoadModelRequest {
  type: 'loadModel';
  id: number;
  modelPath: string;
  /** Layers on the GPU: a number, or node-llama-cpp's `auto` / `max`. */
  gpuLayers: number | 'auto' | 'max';
}
export interface LoadModelResult {
  gpuLayers: number;
  layerCount: number;
  trainContextSize: number;
  /** True when the model has fill-in-the-middle tokens. */
  infill: boolean;
  memory: WorkerMemoryReport;
}

export interface CreateContextRequest {
  type: 'createContext';
  id: number;
  contextSize: number;
  /** CPU threads for evaluation; node-llama-cpp decides when absent. */
  threads?: number;
}
export interface CreateContextResult {
  contextSize: number;
  memory: WorkerMemoryReport;
}

/** Drops the context (KV cache and compute buffers): hot -> warm. */
export interface DisposeContextRequest {
  type: 'disposeContext';
  id: number;
}
/** Drops the model (and its context): -> cold. */
export interface DisposeModelRequest {
  type: 'disposeModel';
  id: number;
}
export interface DisposeResult {
  memory: WorkerMemoryReport;
}

export interface GenerateRequest {
  type: 'generate';
  id: number;
  job: LlmJobSpec;
  /** Sampling seed: a retried request uses the same one, so that it streams the same text again. */
  seed?: number;
}
export interface GenerateResult {
  text: string;
  /** Tokens generated. */
  tokens: number;
  stopReason: 'eogToken' | 'stopGenerationTrigger' | 'maxTokens' | 'abort' | 'customStopTrigger' | 'functionCalls';
  /** Set for infill jobs: `native` FIM, or `prefix` (the model has no FIM tokens: plain completion of the prefix). */
  infillMode?: 'native' | 'prefix';
  tookMs: Millis;
  /** Prompt tokens, and how many of them the sequence already held from the request before (not evaluated again). */
  promptTokens: number;
  reusedTokens: number;
}

/** Stops the running generation `targetId`; that request then answers with an error of code `cancelled`. */
export interface CancelRequest {
  type: 'cancel';
  targetId: number;
}

export interface MemoryRequest {
  type: 'memory';
  id: number;
}

/** Frees everything and exits after answering. */
export interface ShutdownRequest {
  type: 'shutdown';
  id: number;
}

export type WorkerRequest =
  | InitRequest
  | LoadModelRequest
  | CreateContextRequest
  | DisposeContextRequest
  | DisposeModelRequest
  | GenerateRequest
  | MemoryRequest
  | ShutdownRequest;

export type SidecarToWorker = WorkerRequest | CancelRequest;

/** The answer type of each request. */
export interface WorkerResults {
  init: InitResult;
  loadModel: LoadModelResult;
  createContext: CreateContextResult;
  disposeContext: DisposeResult;
  disposeModel: DisposeResult;
  generate: GenerateResult;
  memory: WorkerMemoryReport;
  shutdown: Record<string, never>;
}

// ---------------------------------------------------------------------------------------------------------------
// Worker -> sidecar

export interface HelloMessage {
  type: 'hello';
  pid: number;
}

export interface ResultMessage<T = unknown> {
  type: 'result';
  id: number;
  value: T;
}

/**
 * `code` says what the sidecar should do: `input` (bad model path or not a GGUF: tell the user, do not retry),
 * `state` (request not valid in this state), `cancelled`, `oom` (llama.cpp reported an allocation failure),
 * `internal` (anything else).
 */
export type WorkerErrorCode = 'input' | 'state' | 'cancelled' | 'oom' | 'internal';

export interface ErrorMessage {
  type: 'error';
  id: number;
  code: WorkerErrorCode;
  message: string;
}

export interface TextMessage {
  type: 'text';
  id: number;
  delta: string;
}

export interface LogMessage {
  type: 'log';
  level: 'info' | 'warn' | 'error';
  message: string;
}

export type WorkerToSidecar = HelloMessage | ResultMessage | ErrorMessage | TextMessage | LogMessage;
