/**
 * What the arbiter needs from the world outside the core: the workers that really hold VRAM and the clock.
 * The real implementations live in `sidecar/workers/`; tests and benchmarks pass simulated ones.
 */

import type { Bytes, ImageJobSpec, LlmJobSpec, LlmState, Millis, Plan, RecoveryRung, StageName } from './types';

/** A buffer size a worker logged, fed to calibration (e.g. sd.cpp `vae compute buffer size: 1664.00 MB(VRAM)`). */
export interface MeasuredBuffer {
  /** e.g. `vae.compute`, `diffusion.compute`, `textEncoder.weights`, `llm.kv`, `llm.weights`. */
  key: string;
  bytes: Bytes;
  where: 'gpu' | 'cpu';
}

export interface StageProgress {
  stage: StageName | 'saving';
  step?: number;
  totalSteps?: number;
  message?: string;
}

/** The LLM worker as the arbiter sees it: a resident that can change state and serve requests. */
export interface LlmControl {
  state(): LlmState;
  /** Move to `target` (hot/warm/cold/stopped); resolves once the worker says it is there. */
  setState(target: LlmState, signal?: AbortSignal): Promise<{ tookMs: Millis; measured: MeasuredBuffer[] }>;
  /** Serve one request; the worker must be hot. Streams text through `onText`. */
  run(job: LlmJobSpec, onText: (delta: string) => void, signal: AbortSignal): Promise<string>;
  /**
   * How many times the worker process has died so far. Each death loses the context, also when the worker comes
   * back by itself (a restart after an idle crash, a request run again), which the arbiter would not otherwise see.
   */
  crashCount(): number;
}

export type ImageFailureKind =
  /** An allocation failed (log line or CUDA out of memory). */
  | 'oom'
  /** The image came out uniform gray or black although the log said success: an allocation failed silently. */
  | 'blank'
  /** Black image from fp16 NaN in the VAE (not a memory failure: a safer plan will not help). */
  | 'nan'
  /** The worker died (exit 134, a signal) or hung past its timeout. */
  | 'crash'
  /** Bad input the user must fix (missing model, not a model, not sd.cpp): retrying will not help. */
  | 'input'
  | 'cancelled';

export type ImageRunResult =
  | { ok: true; outputs: string[]; measured: MeasuredBuffer[]; tookMs: Millis }
  | { ok: false; failure: ImageFailureKind; message: string; measured: MeasuredBuffer[]; stage?: StageName };

/** The image worker as the arbiter sees it: runs one job under a plan. */
export interface ImageRunner {
  run(job: ImageJobSpec, plan: Plan, onProgress: (p: StageProgress) => void, signal: AbortSignal): Promise<ImageRunResult>;
  /** Stop any resident sd-server (frees its weights). */
  stopResident(): Promise<void>;
}

/** Failures after which the arbiter reruns the same seed one rung further down `RECOVERY_LADDER`. */
export const RETRYABLE_FAILURES: readonly ImageFailureKind[] = ['oom', 'blank', 'crash'];

export interface Clock {
  now(): Millis;
  sleep(ms: Millis, signal?: AbortSignal): Promise<void>;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  sleep: (ms, signal) =>
    new Promise<void>((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason ?? new Error('aborted'));
      const timer = setTimeout(() => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      }, ms);
      const onAbort = () => {
        clearTimeout(timer);
        reject(signal?.reason ?? new Error('aborted'));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
    }),
};

export type { RecoveryRung };
