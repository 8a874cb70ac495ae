/**
 * What the LLM adapters (embedded node-llama-cpp worker, external llama-server) tell the sidecar as it happens,
 * and the errors they throw. The sidecar turns events into decision-log entries (`worker`, `restore`, `fail`).
 */

import type { MeasuredBuffer } from '../../core/ports';
import type { LlmState, Millis } from '../../core/types';

/** The worker process itself (llama-swap's process states). */
export type WorkerProcessState = 'stopped' | 'starting' | 'ready' | 'busy' | 'stopping';

export type LlmEvent =
  | { type: 'state'; state: LlmState; process: WorkerProcessState }
  /** One step (e.g. warm -> hot) finished; `measured` is what the worker then holds. */
  | { type: 'transition'; from: LlmState; to: LlmState; tookMs: Millis; measured: MeasuredBuffer[] }
  /** The process died or hung. `during` says what it was doing; `willRetry` whether a request is rerun. */
  | {
      type: 'crash';
      during: 'idle' | 'request' | 'transition';
      exitCode: number | null;
      signal: string | null;
      hung: boolean;
      willRetry: boolean;
      message: string;
    }
  /** After a crash the worker was restarted and brought back to the state it was in. */
  | { type: 'recovered'; state: LlmState; tookMs: Millis }
  /** After a crash the worker could not be brought back: it is stopped. */
  | { type: 'gaveUp'; message: string }
  /** A request was answered: its prompt's tokens, how many the engine reused from the request before, its output. */
  | { type: 'answered'; promptTokens: number; reusedTokens: number; tokens: number; tookMs: Millis }
  /** Something worth a line in the sidecar's log (engine warnings, buffer sizes, fallbacks). */
  | { type: 'log'; level: 'info' | 'warn' | 'error'; message: string };

export type LlmEventListener = (event: LlmEvent) => void;

/** Bad input the user must fix (missing model, not a GGUF, wrong binary): retrying will not help. */
export class LlmInputError extends Error {
  override readonly name = 'LlmInputError';
}

/** A request or transition that the current state does not allow (e.g. a request while the LLM is not hot). */
export class LlmStateError extends Error {
  override readonly name = 'LlmStateError';
}

/** The engine reported an allocation failure (or died of one). */
export class LlmOutOfMemoryError extends Error {
  override readonly name = 'LlmOutOfMemoryError';
}

/** The worker process died (a signal, exit 134 after an abort) or was killed after hanging. */
export class LlmWorkerCrashedError extends Error {
  override readonly name = 'LlmWorkerCrashedError';
  constructor(
    message: string,
    readonly exitCode: number | null,
    readonly signal: string | null,
    readonly hung: boolean,
  ) {
    super(message);
  }
}

/** The request was cancelled through its AbortSignal. */
export class LlmCancelledError extends Error {
  override readonly name = 'AbortError';
}

/** Intermediate states between two LLM states, in order (stopped -> cold -> warm -> hot; down straight to stopped). */
export function llmPath(from: LlmState, to: LlmState): LlmState[] {
  const order: LlmState[] = ['stopped', 'cold', 'warm', 'hot'];
  const a = order.indexOf(from);
  const b = order.indexOf(to);
  if (a === b) return [];
  // Stopping the process frees everything at once: no need to dispose step by step.
  if (to === 'stopped') return ['stopped'];
  return a < b ? order.slice(a + 1, b + 1) : order.slice(b, a).reverse();
}
