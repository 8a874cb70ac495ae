/**
 * The embedded LLM as the arbiter sees it (`LlmControl`): a node-llama-cpp worker child process driven over IPC.
 *
 * States: stopped (no process) -> cold (process, no model) -> warm (weights) -> hot (weights + context).
 * Every transition is timed and reported. Operations run one at a time, in the order they were asked for.
 *
 * A worker that dies (exit 134 after an out-of-memory abort, a signal, kill -9) or hangs past its timeout is
 * restarted and brought back to the state it was in; a request it was serving is run again once, with the same
 * sampling seed, and the text already streamed is not streamed twice. If it cannot come back it stays stopped and
 * the listener is told.
 */

import { fork, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { MeasuredBuffer } from '../../core/ports';
import type { LlmJobSpec, LlmState, Millis } from '../../core/types';
import {
  LlmCancelledError,
  LlmInputError,
  LlmOutOfMemoryError,
  LlmStateError,
  LlmWorkerCrashedError,
  llmPath,
  type LlmEvent,
  type LlmEventListener,
  type WorkerProcessState,
} from './llmEvents';
import { LlmWorkerBase } from './llmWorkerBase';
import type {
  LoadModelResult,
  WorkerErrorCode,
  WorkerGpuChoice,
  WorkerMemoryReport,
  WorkerRequest,
  WorkerResults,
  WorkerToSidecar,
} from './llmWorkerProtocol';

/** How to start the worker: the built `dist/llmWorker.mjs`, or the TypeScript source under tsx (tests). */
export interface LlmWorkerEntry {
  modulePath: string;
  execArgv: string[];
}

/** The bundled worker next to the bundled sidecar (`dist/llmWorker.mjs` beside `dist/sidecar.js`). */
export function builtLlmWorkerEntry(distDir: string = __dirname): LlmWorkerEntry {
  return { modulePath: join(distDir, 'llmWorker.mjs'), execArgv: [] };
}

/** The TypeScript source run through tsx (development and tests; tsx is a dev dependency, absent from the VSIX). */
export function sourceLlmWorkerEntry(): LlmWorkerEntry {
  // Resolved at run time, not by the bundler: the bundle never takes this path.
  const tsx = pathToFileURL(createRequire(__filename).resolve('tsx')).href;
  return { modulePath: join(__dirname, 'llmWorkerMain.ts'), execArgv: ['--import', tsx] };
}

/** The built worker when this code runs from dist/, the source otherwise. */
export function defaultLlmWorkerEntry(): LlmWorkerEntry {
  const built = builtLlmWorkerEntry();
  return existsSync(built.modulePath) ? built : sourceLlmWorkerEntry();
}

export interface EmbeddedLlmOptions {
  modelPath: string;
  contextSize: number;
  /** Layers on the GPU (a number, or node-llama-cpp's `auto` / `max`). Default `auto`. */
  gpuLayers?: number | 'auto' | 'max';
  /** Backend to ask node-llama-cpp for. Default `auto` (CUDA, Vulkan or Metal, else CPU). */
  gpu?: WorkerGpuChoice;
  /** CPU threads for evaluation; node-llama-cpp decides when absent. */
  threads?: number;
  worker?: LlmWorkerEntry;
  env?: NodeJS.ProcessEnv;
  /** Working folder of the worker (where a crash dump would land). Default: the sidecar's. */
  cwd?: string;
  /** Starting the process and initialising llama.cpp (default 60 s). */
  startTimeoutMs?: Millis;
  /** Loading weights or creating a context (default 10 min: large models on slow disks). */
  transitionTimeoutMs?: Millis;
  /** A request that streams nothing for this long is treated as hung: the worker is killed (default 2 min). */
  hangTimeoutMs?: Millis;
  /** Time between asking the worker to exit and killing it (default 3 s). */
  stopGraceMs?: Millis;
  onEvent?: LlmEventListener;
}

const DEFAULTS = { startTimeoutMs: 60_000, transitionTimeoutMs: 10 * 60_000, hangTimeoutMs: 120_000, stopGraceMs: 3_000 };
export class EmbeddedLlm extends LlmWorkerBase {
  /** The states this engine can hold (llama-server can only be hot or stopped). */
  readonly supportedStates: readonly LlmState[] = ['hot', 'warm', 'cold', 'stopped'];
  protected readonly processName = 'The LLM worker';

  private options: EmbeddedLlmOptions;
  private connection: WorkerConnection | undefined;
  private lastMemory: WorkerMemoryReport | undefined;
  private modelInfo: LoadModelResult | undefined;
  private gpuBackend: string | false | undefined;
  /** The state the worker was in when it last died; a retry restores it. */
  private crashedFrom: LlmState | undefined;

  constructor(options: EmbeddedLlmOptions) {
    super(options.onEvent);
    this.options = { ...options };
  }

  /** The worker's pid while it runs. */
  workerPid(): number | undefined {
    return this.connection?.child.pid;
  }

  /** The last memory report of the worker (device figures and its own buffers). */
  memory(): WorkerMemoryReport | undefined {
    return this.lastMemory;
  }

  /** What the loaded model is (layers, offloaded layers, FIM support), while warm or hot. */
  model(): LoadModelResult | undefined {
    return this.modelInfo;
  }

  /** The backend node-llama-cpp chose (`cuda`, `vulkan`, `metal`) or false for CPU; undefined before the first start. */
  backend(): string | false | undefined {
    return this.gpuBackend;
  }

  /** New model, context size or layers: used from the next load / context creation. */
  updateOptions(patch: Partial<Pick<EmbeddedLlmOptions, 'modelPath' | 'contextSize' | 'gpuLayers' | 'threads' | 'gpu'>>): void {
    this.options = { ...this.options, ...patch };
  }

  setState(target: LlmState, signal?: AbortSignal): Promise<{ tookMs: Millis; measured: MeasuredBuffer[] }> {
    return this.serial(async () => {
      const started = performance.now();
      await this.moveTo(target, signal);
      return { tookMs: performance.now() - started, measured: this.lastMemory?.measured ?? [] };
    });
  }

  /** Asks the worker for a fresh memory report (waits for any running operation). */
  refreshMemory(): Promise<WorkerMemoryReport | undefined> {
    return this.serial(async () => {
      if (!this.connection) return this.lastMemory;
      this.lastMemory = await this.connection.request({ type: 'memory' }, { timeoutMs: this.timeout('startTimeoutMs') }).result;
      return this.lastMemory;
    });
  }

  // -------------------------------------------------------------------------------------------------------------

  private async moveTo(target: LlmState, signal?: AbortSignal): Promise<void> {
    for (const next of llmPath(this.current, target)) {
      if (signal?.aborted) throw new LlmCancelledError(`Moving the LLM to ${target} was cancelled at ${this.current}.`);
      await this.step(next);
    }
  }

  private async step(to: LlmState): Promise<void> {
    const from = this.current;
    const started = performance.now();
    try {
      if (to === 'stopped') await this.stopWorker();
      else if (to === 'cold' && from === 'stopped') await this.startWorker();
      else if (to === 'cold') await this.request({ type: 'disposeModel' }, 'transitionTimeoutMs');
      else if (to === 'warm' && from === 'cold') await this.loadModel();
      else if (to === 'warm') await this.request({ type: 'disposeContext' }, 'transitionTimeoutMs');
      else await this.createContext();
    } catch (error) {
      if (error instanceof LlmWorkerCrashedError) {
        this.emit({ type: 'crash', during: 'transition', exitCode: error.exitCode, signal: error.signal, hung: error.hung, willRetry: false, message: error.message });
      }
      throw error;
    }
    if (to === 'cold' || to === 'stopped') this.modelInfo = undefined;
    this.current = to;
    this.emit({ type: 'state', state: to, process: this.processStateValue });
    this.emit({ type: 'transition', from, to, tookMs: performance.now() - started, measured: this.lastMemory?.measured ?? [] });
  }

  private async startWorker(): Promise<void> {
    const entry = this.options.worker ?? defaultLlmWorkerEntry();
    this.setProcess('starting');
    let child: ChildProcess;
    try {
      child = fork(entry.modulePath, [], {
        execArgv: entry.execArgv,
        env: { ...process.env, ...this.options.env },
        ...(this.options.cwd ? { cwd: this.options.cwd } : {}),
        stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
        serialization: 'json',
      });
    } catch (error) {
      this.setProcess('stopped');
      throw new Error(`Could not start the LLM worker (${entry.modulePath}): ${(error as Error).message}`);
    }
    const connection: WorkerConnection = new WorkerConnection(
      child,
      (event) => this.emit(event),
      (code, signal) => this.onWorkerExit(connection, code, signal),
    );
    this.connection = connection;
    try {
      const startTimeout = this.timeout('startTimeoutMs');
      await withTimeout(connection.hello, startTimeout, () => connection.kill(true)).catch((error: Error) => {
        throw error instanceof LlmWorkerCrashedError ? error : new Error(`The LLM worker did not start within ${startTimeout} ms.`);
      });
      const init = await connection.request({ type: 'init', gpu: this.options.gpu ?? 'auto' }, { timeoutMs: this.timeout('startTimeoutMs') }).result;
      this.gpuBackend = init.gpu;
      this.lastMemory = init.memory;
      this.setProcess('ready');
    } catch (error) {
      connection.expectedExit = true;
      connection.kill();
      await connection.exited;
      if (this.connection === connection) this.connection = undefined;
      this.setProcess('stopped');
      throw error;
    }
  }

  private async stopWorker(): Promise<void> {
    const connection = this.connection;
    if (!connection) return;
    connection.expectedExit = true;
    this.setProcess('stopping');
    const grace = this.timeout('stopGraceMs');
    const asked = connection.request({ type: 'shutdown' }, { timeoutMs: grace }).result.catch(() => undefined);
    const exited = await withTimeout(Promise.all([asked, connection.exited]), grace, () => undefined).then(
      () => true,
      () => false,
    );
    if (!exited) {
      connection.kill();
      await connection.exited;
    }
    this.connection = undefined;
    this.lastMemory = undefined;
    this.setProcess('stopped');
  }

  private async loadModel(): Promise<void> {
    if (!this.options.modelPath) throw new LlmInputError('No LLM model is configured: set vramRelay.llm.modelPath to a .gguf file.');
    const result = await this.request(
      { type: 'loadModel', modelPath: this.options.modelPath, gpuLayers: this.options.gpuLayers ?? 'auto' },
      'transitionTimeoutMs',
    );
    this.modelInfo = result;
  }

  private async createContext(): Promise<void> {
    await this.request({ type: 'createContext', contextSize: this.options.contextSize, threads: this.options.threads }, 'transitionTimeoutMs');
  }

  /** One request to the worker; keeps the latest memory report of any answer that carries one. */
  private async request<B extends RequestBody>(body: B, timeout: 'startTimeoutMs' | 'transitionTimeoutMs'): Promise<WorkerResults[B['type']]> {
    const connection = this.connection;
    if (!connection) throw new LlmStateError('The LLM worker is not running.');
    const value = await connection.request(body, { timeoutMs: this.timeout(timeout) }).result;
    if (value && typeof value === 'object' && 'memory' in value) this.lastMemory = (value as { memory: WorkerMemoryReport }).memory;
    return value;
  }

  protected checkReady(): void {
    if (this.current !== 'hot') throw this.stateError();
  }

  protected recoverAfterCrash(): Promise<void> {
    return this.recover(this.crashedFrom ?? 'hot');
  }

  protected async generateOnce(job: LlmJobSpec, seed: number, onText: (delta: string) => void, signal: AbortSignal): Promise<string> {
    const connection = this.connection;
    if (!connection) throw new LlmStateError('The LLM worker is not running.');
    this.setProcess('busy');
    const { id, result } = connection.request({ type: 'generate', job, seed }, { timeoutMs: this.timeout('hangTimeoutMs'), resetOnText: true, onText });
    const onAbort = () => connection.cancel(id);
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      const answer = await result;
      this.emit({ type: 'answered', promptTokens: answer.promptTokens, reusedTokens: answer.reusedTokens, tokens: answer.tokens, tookMs: answer.tookMs });
      return answer.text;
    } finally {
      signal.removeEventListener('abort', onAbort);
      if (this.connection === connection) this.setProcess('ready');
    }
  }

  /** Restarts the worker after a crash and brings it back to `target`; on failure it stays stopped. */
  private async recover(target: LlmState): Promise<void> {
    const started = performance.now();
    try {
      await this.moveTo(target);
      this.emit({ type: 'recovered', state: target, tookMs: performance.now() - started });
    } catch (error) {
      if (this.connection) {
        this.connection.expectedExit = true;
        this.connection.kill();
        await this.connection.exited;
        this.connection = undefined;
      }
      this.current = 'stopped';
      this.setProcess('stopped');
      const message = `The LLM worker could not be restarted after a crash: ${(error as Error).message}`;
      this.emit({ type: 'gaveUp', message });
      throw new LlmWorkerCrashedError(message, null, null, false);
    }
  }

  private onWorkerExit(connection: WorkerConnection, code: number | null, signal: NodeJS.Signals | null): void {
    if (connection !== this.connection || connection.expectedExit) return;
    const before = this.current;
    this.connection = undefined;
    this.crashedFrom = before;
    this.current = 'stopped';
    this.modelInfo = undefined;
    this.lastMemory = undefined;
    this.setProcess('stopped');
    this.emit({ type: 'state', state: 'stopped', process: 'stopped' });
    if (this.operationRunning) return; // The running operation sees the crash and decides (retry or report).

    this.handleIdleCrash({ exitCode: code, signal, message: connection.describeExit(code, signal) }, before !== 'stopped', () => this.recover(before));
  }

  private setProcess(state: WorkerProcessState): void {
    this.processStateValue = state;
  }

  private timeout(name: keyof typeof DEFAULTS): Millis {
    return this.options[name] ?? DEFAULTS[name];
  }
}

// ---------------------------------------------------------------------------------------------------------------

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;
/** A request as the sidecar writes it; the connection adds the id. */
type RequestBody = DistributiveOmit<WorkerRequest, 'id'>;

interface Pending {
  resolve: (value: unknown) => void;
  reject: (error: Error) => void;
  onText?: (delta: string) => void;
  touch: () => void;
  clear: () => void;
}

const STDERR_TAIL_LINES = 20;

/** One worker process: request/answer matching, streamed text, timeouts, and what it printed before dying. */
class WorkerConnection {
  expectedExit = false;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  readonly hello: Promise<void>;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly outputTail: string[] = [];
  private hung = false;
  private isAlive = true;

  constructor(
    readonly child: ChildProcess,
    private readonly emit: (event: LlmEvent) => void,
    /** Called before pending requests are rejected, so that their callers see the state after the crash. */
    onExit: (code: number | null, signal: NodeJS.Signals | null) => void,
  ) {
    let helloReceived: () => void = () => undefined;
    this.hello = new Promise<void>((resolve) => {
      helloReceived = resolve;
    });
    this.exited = new Promise((resolve) => {
      let settled = false;
      const finish = (code: number | null, signal: NodeJS.Signals | null) => {
        if (settled) return;
        settled = true;
        this.isAlive = false;
        onExit(code, signal);
        const error = new LlmWorkerCrashedError(this.describeExit(code, signal), code, signal, this.hung);
        for (const pending of this.pending.values()) {
          pending.clear();
          pending.reject(error);
        }
        this.pending.clear();
        resolve({ code, signal });
      };
      // 'close' rather than 'exit': by then the last lines it printed have been read.
      child.once('close', finish);
      child.once('error', (error) => {
        this.outputTail.push(error.message);
        finish(null, null);
      });
    });
    // A worker that dies before saying hello must not leave start-up waiting.
    this.hello = Promise.race([
      this.hello,
      this.exited.then(({ code, signal }) => {
        throw new LlmWorkerCrashedError(`The LLM worker exited during start-up: ${this.describeExit(code, signal)}`, code, signal, false);
      }),
    ]);
    this.hello.catch(() => undefined);

    child.on('message', (message: WorkerToSidecar) => {
      switch (message.type) {
        case 'hello':
          helloReceived();
          break;
        case 'text': {
          const pending = this.pending.get(message.id);
          pending?.touch();
          pending?.onText?.(message.delta);
          break;
        }
        case 'result':
          this.settle(message.id, (pending) => pending.resolve(message.value));
          break;
        case 'error':
          this.settle(message.id, (pending) => pending.reject(workerError(message.code, message.message)));
          break;
        case 'log':
          this.emit({ type: 'log', level: message.level, message: message.message });
          break;
      }
    });
    for (const stream of [child.stdout, child.stderr]) {
      stream?.setEncoding('utf8');
      stream?.on('data', (chunk: string) => {
        for (const line of chunk.split('\n')) {
          if (!line.trim()) continue;
          this.outputTail.push(line.trimEnd());
          if (this.outputTail.length > STDERR_TAIL_LINES) this.outputTail.shift();
        }
      });
    }
  }

  request<B extends RequestBody>(
    body: B,
    options: { timeoutMs: Millis; onText?: (delta: string) => void; resetOnText?: boolean },
  ): { id: number; result: Promise<WorkerResults[B['type']]> } {
    const id = this.nextId++;
    const result = new Promise<WorkerResults[B['type']]>((resolve, reject) => {
      if (!this.isAlive || !this.child.connected) {
        reject(new LlmWorkerCrashedError('The LLM worker is not running.', this.child.exitCode, this.child.signalCode, false));
        return;
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      const arm = () => {
        clearTimeout(timer);
        timer = setTimeout(() => {
          // No answer (or, for a generation, no text) for too long: the worker is stuck. Kill it; the exit
          // handler rejects this request as a crash, which the caller may retry on a fresh worker.
          this.kill(true);
        }, options.timeoutMs);
      };
      arm();
      this.pending.set(id, {
        resolve: (value) => resolve(value as WorkerResults[B['type']]),
        reject,
        onText: options.onText,
        touch: options.resetOnText ? arm : () => undefined,
        clear: () => clearTimeout(timer),
      });
      this.child.send({ ...body, id });
    });
    return { id, result };
  }

  cancel(targetId: number): void {
    if (this.isAlive && this.child.connected) this.child.send({ type: 'cancel', targetId });
  }

  /** SIGKILL: an out-of-memory worker or a hung one gets no second chance to answer. */
  kill(hung = false): void {
    if (hung) this.hung = true;
    if (this.isAlive) this.child.kill('SIGKILL');
  }

  describeExit(code: number | null, signal: NodeJS.Signals | null): string {
    const how = this.hung
      ? 'stopped responding and was killed'
      : signal
        ? `was killed by ${signal}`
        : code === 134
          ? 'aborted (exit 134: usually out of memory inside llama.cpp)'
          : `exited with code ${code}`;
    const tail = this.outputTail.slice(-5).join(' | ');
    return `The LLM worker ${how}${tail ? `; last output: ${tail}` : ''}.`;
  }

  private settle(id: number, action: (pending: Pending) => void): void {
    const pending = this.pending.get(id);
    if (!pending) return;
    this.pending.delete(id);
    pending.clear();
    action(pending);
  }
}

function workerError(code: WorkerErrorCode, message: string): Error {
  switch (code) {
    case 'input':
      return new LlmInputError(message);
    case 'state':
      return new LlmStateError(message);
    case 'cancelled':
      return new LlmCancelledError(message);
    case 'oom':
      return new LlmOutOfMemoryError(message);
    default:
      return new Error(message);
  }
}

/** Resolves with `promise`, or calls `onTimeout` and rejects after `ms`. */
function withTimeout<T>(promise: Promise<T>, ms: Millis, onTimeout: () => void): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      onTimeout();
      reject(new Error(`timed out after ${ms} ms`));
    }, ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
