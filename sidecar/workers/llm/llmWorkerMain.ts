/**
 * The embedded LLM worker: a child process of the sidecar that runs llama.cpp through node-llama-cpp.
 *
 * It lives in its own process because an out-of-memory inside llama.cpp aborts the process (SIGABRT) and cannot
 * be caught: the sidecar sees the exit, restarts the worker and retries. The sidecar drives it over IPC with the
 * messages of `llmWorkerProtocol.ts`: load the model (cold -> warm), create the context (warm -> hot), dispose
 * them, generate (completion, fill-in-the-middle, chat) with streamed text, report memory, shut down.
 *
 * Built to dist/llmWorker.mjs (ESM: node-llama-cpp is ESM-only); in tests it runs from source under tsx.
 */

import type { ChatHistoryItem, Llama, LlamaContext, LlamaContextSequence, LlamaModel } from 'node-llama-cpp';
import type { LlmJobSpec } from '../../core/types';
import { ggufFileProblem } from './ggufFileCheck';
import { parseLlamaLogLine, toMeasuredBuffers, type LlamaLogEvent } from './llamaLogParser';
import type {
  CreateContextResult,
  DisposeResult,
  GenerateResult,
  InitResult,
  LoadModelResult,
  SidecarToWorker,
  WorkerErrorCode,
  WorkerGpuChoice,
  WorkerMemoryReport,
  WorkerRequest,
  WorkerToSidecar,
} from './llmWorkerProtocol';

type NodeLlamaCpp = typeof import('node-llama-cpp');
type BufferEvent = Extract<LlamaLogEvent, { type: 'buffer' }>;

const DEFAULT_MAX_TOKENS = 256;
const LOG_QUIET_MS = 20;
const LOG_SETTLE_MAX_MS = 250;
const ENHANCE_PROMPT_SYSTEM =
  'Rewrite the user\'s image idea as one detailed prompt for an image generator: subject, style, lighting, composition. Answer with the prompt only.';

class WorkerError extends Error {
  constructor(
    message: string,
    readonly code: WorkerErrorCode,
  ) {
    super(message);
  }
}

class LlmWorker {
  private lib: NodeLlamaCpp | undefined;
  private llama: Llama | undefined;
  private model: LlamaModel | undefined;
  private context: LlamaContext | undefined;
  /**
   * The context's one sequence, kept from request to request: node-llama-cpp then evaluates only the tokens after
   * the part of the new prompt that matches what the sequence holds (the file before the cursor, for completions
   * while the user types in one place).
   */
  private sequence: LlamaContextSequence | undefined;
  private modelBuffers: BufferEvent[] = [];
  private contextBuffers: BufferEvent[] = [];
  /** Allocation failures and errors llama.cpp logged since the current request started. */
  private oomLines: string[] = [];
  private errorLines: string[] = [];
  private lastLogAt = 0;
  private readonly generations = new Map<number, AbortController>();

  constructor(private readonly send: (message: WorkerToSidecar) => void) {}

  async handle(message: SidecarToWorker): Promise<void> {
    if (message.type === 'cancel') {
      this.generations.get(message.targetId)?.abort(new Error('cancelled'));
      return;
    }
    this.oomLines = [];
    this.errorLines = [];
    try {
      const value = await this.dispatch(message);
      this.send({ type: 'result', id: message.id, value });
    } catch (error) {
      // llama.cpp's own explanation arrives on the log just after the failure.
      await this.logsSettled();
      const { code, text } = this.describe(error, message);
      this.send({ type: 'error', id: message.id, code, message: text });
    }
    if (message.type === 'shutdown') await this.exit(0);
  }

  private async dispatch(request: WorkerRequest): Promise<unknown> {
    switch (request.type) {
      case 'init':
        return this.init(request.gpu);
      case 'loadModel':
        return this.loadModel(request.modelPath, request.gpuLayers);
      case 'createContext':
        return this.createContext(request.contextSize, request.threads);
      case 'disposeContext':
        return this.disposeContext();
      case 'disposeModel':
        return this.disposeModel();
      case 'generate':
        return this.generate(request.id, request.job, request.seed);
      case 'memory':
        return this.memory();
      case 'shutdown':
        await this.disposeModel();
        return {};
    }
  }

  private async init(gpu: WorkerGpuChoice): Promise<InitResult> {
    if (this.llama) return { gpu: this.llama.gpu, memory: await this.memory() };
    const lib = await import('node-llama-cpp');
    this.lib = lib;
    this.llama = await lib.getLlama({
      gpu,
      // Never compile llama.cpp at run time: the prebuilt binaries ship with the extension.
      build: 'never',
      progressLogs: false,
      logLevel: lib.LlamaLogLevel.info,
      logger: (level, message) => this.onLlamaLog(level, message),
    });
    return { gpu: this.llama.gpu, memory: await this.memory() };
  }

  private async loadModel(modelPath: string, gpuLayers: number | 'auto' | 'max'): Promise<LoadModelResult> {
    const llama = this.requireLlama();
    if (this.model) throw new WorkerError('A model is already loaded: dispose it first.', 'state');
    const problem = await ggufFileProblem(modelPath);
    if (problem) throw new WorkerError(problem, 'input');
    this.modelBuffers = [];
    this.model = await llama.loadModel({ modelPath, gpuLayers });
    await this.logsSettled();
    const model = this.model;
    return {
      gpuLayers: model.gpuLayers,
      layerCount: model.fileInsights.totalLayers,
      trainContextSize: model.trainContextSize,
      infill: model.tokens.infill.prefix != null && model.tokens.infill.suffix != null,
      memory: await this.memory(),
    };
  }

  private async createContext(contextSize: number, threads: number | undefined): Promise<CreateContextResult> {
    const model = this.model;
    if (!model) throw new WorkerError('No model is loaded: load one before creating a context.', 'state');
    if (this.context) await this.disposeContext();
    this.contextBuffers = [];
    this.context = await model.createContext({ contextSize, ...(threads ? { threads } : {}) });
    await this.logsSettled();
    return { contextSize: this.context.contextSize, memory: await this.memory() };
  }

  private async disposeContext(): Promise<DisposeResult> {
    for (const controller of this.generations.values()) controller.abort(new Error('cancelled'));
    const context = this.context;
    this.context = undefined;
    this.sequence = undefined;
    this.contextBuffers = [];
    if (context && !context.disposed) await context.dispose();
    return { memory: await this.memory() };
  }

  private async disposeModel(): Promise<DisposeResult> {
    await this.disposeContext();
    const model = this.model;
    this.model = undefined;
    this.modelBuffers = [];
    if (model && !model.disposed) await model.dispose();
    return { memory: await this.memory() };
  }

  private async generate(id: number, job: LlmJobSpec, seed: number | undefined): Promise<GenerateResult> {
    const lib = this.lib;
    const context = this.context;
    if (!lib || !context) throw new WorkerError('The LLM is not hot (no context): bring it to hot before a request.', 'state');
    const controller = new AbortController();
    this.generations.set(id, controller);
    const started = performance.now();
    let tokens = 0;
    const options = {
      signal: controller.signal,
      maxTokens: job.maxTokens ?? DEFAULT_MAX_TOKENS,
      ...(job.temperature !== undefined ? { temperature: job.temperature } : {}),
      ...(seed !== undefined ? { seed } : {}),
      onTextChunk: (delta: string) => this.send({ type: 'text', id, delta }),
      onToken: (generated: readonly unknown[]) => {
        tokens += generated.length;
      },
    };
    if (!this.sequence || this.sequence.disposed) this.sequence = context.getSequence();
    const sequence = this.sequence;
    const meterBefore = sequence.tokenMeter.getState();
    // The answer, with what its prompt cost: prompt tokens in the sequence after it, and how many were evaluated.
    const answer = (text: string, stopReason: GenerateResult['stopReason'], infillMode?: GenerateResult['infillMode']): GenerateResult => {
      const used = sequence.tokenMeter.diff(meterBefore);
      const promptTokens = Math.max(0, sequence.contextTokens.length - used.usedOutputTokens);
      return {
        text,
        tokens,
        stopReason,
        ...(infillMode ? { infillMode } : {}),
        tookMs: performance.now() - started,
        promptTokens,
        reusedTokens: Math.max(0, promptTokens - used.usedInputTokens),
      };
    };
    try {
      if (job.task === 'completion' || job.task === 'infill') {
        const completion = new lib.LlamaCompletion({ contextSequence: sequence, autoDisposeSequence: false });
        try {
          if (job.task === 'infill') {
            const prefix = job.prefix ?? job.prompt ?? '';
            if (completion.infillSupported) {
              const { response, metadata } = await completion.generateInfillCompletionWithMeta(prefix, job.suffix ?? '', options);
              return answer(response, metadata.stopReason, 'native');
            }
            this.send({ type: 'log', level: 'warn', message: 'The model has no fill-in-the-middle tokens: completing the prefix only (the suffix is ignored).' });
            const { response, metadata } = await completion.generateCompletionWithMeta(prefix, options);
            return answer(response, metadata.stopReason, 'prefix');
          }
          const { response, metadata } = await completion.generateCompletionWithMeta(job.prompt ?? '', options);
          return answer(response, metadata.stopReason);
        } finally {
          completion.dispose({ disposeSequence: false });
        }
      }

      const { system, history, last } = chatParts(job);
      const session = new lib.LlamaChatSession({ contextSequence: sequence, autoDisposeSequence: false, ...(system ? { systemPrompt: system } : {}) });
      try {
        if (history.length > 0) session.setChatHistory([...session.getChatHistory().filter((item) => item.type === 'system'), ...history]);
        const { response, responseText, stopReason } = await session.promptWithMeta(last, options);
        void response;
        return answer(responseText, stopReason);
      } finally {
        session.dispose({ disposeSequence: false });
      }
    } catch (error) {
      if (controller.signal.aborted) throw new WorkerError('The request was cancelled.', 'cancelled');
      throw error;
    } finally {
      this.generations.delete(id);
    }
  }

  private async memory(): Promise<WorkerMemoryReport> {
    const vram = this.llama ? await this.llama.getVramState() : { total: 0, used: 0, free: 0, unifiedSize: 0 };
    return {
      vram: { total: vram.total, used: vram.used, free: vram.free, unifiedSize: vram.unifiedSize },
      modelBytes: this.model && !this.model.disposed ? this.model.size : 0,
      contextStateBytes: this.context && !this.context.disposed ? this.context.stateSize : 0,
      measured: toMeasuredBuffers([...this.modelBuffers, ...this.contextBuffers]),
    };
  }

  private onLlamaLog(level: string, message: string): void {
    this.lastLogAt = performance.now();
    for (const line of message.split('\n')) {
      const event = parseLlamaLogLine(line);
      if (event?.type === 'buffer') (event.kind === 'model' ? this.modelBuffers : this.contextBuffers).push(event);
      if (event?.type === 'error' && event.oom) this.oomLines.push(event.message);
      if (level === 'error' && line.trim()) this.errorLines.push(line.trim());
      const important = level === 'error' || level === 'fatal' || level === 'warn';
      if (event || important) {
        this.send({ type: 'log', level: level === 'warn' ? 'warn' : important ? 'error' : 'info', message: line.trim() });
      }
    }
  }

  /** llama.cpp's log lines reach JavaScript just after the call that printed them resolves: wait for a quiet gap. */
  private async logsSettled(): Promise<void> {
    const start = performance.now();
    await delay(0);
    while (performance.now() - start < LOG_SETTLE_MAX_MS && performance.now() - this.lastLogAt < LOG_QUIET_MS) await delay(LOG_QUIET_MS / 2);
  }

  private requireLlama(): Llama {
    if (!this.llama) throw new WorkerError('The worker has not been initialised (send init first).', 'state');
    return this.llama;
  }

  private describe(error: unknown, request: WorkerRequest): { code: WorkerErrorCode; text: string } {
    if (error instanceof WorkerError) return { code: error.code, text: error.message };
    const text = error instanceof Error ? error.message : String(error);
    if (this.oomLines.length > 0) return { code: 'oom', text: `${text} (llama.cpp: ${this.oomLines[0]})` };
    if (request.type === 'loadModel') {
      const reason = this.errorLines.find((line) => /error loading model|failed to read|corrupted|unknown model architecture/i.test(line));
      const detail = reason ? `${text} (llama.cpp: ${reason})` : text;
      return { code: 'input', text: `llama.cpp could not load ${request.modelPath}: ${detail}. Check that it is a complete GGUF model of an architecture llama.cpp supports.` };
    }
    return { code: 'internal', text };
  }

  async exit(code: number): Promise<never> {
    try {
      await this.disposeModel();
      await this.llama?.dispose();
    } catch {
      // Exiting anyway: the operating system takes the memory back.
    }
    process.exit(code);
  }
}

/** Splits a chat job into node-llama-cpp's system prompt, earlier turns and the message to answer. */
function chatParts(job: LlmJobSpec): { system?: string; history: ChatHistoryItem[]; last: string } {
  const messages = job.messages ? [...job.messages] : [];
  if (messages.length === 0 || messages[messages.length - 1].role !== 'user') {
    if (job.prompt === undefined && messages.length === 0) throw new WorkerError('A chat request needs messages or a prompt.', 'input');
    if (job.prompt !== undefined) messages.push({ role: 'user', content: job.prompt });
  }
  const lastMessage = messages.pop();
  if (!lastMessage || lastMessage.role !== 'user') throw new WorkerError('The last chat message must come from the user.', 'input');
  let system = messages.filter((m) => m.role === 'system').map((m) => m.content).join('\n') || undefined;
  if (!system && job.task === 'enhancePrompt') system = ENHANCE_PROMPT_SYSTEM;
  const history: ChatHistoryItem[] = [];
  for (const message of messages) {
    if (message.role === 'user') history.push({ type: 'user', text: message.content });
    else if (message.role === 'assistant') history.push({ type: 'model', response: [message.content] });
  }
  return { system, history, last: lastMessage.content };
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function main(): void {
  const parentSend = process.send?.bind(process);
  if (!parentSend) {
    console.error('llmWorker must be started by the VRAM Relay sidecar (it talks over an IPC channel).');
    process.exit(2);
  }
  const send = (message: WorkerToSidecar) => {
    if (process.connected) parentSend(message);
  };
  const worker = new LlmWorker(send);
  // Requests arrive one at a time from the sidecar, but a cancel must overtake a running generation.
  let queue = Promise.resolve();
  process.on('message', (message: SidecarToWorker) => {
    if (message.type === 'cancel') {
      void worker.handle(message);
      return;
    }
    queue = queue.then(() => worker.handle(message));
  });
  // Without its sidecar the worker only holds memory: leave.
  process.on('disconnect', () => void worker.exit(0));
  send({ type: 'hello', pid: process.pid });
}

main();
