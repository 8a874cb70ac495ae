/**
 * What both LLM adapters (the embedded node-llama-cpp worker and a user's llama-server) share: one operation at a
 * time in the order asked, event listeners, the request retry after a crash (same seed, the text already streamed
 * not streamed twice), and the limit on restarts after crashes while idle.
 */

import { randomInt } from 'node:crypto';
import type { LlmControl, MeasuredBuffer } from '../../core/ports';
import type { LlmJobSpec, LlmState, Millis } from '../../core/types';
import { LlmCancelledError, LlmStateError, LlmWorkerCrashedError, type LlmEvent, type LlmEventListener, type WorkerProcessState } from './llmEvents';

/** More idle crashes than this within CRASH_WINDOW_MS and the worker is left stopped (no restart loop). */
const MAX_IDLE_RESTARTS = 3;
const CRASH_WINDOW_MS = 60_000;

export abstract class LlmWorkerBase implements LlmControl {
  /** The states this engine can hold. */
  abstract readonly supportedStates: readonly LlmState[];
  /** How messages name the process, e.g. `The LLM worker`, `llama-server`. */
  protected abstract readonly processName: string;

  protected current: LlmState = 'stopped';
  protected processStateValue: WorkerProcessState = 'stopped';
  /** True while a queued operation runs: a crash is then reported by that operation, not as an idle crash. */
  protected operationRunning = false;
  private chain: Promise<unknown> = Promise.resolve();
  private idleCrashTimes: number[] = [];
  private crashes = 0;
  private readonly listeners = new Set<LlmEventListener>();

  protected constructor(onEvent?: LlmEventListener) {
    if (onEvent) this.listeners.add(onEvent);
  }

  state(): LlmState {
    return this.current;
  }

  processState(): WorkerProcessState {
    return this.processStateValue;
  }

  crashCount(): number {
    return this.crashes;
  }

  onEvent(listener: LlmEventListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  abstract setState(target: LlmState, signal?: AbortSignal): Promise<{ tookMs: Millis; measured: MeasuredBuffer[] }>;

  run(job: LlmJobSpec, onText: (delta: string) => void, signal: AbortSignal): Promise<string> {
    return this.serial(() => this.runWithRetry(job, onText, signal));
  }

  /** Stops the process. */
  dispose(): Promise<void> {
    return this.setState('stopped').then(() => undefined);
  }

  // -------------------------------------------------------------------------------------------------------------
  // What each engine provides

  /** Throws an LlmStateError unless a request can be served now. */
  protected abstract checkReady(): void;
  /** One attempt at a request; a dead or hung process becomes an LlmWorkerCrashedError. */
  protected abstract generateOnce(job: LlmJobSpec, seed: number, onText: (delta: string) => void, signal: AbortSignal): Promise<string>;
  /** Restarts the process after a crash during a request and brings it back to where it was. */
  protected abstract recoverAfterCrash(): Promise<void>;

  // -------------------------------------------------------------------------------------------------------------

  protected serial<T>(operation: () => Promise<T>): Promise<T> {
    const next = this.chain.then(async () => {
      this.operationRunning = true;
      try {
        return await operation();
      } finally {
        this.operationRunning = false;
      }
    });
    this.chain = next.catch(() => undefined);
    return next;
  }

  protected emit(event: LlmEvent): void {
    // Every crash event, whatever the engine and the moment, is a process that died: counted in this one place.
    if (event.type === 'crash') this.crashes++;
    for (const listener of this.listeners) {
      try {
        listener(event);
      } catch {
        // A listener's bug must not break the worker's state machine.
      }
    }
  }

  protected stateError(): LlmStateError {
    return new LlmStateError(`The LLM is ${this.current}: it must be hot to serve a request (setState('hot') first).`);
  }

  /**
   * Reports a crash that happened while no operation ran and restarts through `restart` unless the process keeps
   * dying (more than MAX_IDLE_RESTARTS in a minute) or was not meant to be running.
   */
  protected handleIdleCrash(crash: { exitCode: number | null; signal: string | null; message: string }, wasRunning: boolean, restart: () => Promise<void>): void {
    const now = Date.now();
    this.idleCrashTimes = this.idleCrashTimes.filter((at) => now - at < CRASH_WINDOW_MS);
    this.idleCrashTimes.push(now);
    const willRetry = wasRunning && this.idleCrashTimes.length <= MAX_IDLE_RESTARTS;
    this.emit({ type: 'crash', during: 'idle', ...crash, hung: false, willRetry });
    if (!willRetry) {
      if (wasRunning) this.emit({ type: 'gaveUp', message: `${this.processName} crashed ${this.idleCrashTimes.length} times in a minute: left stopped.` });
      return;
    }
    void this.serial(restart).catch(() => undefined);
  }

  private async runWithRetry(job: LlmJobSpec, onText: (delta: string) => void, signal: AbortSignal): Promise<string> {
    if (signal.aborted) throw new LlmCancelledError('The request was cancelled before it started.');
    // A fixed seed makes a retried request produce the same text, so the part already streamed can be skipped.
    const seed = randomInt(0, 2 ** 31 - 1);
    let delivered = '';
    for (let attempt = 1; ; attempt++) {
      this.checkReady();
      let produced = '';
      let diverged = false;
      const forward = (delta: string) => {
        const start = produced.length;
        produced += delta;
        if (produced.length <= delivered.length) {
          if (!diverged && !delivered.startsWith(produced)) diverged = true;
          return;
        }
        const fresh = delta.slice(Math.max(0, delivered.length - start));
        if (!diverged && !produced.startsWith(delivered)) {
          diverged = true;
          this.emit({ type: 'log', level: 'warn', message: 'The retried answer differs from the part streamed before the crash.' });
        }
        delivered = produced;
        onText(fresh);
      };
      try {
        return await this.generateOnce(job, seed, forward, signal);
      } catch (error) {
        if (!(error instanceof LlmWorkerCrashedError) || signal.aborted) throw error;
        const willRetry = attempt === 1;
        this.emit({ type: 'crash', during: 'request', exitCode: error.exitCode, signal: error.signal, hung: error.hung, willRetry, message: error.message });
        if (!willRetry) {
          throw new LlmWorkerCrashedError(`${this.processName} died twice on this request: ${error.message}`, error.exitCode, error.signal, error.hung);
        }
        await this.recoverAfterCrash();
      }
    }
  }
}
