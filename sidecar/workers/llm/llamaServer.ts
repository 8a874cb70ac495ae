/**
 * The external LLM engine: the user's own `llama-server` binary, as an `LlmControl`.
 *
 * Spawned with execa (no shell) as a process-group leader with the planned `-m`, `-c`, `-ngl`, always `--port`
 * (a free loopback port) and `--host 127.0.0.1`. Ready when `GET /health` answers 200 (503 while loading).
 * The buffers llama.cpp allocated are read from its log. Requests go to `/completion`, `/infill` and
 * `/v1/chat/completions`, streamed as server-sent events.
 *
 * States: llama-server cannot drop only its context or only its weights on demand (sleeping frees both and cannot
 * be asked for), so it is either hot (running) or stopped; `setState('warm' | 'cold')` stops it, and `state()`
 * then says `stopped`. Stopping is SIGTERM to the whole process tree, then SIGKILL after a grace period.
 *
 * A server that dies or hangs mid-request is restarted and the request run again once, with the same seed; the
 * text already streamed is not streamed twice.
 */

import { stat } from 'node:fs/promises';
import { createServer } from 'node:net';
import { isAbsolute, resolve as resolvePath } from 'node:path';
import type { ResultPromise } from 'execa';
import type { MeasuredBuffer } from '../../core/ports';
import type { LlmJobSpec, LlmState, Millis } from '../../core/types';
import { loadExeca } from '../../loadExeca';
import { executableAt, findOnPath } from '../executables';
import { stopTree, trackProcessGroup } from '../processTree';
import { ggufFileProblem } from './ggufFileCheck';
import { LlamaLogParser, toMeasuredBuffers, type LlamaLogFacts } from './llamaLogParser';
import {
  LlmCancelledError,
  LlmInputError,
  LlmOutOfMemoryError,
  LlmWorkerCrashedError,
  type LlmEventListener,
} from './llmEvents';
import { LlmWorkerBase } from './llmWorkerBase';
import { SseDecoder } from './sseDecoder';

export interface LlamaServerOptions {
  /** The binary: a path, or empty / a bare name to look up on PATH (default `llama-server`). */
  serverPath?: string;
  modelPath: string;
  contextSize: number;
  /** `-ngl`: a number of layers, `auto` or `all`. Default `all`. */
  gpuLayers?: number | 'auto' | 'all';
  /** Keep llama-server's own `--fit` (which may shrink the context or move layers) instead of the plan's figures. */
  fit?: boolean;
  /** Port to listen on; a free one is picked when absent. */
  port?: number;
  /** Arguments added after the planned ones (the user's own tuning). */
  extraArgs?: string[];
  /** Environment of the server (merged over the sidecar's); its PATH is also where the binary is looked for. */
  env?: NodeJS.ProcessEnv;
  /** Loading the model, from spawn to `/health` 200 (default 10 min). */
  readyTimeoutMs?: Millis;
  /** A request that streams nothing for this long is treated as hung (default 2 min). */
  hangTimeoutMs?: Millis;
  /** Time between SIGTERM and SIGKILL (default 5 s). */
  stopGraceMs?: Millis;
  onEvent?: LlmEventListener;
}

/** What `--help` says the binary supports. */
export interface LlamaServerHelp {
  path: string;
  /** `--fit on|off` (newer releases fit layers and context to free memory by default). */
  fit: boolean;
  /** `--sleep-idle-seconds` */
  sleepIdle: boolean;
}

const DEFAULTS = { readyTimeoutMs: 10 * 60_000, hangTimeoutMs: 120_000, stopGraceMs: 5_000 };
const HELP_TIMEOUT_MS = 15_000;
const HEALTH_POLL_MS = 150;
const DEFAULT_MAX_TOKENS = 256;
const LOG_TAIL_LINES = 30;
const ENHANCE_PROMPT_SYSTEM =
  'Rewrite the user\'s image idea as one detailed prompt for an image generator: subject, style, lighting, composition. Answer with the prompt only.';

// ---------------------------------------------------------------------------------------------------------------
// Finding and checking the binary

/** Resolves the configured binary to a file, or throws an LlmInputError saying what to set. */
export async function resolveLlamaServerBinary(serverPath: string | undefined, env: NodeJS.ProcessEnv = process.env): Promise<string> {
  const configured = serverPath?.trim() || 'llama-server';
  const hasDirectory = configured.includes('/') || configured.includes('\\');
  if (hasDirectory || isAbsolute(configured)) {
    const full = resolvePath(configured);
    if (await executableAt(full)) return full;
    throw new LlmInputError(`llama-server not found at ${full}: set vramRelay.llm.serverPath or put it on PATH.`);
  }
  const found = await findOnPath(configured, env);
  if (found) return found;
  throw new LlmInputError(`llama-server not found at ${configured} (looked on PATH): set vramRelay.llm.serverPath or put it on PATH.`);
}

/** Reads `--help` and checks that the binary is llama-server; throws an LlmInputError when it is not. */
export function parseLlamaServerHelp(text: string, path: string): LlamaServerHelp {
  const has = (flag: RegExp) => flag.test(text);
  if (!has(/--port\b/) || !has(/--ctx-size\b/) || !has(/(--n-gpu-layers|--gpu-layers|-ngl)\b/)) {
    throw new LlmInputError(
      `${path} does not look like llama-server (its --help does not list --port, --ctx-size and --n-gpu-layers): set vramRelay.llm.serverPath to llama.cpp's llama-server.`,
    );
  }
  return { path, fit: has(/--fit(?![-\w])/), sleepIdle: has(/--sleep-idle-seconds\b/) };
}

/** `--help` answers by binary, while the file is unchanged (probing costs a process start). */
const helpCache = new Map<string, { mtimeMs: number; size: number; help: LlamaServerHelp }>();

/** Finds the binary and runs its `--help` (once per binary file). */
export async function probeLlamaServer(serverPath: string | undefined, env: NodeJS.ProcessEnv = process.env): Promise<LlamaServerHelp> {
  const path = await resolveLlamaServerBinary(serverPath, env);
  const { mtimeMs, size } = await stat(path);
  const cached = helpCache.get(path);
  if (cached && cached.mtimeMs === mtimeMs && cached.size === size) return cached.help;
  const help = await runHelp(path, env);
  helpCache.set(path, { mtimeMs, size, help });
  return help;
}

async function runHelp(path: string, env: NodeJS.ProcessEnv): Promise<LlamaServerHelp> {
  const execa = await loadExeca();
  const result = await execa(path, ['--help'], { reject: false, all: true, timeout: HELP_TIMEOUT_MS, env, stdin: 'ignore' });
  if (result.failed && result.exitCode === undefined) {
    throw new LlmInputError(`${path} could not be run (${result.shortMessage}): set vramRelay.llm.serverPath to llama.cpp's llama-server.`);
  }
  return parseLlamaServerHelp(String(result.all ?? ''), path);
}

/** The command line for the plan. */
export function llamaServerArgs(options: LlamaServerOptions, port: number, help: LlamaServerHelp): string[] {
  const args = ['-m', options.modelPath, '--host', '127.0.0.1', '--port', String(port), '-c', String(options.contextSize)];
  args.push('-ngl', String(options.gpuLayers ?? 'all'));
  // The plan already chose layers and context for the free memory: llama-server must not change them behind it.
  if (help.fit && !options.fit) args.push('--fit', 'off');
  args.push(...(options.extraArgs ?? []));
  return args;
}

/** A port nothing listens on right now (the server binds it a moment later). */
export function findFreePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (address && typeof address === 'object' ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

// ---------------------------------------------------------------------------------------------------------------

interface RunningServer {
  process: ResultPromise;
  pid: number;
  port: number;
  baseUrl: string;
  parser: LlamaLogParser;
  logTail: string[];
  exited: Promise<{ exitCode: number | undefined; signal: string | undefined }>;
  expectedExit: boolean;
  hung: boolean;
  untrack: () => void;
}

export class LlamaServerLlm extends LlmWorkerBase {
  /** llama-server can only be running with everything loaded, or not running. */
  readonly supportedStates: readonly LlmState[] = ['hot', 'stopped'];
  protected readonly processName = 'llama-server';

  private options: LlamaServerOptions;
  private server: RunningServer | undefined;
  private help: LlamaServerHelp | undefined;

  constructor(options: LlamaServerOptions) {
    super(options.onEvent);
    this.options = { ...options };
  }

  /** The server's pid while it runs. */
  serverPid(): number | undefined {
    return this.server?.pid;
  }

  /** `http://127.0.0.1:PORT` while it runs. */
  baseUrl(): string | undefined {
    return this.server?.baseUrl;
  }

  /** What the log said about the current process (buffers, offloaded layers, devices, errors). */
  logFacts(): LlamaLogFacts | undefined {
    return this.server?.parser.snapshot();
  }

  /** Buffers of the running server, for calibration. */
  measured(): MeasuredBuffer[] {
    return this.server ? toMeasuredBuffers(this.server.parser.snapshot().buffers) : [];
  }

  /** New settings take effect at the next start (a running server keeps its flags until restarted). */
  updateOptions(patch: Partial<Omit<LlamaServerOptions, 'onEvent'>>): void {
    if (patch.serverPath !== undefined && patch.serverPath !== this.options.serverPath) this.help = undefined;
    this.options = { ...this.options, ...patch };
  }

  setState(target: LlmState, signal?: AbortSignal): Promise<{ tookMs: Millis; measured: MeasuredBuffer[] }> {
    return this.serial(async () => {
      if (signal?.aborted) throw new LlmCancelledError(`Moving the LLM to ${target} was cancelled.`);
      const started = performance.now();
      const from = this.current;
      const to: LlmState = target === 'hot' ? 'hot' : 'stopped';
      if (from !== to) {
        try {
          if (to === 'hot') await this.start();
          else await this.stop();
        } catch (error) {
          if (error instanceof LlmWorkerCrashedError) {
            this.emit({ type: 'crash', during: 'transition', exitCode: error.exitCode, signal: error.signal, hung: error.hung, willRetry: false, message: error.message });
          }
          throw error;
        }
        this.current = to;
        this.emit({ type: 'state', state: to, process: this.processStateValue });
        this.emit({ type: 'transition', from, to, tookMs: performance.now() - started, measured: this.measured() });
      }
      return { tookMs: performance.now() - started, measured: this.measured() };
    });
  }

  // -------------------------------------------------------------------------------------------------------------

  private async capabilities(): Promise<LlamaServerHelp> {
    this.help ??= await probeLlamaServer(this.options.serverPath, this.env());
    return this.help;
  }

  private env(): NodeJS.ProcessEnv {
    return { ...process.env, ...this.options.env };
  }

  private async start(): Promise<void> {
    const help = await this.capabilities();
    const problem = await ggufFileProblem(this.options.modelPath);
    if (problem) throw new LlmInputError(problem);
    this.processStateValue = 'starting';
    try {
      // A port picked free can be taken before the server binds it: one more try with another.
      for (let attempt = 1; ; attempt++) {
        try {
          await this.spawnAndWait(help);
          break;
        } catch (error) {
          if (!(error instanceof PortTakenError) || attempt >= 2 || this.options.port) throw error;
        }
      }
      this.processStateValue = 'ready';
    } catch (error) {
      this.processStateValue = 'stopped';
      throw error;
    }
  }

  private async spawnAndWait(help: LlamaServerHelp): Promise<void> {
    const port = this.options.port ?? (await findFreePort());
    const args = llamaServerArgs(this.options, port, help);
    const execa = await loadExeca();
    const subprocess = execa(help.path, args, {
      env: this.env(),
      stdin: 'ignore',
      stdout: 'pipe',
      stderr: 'pipe',
      buffer: false,
      reject: false,
      // Its own process group, so that stopping it reaches everything it started.
      detached: process.platform !== 'win32',
      cleanup: process.platform === 'win32',
    });
    const pid = subprocess.pid;
    if (pid === undefined) {
      const result = await subprocess;
      throw new LlmInputError(`${help.path} could not be started: ${result.shortMessage ?? 'no process'}.`);
    }
    const server: RunningServer = {
      process: subprocess,
      pid,
      port,
      baseUrl: `http://127.0.0.1:${port}`,
      parser: new LlamaLogParser((event, line) => {
        if (event.type === 'buffer' || event.type === 'offload' || event.type === 'device') this.emit({ type: 'log', level: 'info', message: line.trim() });
        if (event.type === 'error') this.emit({ type: 'log', level: 'error', message: line.trim() });
      }),
      logTail: [],
      exited: subprocess.then((result) => ({ exitCode: result.exitCode, signal: result.signal })),
      expectedExit: false,
      hung: false,
      untrack: trackProcessGroup(pid),
    };
    for (const stream of [subprocess.stdout, subprocess.stderr]) {
      stream?.setEncoding('utf8');
      stream?.on('data', (chunk: string) => {
        server.parser.push(chunk);
        for (const line of chunk.split('\n')) {
          if (!line.trim()) continue;
          server.logTail.push(line.trimEnd());
          if (server.logTail.length > LOG_TAIL_LINES) server.logTail.shift();
        }
      });
    }
    this.server = server;
    void server.exited.then(({ exitCode, signal }) => {
      server.parser.flush();
      server.untrack();
      this.onServerExit(server, exitCode ?? null, signal ?? null);
    });

    try {
      await this.waitHealthy(server);
    } catch (error) {
      server.expectedExit = true;
      await stopTree(pid, server.exited, this.timeout('stopGraceMs'));
      if (this.server === server) this.server = undefined;
      throw error;
    }
  }

  /** Polls `/health` until 200; explains an exit or a timeout from the log. */
  private async waitHealthy(server: RunningServer): Promise<void> {
    const deadline = performance.now() + this.timeout('readyTimeoutMs');
    let exited = false;
    void server.exited.then(() => {
      exited = true;
    });
    let sawLoading = false;
    while (!exited) {
      if (performance.now() > deadline) {
        throw new LlmWorkerCrashedError(`llama-server did not become ready within ${this.timeout('readyTimeoutMs')} ms${this.tail(server)}`, null, null, true);
      }
      try {
        const response = await fetch(`${server.baseUrl}/health`, { signal: AbortSignal.timeout(2_000) });
        await response.body?.cancel();
        if (response.status === 200) return;
        if (response.status === 503 && !sawLoading) {
          sawLoading = true;
          this.emit({ type: 'log', level: 'info', message: 'llama-server is loading the model (/health 503).' });
        }
      } catch {
        // Not listening yet.
      }
      await Promise.race([delay(HEALTH_POLL_MS), server.exited]);
    }
    const { exitCode, signal } = await server.exited;
    const facts = server.parser.snapshot();
    const log = server.logTail.join('\n');
    if (/couldn't bind|address already in use/i.test(log)) throw new PortTakenError(`port ${server.port} is taken`);
    const oom = facts.errors.find((e) => e.oom);
    if (oom) throw new LlmOutOfMemoryError(`llama-server ran out of memory while loading: ${oom.message}`);
    const fatal = facts.errors.find((e) => !e.oom);
    if (fatal) {
      throw new LlmInputError(`llama-server could not load ${this.options.modelPath}: ${fatal.message}. Check that it is a complete GGUF model of an architecture this llama-server supports.`);
    }
    throw new LlmWorkerCrashedError(`llama-server exited while starting (${describeExit(exitCode ?? null, signal ?? null)})${this.tail(server)}`, exitCode ?? null, signal ?? null, false);
  }

  private async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    server.expectedExit = true;
    this.processStateValue = 'stopping';
    await stopTree(server.pid, server.exited, this.timeout('stopGraceMs'));
    await server.exited;
    if (this.server === server) this.server = undefined;
    this.processStateValue = 'stopped';
  }

  protected checkReady(): void {
    if (this.current !== 'hot' || !this.server) throw this.stateError();
  }

  protected generateOnce(job: LlmJobSpec, seed: number, onText: (delta: string) => void, signal: AbortSignal): Promise<string> {
    if (!this.server) throw this.stateError();
    return this.requestOnce(this.server, job, seed, onText, signal);
  }

  protected recoverAfterCrash(): Promise<void> {
    return this.recover();
  }

  private async requestOnce(server: RunningServer, job: LlmJobSpec, seed: number, onText: (delta: string) => void, signal: AbortSignal): Promise<string> {
    this.processStateValue = 'busy';
    try {
      if (job.task === 'infill') {
        try {
          return await this.stream(server, '/infill', infillBody(job, seed), onText, signal);
        } catch (error) {
          if (!(error instanceof HttpStatusError) || error.status < 400 || (error.status >= 500 && error.status !== 501)) throw error;
          // The model has no fill-in-the-middle tokens: complete the prefix instead, and say so.
          this.emit({ type: 'log', level: 'warn', message: `llama-server refused /infill (${error.message}): completing the prefix only (the suffix is ignored).` });
          return await this.stream(server, '/completion', completionBody({ ...job, prompt: job.prefix ?? job.prompt ?? '' }, seed), onText, signal);
        }
      }
      if (job.task === 'completion') return await this.stream(server, '/completion', completionBody(job, seed), onText, signal);
      return await this.stream(server, '/v1/chat/completions', chatBody(job, seed), onText, signal);
    } finally {
      if (this.server === server) this.processStateValue = 'ready';
    }
  }

  /** One streamed request; a dead or silent server becomes an LlmWorkerCrashedError (retryable). */
  private async stream(server: RunningServer, path: string, body: object, onText: (delta: string) => void, signal: AbortSignal): Promise<string> {
    const controller = new AbortController();
    const onAbort = () => controller.abort(new LlmCancelledError('The request was cancelled.'));
    signal.addEventListener('abort', onAbort, { once: true });
    let hangTimer: ReturnType<typeof setTimeout> | undefined;
    const armHang = () => {
      clearTimeout(hangTimer);
      hangTimer = setTimeout(() => {
        // Silent for too long: kill it; the exit turns this request into a crash that is retried.
        server.hung = true;
        controller.abort(new Error('hung'));
        void stopTree(server.pid, server.exited, 0);
      }, this.timeout('hangTimeoutMs'));
    };
    const died = server.exited.then(() => {
      controller.abort(new Error('exited'));
    });
    void died;
    let text = '';
    try {
      armHang();
      const response = await fetch(`${server.baseUrl}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'text/event-stream' },
        body: JSON.stringify(body),
        signal: controller.signal,
      });
      if (!response.ok) {
        const detail = await response.text().catch(() => '');
        throw new HttpStatusError(response.status, errorMessage(detail) || response.statusText);
      }
      if (!response.body) throw new Error(`llama-server answered ${path} without a body.`);
      const decoder = new SseDecoder();
      const textDecoder = new TextDecoder();
      const handle = (data: string): boolean => {
        if (data === '[DONE]') return true;
        const piece = deltaOf(data);
        if (piece.error) throw new HttpStatusError(500, piece.error);
        if (piece.text) {
          text += piece.text;
          onText(piece.text);
        }
        return piece.stop;
      };
      let done = false;
      for await (const chunk of response.body as AsyncIterable<Uint8Array>) {
        armHang();
        for (const data of decoder.push(textDecoder.decode(chunk, { stream: true }))) {
          if (handle(data)) done = true;
        }
        if (done) break;
      }
      if (!done) for (const data of decoder.end()) handle(data);
      if (!done && (await exitedSoon(server))) throw new Error('exited');
      return text;
    } catch (error) {
      if (signal.aborted) throw new LlmCancelledError('The request was cancelled.');
      if (error instanceof HttpStatusError) throw error;
      // A broken connection means the server died (or was killed as hung): wait for its exit to say which.
      if (server.hung || (await exitedSoon(server))) {
        const { exitCode, signal: exitSignal } = await server.exited;
        throw new LlmWorkerCrashedError(
          `llama-server ${server.hung ? 'stopped responding and was killed' : describeExit(exitCode ?? null, exitSignal ?? null)} during a request${this.tail(server)}`,
          exitCode ?? null,
          exitSignal ?? null,
          server.hung,
        );
      }
      throw error;
    } finally {
      clearTimeout(hangTimer);
      signal.removeEventListener('abort', onAbort);
    }
  }

  private async recover(): Promise<void> {
    const started = performance.now();
    try {
      this.current = 'stopped';
      await this.start();
      this.current = 'hot';
      this.emit({ type: 'state', state: 'hot', process: this.processStateValue });
      this.emit({ type: 'recovered', state: 'hot', tookMs: performance.now() - started });
    } catch (error) {
      this.current = 'stopped';
      this.processStateValue = 'stopped';
      const message = `llama-server could not be restarted after a crash: ${(error as Error).message}`;
      this.emit({ type: 'gaveUp', message });
      throw new LlmWorkerCrashedError(message, null, null, false);
    }
  }

  private onServerExit(server: RunningServer, exitCode: number | null, signal: string | null): void {
    if (server !== this.server || server.expectedExit) return;
    const before = this.current;
    this.server = undefined;
    this.current = 'stopped';
    this.processStateValue = 'stopped';
    this.emit({ type: 'state', state: 'stopped', process: 'stopped' });
    if (this.operationRunning || before !== 'hot') return; // The running operation reports it.

    this.handleIdleCrash({ exitCode, signal, message: `llama-server ${describeExit(exitCode, signal)}${this.tail(server)}` }, true, () => this.recover());
  }

  private tail(server: RunningServer): string {
    const lines = server.logTail.slice(-5).join(' | ');
    return lines ? `; last log: ${lines}` : '';
  }

  private timeout(name: keyof typeof DEFAULTS): Millis {
    return this.options[name] ?? DEFAULTS[name];
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Request bodies and stream pieces

function sampling(job: LlmJobSpec, seed: number): Record<string, unknown> {
  return { seed, ...(job.temperature !== undefined ? { temperature: job.temperature } : {}) };
}

export function completionBody(job: LlmJobSpec, seed: number): object {
  return { prompt: job.prompt ?? '', n_predict: job.maxTokens ?? DEFAULT_MAX_TOKENS, stream: true, cache_prompt: true, ...sampling(job, seed) };
}

export function infillBody(job: LlmJobSpec, seed: number): object {
  return {
    input_prefix: job.prefix ?? job.prompt ?? '',
    input_suffix: job.suffix ?? '',
    n_predict: job.maxTokens ?? DEFAULT_MAX_TOKENS,
    stream: true,
    cache_prompt: true,
    ...sampling(job, seed),
  };
}

export function chatBody(job: LlmJobSpec, seed: number): object {
  const messages = job.messages ? [...job.messages] : [];
  if (job.prompt !== undefined && (messages.length === 0 || messages[messages.length - 1].role !== 'user')) {
    messages.push({ role: 'user', content: job.prompt });
  }
  if (messages.length === 0) throw new LlmInputError('A chat request needs messages or a prompt.');
  if (job.task === 'enhancePrompt' && !messages.some((m) => m.role === 'system')) messages.unshift({ role: 'system', content: ENHANCE_PROMPT_SYSTEM });
  return { messages, max_tokens: job.maxTokens ?? DEFAULT_MAX_TOKENS, stream: true, ...sampling(job, seed) };
}

/** The text of one streamed piece, whether it ends the stream, and any error the server put in the stream. */
export function deltaOf(data: string): { text: string; stop: boolean; error?: string } {
  let parsed: unknown;
  try {
    parsed = JSON.parse(data);
  } catch {
    return { text: '', stop: false };
  }
  const value = parsed as {
    content?: unknown;
    stop?: unknown;
    error?: { message?: unknown } | string;
    choices?: { delta?: { content?: unknown }; text?: unknown; finish_reason?: unknown }[];
  };
  if (value.error) return { text: '', stop: true, error: typeof value.error === 'string' ? value.error : String(value.error.message ?? 'error') };
  if (Array.isArray(value.choices)) {
    const choice = value.choices[0];
    const text = typeof choice?.delta?.content === 'string' ? choice.delta.content : typeof choice?.text === 'string' ? choice.text : '';
    // The OpenAI-style stream ends with `[DONE]`, after the chunk that carries finish_reason.
    return { text, stop: false };
  }
  return { text: typeof value.content === 'string' ? value.content : '', stop: value.stop === true };
}

function errorMessage(body: string): string {
  try {
    const parsed = JSON.parse(body) as { error?: { message?: string } | string };
    if (typeof parsed.error === 'string') return parsed.error;
    if (parsed.error?.message) return parsed.error.message;
  } catch {
    // Not JSON: use the text.
  }
  return body.trim().slice(0, 300);
}

class HttpStatusError extends Error {
  constructor(
    readonly status: number,
    detail: string,
  ) {
    super(`HTTP ${status}: ${detail}`);
  }
}

class PortTakenError extends Error {}

function describeExit(exitCode: number | null, signal: string | null): string {
  if (signal) return `was killed by ${signal}`;
  if (exitCode === 134) return 'aborted (exit 134: usually out of memory inside llama.cpp)';
  return `exited with code ${exitCode}`;
}

/** True when the server exits within a short while (a broken connection is usually a dying process). */
async function exitedSoon(server: RunningServer): Promise<boolean> {
  const outcome = await Promise.race([server.exited.then(() => true), delay(1_000).then(() => false)]);
  return outcome;
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
