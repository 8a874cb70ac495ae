/**
 * The arbiter: decides, before each heavy stage, who must yield how much VRAM, and runs the jobs in that order.
 *
 * One run loop owns every piece of mutable state. Commands (submit, cancel, setLlmState...) and the results of
 * asynchronous work (a device sample, a worker finishing) are posted to an inbox as closures and handled one at a
 * time; a handler never awaits, it starts the next piece of async work and returns. So there are no locks and no
 * state touched from callbacks. Events go out through the emitter: every decision (with its reason and numbers),
 * job progress and job completion.
 *
 * Scheduling: one image job and one LLM request can run at the same time, but only one of them plans and claims
 * memory at a time (the other waits until it runs), so two plans never count the same free bytes. The queue is
 * ordered interactive > normal > batch, first come first served within a priority.
 *
 * Memory: effective free = min(reported free, total - accounted - other programs) - margin. "Accounted" is what our
 * residents hold by state plus the running image job's lease. A lease is granted only once a poll of the device
 * shows the memory really back (the driver's free figure lags behind frees), within memoryWaitTimeoutMs;
 * otherwise the job is replanned with what is really free.
 */

import { EventEmitter } from 'node:events';

import type { JobDoneParams, JobProgressParams } from '../protocol';
import { CpuLane, describeCut } from './cpuLane';
import { DecisionLog, type DecisionQuery, type NewDecision } from './decisionLog';
import { DEFAULT_READING_ATTEMPTS, DEFAULT_READING_TIMEOUT_MS, DeviceReadingError, takeReading } from './deviceReading';
import { effectiveFree, otherProgramsUse } from './effectiveFree';
import { LlmSpeedModel } from './estimators/llmSpeed';
import { PromptReuse } from './estimators/promptReuse';
import { formatBytes, formatDuration } from './format';
import { JobQueue, PRIORITY_RANK } from './jobQueue';
import { DEFAULT_JOB_LIMITS, type JobLimits, validateJobSpec } from './jobValidation';
import {
  describeLlmYield,
  floorOf,
  llmFootprint,
  llmLevel,
  llmRestoreMs,
  MARGIN_LAST_RESORT_SHARE,
  nextRecoveryRung,
  planImageJob,
  planLlmJob,
  type CpuLaneEstimate,
  type PlanFloor,
  type PlannerPolicy,
} from './planner';
import type { Clock, ImageRunner, ImageRunResult, LlmControl, MeasuredBuffer, StageProgress } from './ports';
import { RETRYABLE_FAILURES } from './ports';
import type {
  Bytes,
  DecisionEvent,
  DeviceProbe,
  DeviceSnapshot,
  ImageJobCosts,
  ImageJobSpec,
  ImageResident,
  ImageWorkerState,
  JobInfo,
  JobPriority,
  JobSpec,
  JobStatus,
  LlmCosts,
  LlmJobSpec,
  LlmResident,
  LlmState,
  Millis,
  Plan,
  RecoveryRung,
  SdCapabilities,
} from './types';
import { RECOVERY_LADDER } from './types';

// ---------------------------------------------------------------------------------------------------------------
// Options, events, snapshot

/** Where the arbiter's figures come from; it never calls the estimators itself. */
export interface ArbiterCosts {
  image(spec: ImageJobSpec): ImageJobCosts | Promise<ImageJobCosts>;
  /** The configured LLM's figures, or null when there is none. */
  llm(): LlmCosts | null | Promise<LlmCosts | null>;
}

/** A function returning the current reading of the device, or a probe (the first device, or `deviceId`). */
export type DeviceSource = (() => DeviceSnapshot | Promise<DeviceSnapshot>) | DeviceProbe;

export interface ArbiterOptions {
  device: DeviceSource;
  /** Which of the probe's devices to use (default: the first it reports). */
  deviceId?: string;
  /** The safety margin kept free on the device. */
  marginBytes: Bytes;
  llm: LlmControl | null;
  /**
   * A CPU-only copy of the LLM (same model, no GPU layers, no VRAM) that answers requests while an image job holds
   * the memory the GPU LLM needs, when that is expected to be quicker than waiting (see cpuLane.ts). Optional.
   */
  llmCpu?: LlmControl | null;
  /** Seconds the CPU copy stays running after its last request (default 120). */
  cpuLaneIdleSeconds?: number;
  image: ImageRunner | null;
  costs: ArbiterCosts;
  capabilities: () => SdCapabilities;
  clock: Clock;
  /** How long to wait for yielded memory to show as free before replanning (default 5000). */
  memoryWaitTimeoutMs?: Millis;
  /** How often the device is polled while waiting (default 250); also the pause before a failed reading is retried. */
  memoryPollMs?: Millis;
  /** Longest wait for one device reading (default 10000): a wedged driver must not stall the queue. */
  readingTimeoutMs?: Millis;
  /** Readings tried before a decision gives up (default 3). */
  readingAttempts?: number;
  /** Seconds of inactivity after which the LLM drops its context (0 = never, the default). */
  idleWarmSeconds?: number;
  /** Seconds of inactivity after which the LLM drops its weights (0 = never, the default). */
  idleColdSeconds?: number;
  /** An LLM used within this window counts as needed soon when weighing a yield (default 120000). */
  recentUseMs?: Millis;
  /** Decisions kept in the history (default 1000). */
  historySize?: number;
  /** Pids of our worker processes, to tell our use from other programs' on drivers that list processes. */
  ourPids?: () => number[];
  limits?: Partial<JobLimits>;
  /** The LLM state to restore towards (default: the state the LLM is in when the arbiter starts). */
  llmWantedState?: LlmState;
  policy?: Partial<PlannerPolicy>;
  newJobId?: () => string;
  /** Called with the duration of each pass of the run loop (the time decisions take), for benchmarks. */
  onLoopPass?: (ms: number) => void;
}

export interface MeasuredEvent {
  job: JobInfo;
  plan?: Plan;
  buffers: MeasuredBuffer[];
  tookMs?: Millis;
}

export interface ArbiterEvents {
  decision: [DecisionEvent];
  progress: [JobProgressParams];
  jobDone: [JobDoneParams];
  /** Buffers a worker logged, for calibration. */
  measured: [MeasuredEvent];
  /** Something in the snapshot changed (queue, residents, a job's status). */
  changed: [];
}

export interface BreakdownPart {
  label: string;
  bytes: Bytes;
  kind: 'llm' | 'image' | 'compute';
}

export interface ArbiterSnapshot {
  queue: JobInfo[];
  running: JobInfo[];
  llm: LlmResident;
  image: ImageResident;
  recentDecisions: DecisionEvent[];
  /** The last device reading the arbiter took, and the effective free memory by it now. */
  device: DeviceSnapshot | null;
  effectiveFree: Bytes | null;
  marginBytes: Bytes;
  /** What we hold or have promised, by our account. */
  accounted: Bytes;
  breakdown: BreakdownPart[];
}

// ---------------------------------------------------------------------------------------------------------------
// Internal state

interface JobRecord {
  id: string;
  priority: JobPriority;
  info: JobInfo;
  admitted: boolean;
  queueSeq?: number;
  imageCosts?: ImageJobCosts;
  /** An LLM request that waits for an image job: retried when `imageEpoch` (or `cpuLaneEpoch`) moves on. */
  blockedEpoch?: number;
  blockedLaneEpoch?: number;
  /** The last wait reason announced, so that a wait is announced once. */
  waitNoted?: string;
  /** The cancel decision is already in the history. */
  cancelNoted?: boolean;
  outcome?: JobDoneParams;
  waiters: ((outcome: JobDoneParams) => void)[];
}

type ImagePhase = 'preparing' | 'waitLlm' | 'yielding' | 'waitMemory' | 'running';

interface ImageRun {
  rec: JobRecord;
  spec: ImageJobSpec;
  abort: AbortController;
  phase: ImagePhase;
  plan?: Plan;
  /** Bytes of the job's own use (the plan's peak without what the LLM keeps). */
  need: Bytes;
  /** Bytes promised to the job: set while it waits for memory and while it runs. */
  reserved: Bytes;
  retries: number;
  replans: number;
  minimumRung?: RecoveryRung;
  floor?: PlanFloor;
  llmStateAtRun?: LlmState;
  roomBeforeYield?: Bytes;
  /** When the current attempt started running. */
  runStartedAt?: Millis;
}

type LlmPhase = 'preparing' | 'yielding' | 'waitMemory' | 'loading' | 'running';

interface LlmRun {
  rec: JobRecord;
  spec: LlmJobSpec;
  abort: AbortController;
  phase: LlmPhase;
  /** Text already streamed to the client (a failed request is then not run again). */
  streamed?: boolean;
}

interface UserLlmRequest {
  target: LlmState;
  resolve: (result: { state: LlmState; tookMs: Millis }) => void;
  reject: (error: Error) => void;
}

type Settled<T> = { ok: true; value: T } | { ok: false; error: Error };

interface MemoryWait {
  ok: boolean;
  free: Bytes;
  waitedMs: Millis;
  snapshot: DeviceSnapshot;
}

const FINISHED_KEPT = 500;
/** How far back LLM request arrivals count towards the rate that prices a yield (see planning/policy.ts). */
const LLM_RATE_WINDOW_MS = 10 * 60_000;
const MAX_REPLANS = 2;

const NAN_MESSAGE =
  'The image came out black from fp16 NaN in the VAE, not from lack of memory, so a safer plan would not help: ' +
  'use an fp16-fix VAE (for SDXL, sdxl-vae-fp16-fix, given with --vae / parts.vae).';

// ---------------------------------------------------------------------------------------------------------------

export class Arbiter extends EventEmitter<ArbiterEvents> {
  private readonly clock: Clock;
  private readonly memoryWaitTimeoutMs: Millis;
  private readonly memoryPollMs: Millis;
  private readonly idleWarmMs: Millis;
  private readonly idleColdMs: Millis;
  private readonly recentUseMs: Millis;
  private readonly limits: JobLimits;
  private readonly log: DecisionLog;

  private readonly queue = new JobQueue<JobRecord>();
  private readonly jobs = new Map<string, JobRecord>();
  private readonly finished: string[] = [];
  private imageRun: ImageRun | null = null;
  private llmRun: LlmRun | null = null;
  /** A request being answered on the CPU copy: it holds no VRAM and leaves `llmRun` free for the GPU LLM. */
  private cpuRun: LlmRun | null = null;
  /** Moves on whenever the CPU copy is free again: requests that waited for it are planned again then. */
  private cpuLaneEpoch = 0;

  private llmState: LlmState;
  private llmWanted: LlmState;
  private llmLastUsedAt: Millis;
  /** When LLM requests arrived lately (within LLM_RATE_WINDOW_MS), for the rate a yield is priced with. */
  private readonly llmArrivals: Millis[] = [];
  private llmCosts: LlmCosts | null = null;
  /** A state change in flight. */
  private llmMove: { from: LlmState; target: LlmState } | null = null;
  /** A state the LLM is about to climb to: its bytes are promised while we wait for them to be free. */
  private llmReserve: LlmState | null = null;
  /** A restore or a user-requested change is being carried out. */
  private llmManaging = false;
  private restoreTriedEpoch = -1;
  private readonly userLlm: UserLlmRequest[] = [];

  private imageResident: { state: ImageWorkerState; heldBytes: Bytes } = { state: 'stopped', heldBytes: 0 };
  /** Moves on whenever image memory is given back: blocked LLM requests and restores try again then. */
  private imageEpoch = 0;
  private lastSnapshot: DeviceSnapshot | null = null;

  private readonly inbox: (() => void)[] = [];
  private draining = false;
  private disposed = false;
  private readonly lifetime = new AbortController();
  private idleTimer: { due: Millis; abort: AbortController } | null = null;
  private jobCounter = 0;
  /** What LLM requests take on the GPU and on the CPU copy, learnt from the requests served. */
  private readonly llmSpeed = new LlmSpeedModel();
  /** What the GPU LLM's context holds of its last prompt (cleared whenever the context may be gone). */
  private readonly gpuPrompt = new PromptReuse(() => this.llmCrashes());
  private readonly cpuLane: CpuLane | null;
  private readonly cpuLaneIdleMs: Millis;
  private cpuLaneTimer: AbortController | null = null;

  constructor(private readonly options: ArbiterOptions) {
    super();
    this.clock = options.clock;
    this.memoryWaitTimeoutMs = options.memoryWaitTimeoutMs ?? 5000;
    this.memoryPollMs = Math.max(1, options.memoryPollMs ?? 250);
    this.idleWarmMs = Math.max(0, (options.idleWarmSeconds ?? 0) * 1000);
    this.idleColdMs = Math.max(0, (options.idleColdSeconds ?? 0) * 1000);
    this.recentUseMs = options.recentUseMs ?? 120_000;
    this.limits = { ...DEFAULT_JOB_LIMITS, ...options.limits };
    this.log = new DecisionLog(options.historySize ?? 1000, () => this.clock.now());
    this.llmState = options.llm?.state() ?? 'stopped';
    this.llmWanted = options.llmWantedState ?? this.llmState;
    this.llmLastUsedAt = this.clock.now();
    this.cpuLane = options.llm && options.llmCpu ? new CpuLane(options.llmCpu, this.clock) : null;
    this.cpuLaneIdleMs = Math.max(0, (options.cpuLaneIdleSeconds ?? 120) * 1000);
    if (options.llm) {
      this.spawn(
        async () => await options.costs.llm(),
        (r) => {
          if (r.ok) this.llmCosts = r.value;
        },
      );
    }
  }

  // -------------------------------------------------------------------------------------------------------------
  // Commands

  /** Queues a job. Bad input is rejected at once (the returned job has status `failed` and says why). */
  submit(spec: JobSpec, priority?: JobPriority): JobInfo {
    const kind = spec?.kind;
    const prio: JobPriority = priority ?? (kind === 'llm' ? 'interactive' : 'normal');
    const id = this.options.newJobId?.() ?? `job-${++this.jobCounter}`;
    const info: JobInfo = { id, spec, priority: prio, status: 'queued', submittedAt: this.clock.now(), attempt: 0 };
    const rec: JobRecord = { id, priority: prio, info, admitted: false, waiters: [] };
    this.jobs.set(id, rec);
    const problem = this.disposed ? 'The sidecar is stopping: submit the job again once it is back.' : this.checkSpec(spec, priority);
    if (this.disposed) {
      this.finish(rec, 'failed', problem!, { decision: 'reject' });
      return { ...rec.info };
    }
    this.post(() => {
      if (this.disposed) return;
      if (problem) return this.finish(rec, 'failed', problem, { decision: 'reject' });
      if (spec.kind === 'llm') this.llmArrivals.push(this.clock.now());
      rec.queueSeq = this.queue.push(rec);
      this.changed();
      this.admit(rec);
    });
    return { ...rec.info };
  }

  /** Cancels a queued job (removed) or a running one (its worker is told to stop). False when it is not pending. */
  cancel(jobId: string): boolean {
    const rec = this.jobs.get(jobId);
    if (!rec || rec.outcome) return false;
    this.post(() => this.handleCancel(rec));
    return true;
  }

  /** The plan a job would get now; nothing runs and nothing changes. An image job is planned as if it were next. */
  async preview(spec: JobSpec): Promise<Plan> {
    const jobId = 'preview';
    const problem = this.checkSpec(spec);
    if (problem) return this.refusedPlan(jobId, problem);
    const [costs, llmCosts, snapshot] = await Promise.all([
      spec.kind === 'image' ? this.options.costs.image(spec) : undefined,
      this.options.costs.llm(),
      this.sample(),
    ]);
    if (spec.kind === 'image') {
      return planImageJob({
        ...this.imagePlanInput(jobId, spec, costs!, snapshot, llmCosts, true),
      });
    }
    return planLlmJob(this.llmPlanInput(jobId, spec, snapshot, llmCosts));
  }

  /** The user unloads or reloads the LLM. The wanted state is kept: if it cannot be reached now, it is later. */
  setLlmState(target: LlmState): Promise<{ state: LlmState; tookMs: Millis }> {
    return new Promise((resolve, reject) => {
      this.post(() => {
        if (this.disposed) return reject(new Error('The arbiter has stopped.'));
        if (!this.options.llm) return reject(new Error('No LLM is configured: set vramRelay.llm.modelPath first.'));
        this.llmWanted = target;
        this.userLlm.push({ target, resolve, reject });
      });
    });
  }

  /** Drops everything we hold that no running or queued job needs: the LLM goes cold, an idle sd-server stops. */
  freeGpuMemory(): Promise<{ freed: Bytes }> {
    return new Promise((resolve) => {
      this.post(() => this.handleFreeGpu(resolve));
    });
  }

  /** The image worker reports what its resident sd-server holds (0 / stopped when it has none). */
  reportImageResident(state: ImageWorkerState, heldBytes: Bytes): void {
    this.post(() => {
      const freed = this.imageResident.heldBytes > heldBytes;
      this.imageResident = { state, heldBytes: state === 'resident' ? heldBytes : 0 };
      if (freed) this.imageEpoch++;
      this.changed();
    });
  }

  /** Resolves when the job has ended (done, failed or cancelled). */
  waitFor(jobId: string): Promise<JobDoneParams> {
    const rec = this.jobs.get(jobId);
    if (!rec) return Promise.reject(new Error(`No job ${jobId}: it never existed or ended long ago.`));
    if (rec.outcome) return Promise.resolve(rec.outcome);
    return new Promise((resolve) => rec.waiters.push(resolve));
  }

  job(jobId: string): JobInfo | undefined {
    const rec = this.jobs.get(jobId);
    return rec ? { ...rec.info } : undefined;
  }

  decisions(query: DecisionQuery = {}): DecisionEvent[] {
    return this.log.list(query);
  }

  snapshot(): ArbiterSnapshot {
    const deviceId = this.deviceId();
    return {
      queue: this.queue.toArray().map((r) => ({ ...r.info })),
      running: [this.imageRun?.rec, this.llmRun?.rec, this.cpuRun?.rec].filter((r): r is JobRecord => !!r).map((r) => ({ ...r.info })),
      llm: {
        id: 'llm',
        state: this.llmState,
        deviceId,
        wantedState: this.llmWanted,
        costs: this.llmCosts,
        lastUsedAt: this.llmLastUsedAt,
        ...(this.cpuLane ? { cpuCopy: !this.cpuLane.usable ? ('set-aside' as const) : this.cpuLane.running ? ('running' as const) : ('available' as const) } : {}),
      },
      image: { id: 'image', state: this.imageResident.state, deviceId, heldBytes: this.imageResident.heldBytes },
      recentDecisions: this.log.recent(50),
      device: this.lastSnapshot,
      effectiveFree: this.lastSnapshot ? this.freeNow(this.lastSnapshot) : null,
      marginBytes: this.options.marginBytes,
      accounted: this.accounted(),
      breakdown: this.breakdown(),
    };
  }

  /** Stops everything: queued and running jobs end as cancelled, pending requests are refused. */
  dispose(): void {
    if (this.disposed) return;
    for (const rec of [...this.queue.toArray(), this.imageRun?.rec, this.llmRun?.rec, this.cpuRun?.rec]) {
      if (rec && !rec.outcome) this.finish(rec, 'cancelled', 'The sidecar stopped before the job ended.');
    }
    this.imageRun?.abort.abort();
    this.llmRun?.abort.abort();
    this.cpuRun?.abort.abort();
    this.imageRun = null;
    this.llmRun = null;
    this.cpuRun = null;
    for (const request of this.userLlm.splice(0)) request.reject(new Error('The arbiter has stopped.'));
    this.disposed = true;
    this.lifetime.abort();
    this.idleTimer?.abort.abort();
    this.idleTimer = null;
    this.cpuLaneTimer?.abort();
    this.cpuLaneTimer = null;
    this.inbox.length = 0;
    // The CPU copy's RAM is ours to give back; the GPU LLM is the service's to stop.
    this.cpuLane?.stop().catch(() => undefined);
  }

  // -------------------------------------------------------------------------------------------------------------
  // The run loop

  private post(command: () => void): void {
    if (this.disposed) return;
    this.inbox.push(command);
    if (this.draining) return;
    this.draining = true;
    const started = this.options.onLoopPass ? performance.now() : 0;
    try {
      while (this.inbox.length > 0 && !this.disposed) {
        const next = this.inbox.shift()!;
        try {
          next();
        } catch (error) {
          this.record({ kind: 'worker', reason: `internal error in the arbiter: ${messageOf(error)}` });
        }
      }
      if (!this.disposed) this.schedule();
    } finally {
      this.draining = false;
      this.options.onLoopPass?.(performance.now() - started);
    }
  }

  /** Starts async work; its result comes back through the inbox. `then` runs on the loop. */
  private spawn<T>(work: () => Promise<T>, then: (result: Settled<T>) => void): void {
    let promise: Promise<T>;
    try {
      promise = work();
    } catch (error) {
      promise = Promise.reject(error);
    }
    promise.then(
      (value) => this.post(() => then({ ok: true, value })),
      (error: unknown) => this.post(() => then({ ok: false, error: asError(error) })),
    );
  }

  /** Decides what starts next. Called after every pass of the loop; cheap and idempotent. */
  private schedule(): void {
    this.serveUserLlmRequests();

    const imagePlanning = this.imageRun !== null && this.imageRun.phase !== 'running';
    const llmPlanning = this.llmRun !== null && this.llmRun.phase !== 'running';
    const llmIdle = !this.llmRun && !this.llmMove && !this.llmManaging;

    if (this.options.llm && llmIdle) {
      // Requests that wait for the running image job are passed over until it (or the CPU copy) frees up: one
      // behind them may still be answered on the CPU copy meanwhile.
      const next = this.queue.find((r) => r.info.spec.kind === 'llm' && !this.waitsForImage(r));
      // An image job waiting for the LLM to finish before it yields holds nothing yet: queued LLM requests of its
      // priority or higher go first, rather than waiting for the whole image job behind a single request.
      const waiting = this.imageRun?.phase === 'waitLlm' ? this.imageRun.rec : null;
      const ahead = next !== undefined && (!imagePlanning || (waiting !== null && PRIORITY_RANK[next.priority] <= PRIORITY_RANK[waiting.priority]));
      if (next && ahead && next.admitted) this.startLlm(next);
    }
    if (this.imageRun?.phase === 'waitLlm' && !this.llmRun && !this.llmMove && !this.llmManaging) {
      this.prepareImage(this.imageRun);
    }
    if (this.options.image && !this.imageRun && !this.llmMove && !this.llmManaging && !llmPlanning && !(this.llmRun && this.llmRun.phase !== 'running')) {
      const next = this.queue.find((r) => r.info.spec.kind === 'image');
      if (next?.admitted) this.startImage(next);
    }
    this.maybeRestore();
    this.applyIdlePolicy();
  }

  /** An LLM request planned to wait for the image job, with nothing changed since (same image job, same CPU copy). */
  private waitsForImage(rec: JobRecord): boolean {
    return rec.blockedEpoch === this.imageEpoch && rec.blockedLaneEpoch === this.cpuLaneEpoch;
  }

  // -------------------------------------------------------------------------------------------------------------
  // Admission

  private checkSpec(spec: JobSpec, priority?: JobPriority): string | null {
    if (priority !== undefined && !(priority in PRIORITY_RANK)) {
      return `Unknown priority ${JSON.stringify(priority)}: use interactive, normal or batch.`;
    }
    const problem = validateJobSpec(spec, this.limits, spec?.kind === 'image' ? this.options.capabilities() : undefined);
    if (problem) return problem;
    if (spec.kind === 'image' && !this.options.image) {
      return 'No image engine is set up: set vramRelay.image.binaryPath to an sd.cpp binary (sd-cli or sd-server).';
    }
    if (spec.kind === 'llm' && !this.options.llm) return 'No LLM is set up: set vramRelay.llm.modelPath to a GGUF model.';
    return null;
  }

  /** Rejects, once the figures are known, a job that would not fit even with every yield and safer option. */
  private admit(rec: JobRecord): void {
    const spec = rec.info.spec;
    this.spawn(
      async () =>
        Promise.all([spec.kind === 'image' ? this.options.costs.image(spec) : undefined, this.options.costs.llm(), this.sample()]),
      (r) => {
        if (rec.outcome) return;
        if (!r.ok) {
          const what = spec.kind === 'image' ? 'the image model' : 'the LLM';
          const message = r.error instanceof DeviceReadingError ? r.error.message : `Could not read the figures of ${what}: ${r.error.message}`;
          return this.finish(rec, 'failed', message, { decision: 'reject' });
        }
        const [imageCosts, llmCosts, snapshot] = r.value;
        this.llmCosts = llmCosts;
        this.lastSnapshot = snapshot;
        const room = this.roomWhenFirst(snapshot);
        if (spec.kind === 'image') {
          const plan = planImageJob({
            ...this.imagePlanInput(rec.id, spec, imageCosts!, snapshot, llmCosts, true),
            llm: { state: this.llmAccountedState(), costs: llmCosts, busy: false },
          });
          if (!plan.fits) {
            return this.finish(rec, 'failed', planMessage(plan), { decision: 'reject', estimate: plan.peak, measuredFree: room });
          }
          rec.imageCosts = imageCosts;
        } else {
          if (!llmCosts) return this.finish(rec, 'failed', 'No LLM figures: the LLM model is missing or unreadable.', { decision: 'reject' });
          if (spec.contextSize > llmCosts.contextSize) {
            return this.finish(
              rec,
              'failed',
              `The request needs a context of ${spec.contextSize} tokens; the LLM is set up for ${llmCosts.contextSize}: raise vramRelay.llm.contextSize to at least ${spec.contextSize}, or shorten the request.`,
              { decision: 'reject' },
            );
          }
          const hot = llmFootprint(llmCosts, 'hot');
          const best = this.roomWithNothingOfOurs(snapshot);
          if (hot > best) {
            return this.finish(
              rec,
              'failed',
              `nothing fits: the LLM needs ${formatBytes(hot)} hot (weights ${formatBytes(llmCosts.weights)} + KV cache ${formatBytes(llmCosts.kvCache)} + compute ${formatBytes(llmCosts.compute)}), and ${formatBytes(best)} is free even with nothing of ours on the GPU. Try a smaller context or a smaller/more quantized model.`,
              { decision: 'reject', estimate: hot, measuredFree: best },
            );
          }
        }
        rec.admitted = true;
      },
    );
  }

  private refusedPlan(jobId: string, reason: string): Plan {
    const deviceId = this.deviceId();
    return { jobId, deviceId, fits: false, yields: [], stages: [], peak: 0, available: 0, extraTimeMs: 0, reason, suggestions: [] };
  }

  // -------------------------------------------------------------------------------------------------------------
  // Image jobs

  private startImage(rec: JobRecord): void {
    this.queue.remove(rec.id);
    const run: ImageRun = {
      rec,
      spec: rec.info.spec as ImageJobSpec,
      abort: new AbortController(),
      phase: 'preparing',
      need: 0,
      reserved: 0,
      retries: 0,
      replans: 0,
    };
    this.imageRun = run;
    this.setStatus(rec, 'planning');
    this.prepareImage(run);
  }

  /** Fresh figures and a fresh reading, then a plan. */
  private prepareImage(run: ImageRun): void {
    run.phase = 'preparing';
    const costs = run.rec.imageCosts;
    this.spawn(
      async () => Promise.all([costs ?? this.options.costs.image(run.spec), this.options.costs.llm(), this.sample()]),
      (r) => {
        if (this.imageRun !== run) return;
        if (!r.ok) return this.endImage(run, 'failed', readingFailure(r.error, 'Could not estimate the job'));
        const [imageCosts, llmCosts, snapshot] = r.value;
        run.rec.imageCosts = imageCosts;
        this.llmCosts = llmCosts;
        this.planImage(run, snapshot);
      },
    );
  }

  private planImage(run: ImageRun, snapshot: DeviceSnapshot): void {
    this.lastSnapshot = snapshot;
    // After a wait that timed out, plan with what the driver really shows; before, with our account (the lease
    // then waits for the driver to agree).
    const input = this.imagePlanInput(run.rec.id, run.spec, run.rec.imageCosts!, snapshot, this.llmCosts, false, run.replans > 0);
    const plan = planImageJob({ ...input, minimumRung: run.minimumRung, floor: run.floor });
    run.plan = plan;
    run.rec.info.plan = plan;
    this.record({
      kind: 'plan',
      jobId: run.rec.id,
      reason: plan.reason,
      estimate: plan.peak,
      measuredFree: plan.available,
      durationMs: plan.extraTimeMs,
    });
    if (!plan.fits) return this.endImage(run, 'failed', planMessage(plan));

    const llmYield = plan.yields.find((y) => y.resident === 'llm');
    const llmAfter = (llmYield?.to as LlmState | undefined) ?? this.llmState;
    run.need = Math.max(0, plan.peak - llmFootprint(this.llmCosts, llmAfter));
    if (!llmYield) return this.awaitLease(run);

    if (this.llmRun || this.llmMove || this.llmManaging) {
      run.phase = 'waitLlm';
      this.setStatus(run.rec, 'waiting');
      this.noteWait(run.rec, `waiting for the LLM to finish its request before it can ${describeLlmYield(this.llmState, llmAfter)}`);
      return;
    }
    run.phase = 'yielding';
    run.roomBeforeYield = this.roomForImage(snapshot);
    this.setStatus(run.rec, 'waiting');
    this.progress({ jobId: run.rec.id, stage: 'waiting', message: `${describeLlmYield(this.llmState, llmAfter)} to make room` });
    const from = this.llmState;
    this.moveLlm(llmAfter, (r) => {
      const what = describeLlmYield(from, llmAfter);
      if (r.ok) {
        this.record({
          kind: 'yield',
          jobId: run.rec.id,
          reason: `${what} for ${run.rec.id}: frees ${formatBytes(llmYield.frees)}, took ${formatDuration(r.value.tookMs)}`,
          estimate: llmYield.frees,
          durationMs: r.value.tookMs,
        });
      } else {
        this.record({ kind: 'yield', jobId: run.rec.id, reason: `${what} failed: ${r.error.message}; replanning with the LLM ${this.llmState}` });
      }
      if (this.imageRun !== run) return;
      if (!r.ok) return this.replanImage(run, `the LLM did not yield (${r.error.message})`);
      this.awaitLease(run);
    });
  }

  /** Promises the job its memory, then waits until the device really shows it free. */
  private awaitLease(run: ImageRun): void {
    run.phase = 'waitMemory';
    run.reserved = run.need;
    this.setStatus(run.rec, 'waiting');
    this.spawn(
      // A plan that runs in the safety margin (a last resort) waits for that much less.
      () => this.pollMemory(run.need, (s) => this.roomForImage(s) + (run.plan?.marginUsed ?? 0), run.abort.signal),
      (r) => {
        if (this.imageRun !== run) return;
        if (!r.ok) return this.endImage(run, 'failed', readingFailure(r.error, 'Could not read the device'));
        const wait = r.value;
        this.lastSnapshot = wait.snapshot;
        if (!wait.ok) {
          run.reserved = 0;
          const others = otherProgramsUse(wait.snapshot, this.accounted(), this.options.ourPids?.());
          this.record({
            kind: 'wait',
            jobId: run.rec.id,
            reason: `only ${formatBytes(wait.free)} of ${formatBytes(run.need)} free after ${formatDuration(wait.waitedMs)} (other programs hold ${formatBytes(others)}) -> replanning with what is free`,
            estimate: run.need,
            measuredFree: wait.free,
            durationMs: wait.waitedMs,
          });
          return this.replanImage(run, 'the memory did not come back in time', wait.snapshot);
        }
        const cameBack = run.roomBeforeYield !== undefined ? wait.free - run.roomBeforeYield : undefined;
        run.roomBeforeYield = undefined;
        this.record({
          kind: 'lease',
          jobId: run.rec.id,
          reason:
            `lease ${formatBytes(run.need)} to ${run.rec.id}: free ${formatBytes(wait.free)}` +
            (wait.waitedMs > 0 ? ` after waiting ${formatDuration(wait.waitedMs)} for it` : ''),
          estimate: run.need,
          measuredFree: wait.free,
          ...(cameBack !== undefined ? { measured: cameBack } : {}),
          durationMs: wait.waitedMs,
        });
        this.runImage(run);
      },
    );
  }

  private replanImage(run: ImageRun, why: string, snapshot?: DeviceSnapshot): void {
    run.replans++;
    if (run.replans > MAX_REPLANS) {
      return this.endImage(run, 'failed', `Gave up after ${MAX_REPLANS} replans: ${why}. Other programs may be taking GPU memory; try again when they are done.`);
    }
    if (snapshot) this.planImage(run, snapshot);
    else this.prepareImage(run);
  }

  private runImage(run: ImageRun): void {
    const rec = run.rec;
    run.phase = 'running';
    run.llmStateAtRun = this.llmState;
    run.runStartedAt = this.clock.now();
    rec.info.startedAt ??= this.clock.now();
    rec.info.attempt = run.retries + 1;
    this.setStatus(rec, 'running');
    const plan = run.plan!;
    this.spawn(
      () =>
        this.options.image!.run(
          run.spec,
          plan,
          (p) => this.post(() => this.onStageProgress(run, p)),
          run.abort.signal,
        ),
      (r) => this.onImageDone(run, r),
    );
  }

  private onStageProgress(run: ImageRun, p: StageProgress): void {
    if (this.imageRun !== run) return;
    const stage = p.stage === 'llmLoad' || p.stage === 'llmInfer' ? 'generating' : p.stage;
    this.progress({ jobId: run.rec.id, stage, step: p.step, totalSteps: p.totalSteps, message: p.message });
  }

  private onImageDone(run: ImageRun, r: Settled<ImageRunResult>): void {
    if (this.imageRun !== run) return;
    const result: ImageRunResult = r.ok
      ? r.value
      : { ok: false, failure: run.abort.signal.aborted ? 'cancelled' : 'crash', message: r.error.message, measured: [] };
    const lease = run.reserved;
    run.reserved = 0;
    this.imageEpoch++;
    const measuredGpu = result.measured.filter((m) => m.where === 'gpu').reduce((sum, m) => sum + m.bytes, 0);
    this.record({
      kind: 'release',
      jobId: run.rec.id,
      reason: `${run.rec.id} released its ${formatBytes(lease)} lease (${result.ok ? 'done' : result.failure})`,
      estimate: lease,
      ...(measuredGpu > 0 ? { measured: measuredGpu } : {}),
      ...(result.ok ? { durationMs: result.tookMs } : {}),
    });
    if (result.measured.length > 0) {
      this.emitSafe('measured', { job: { ...run.rec.info }, plan: run.plan, buffers: result.measured, ...(result.ok ? { tookMs: result.tookMs } : {}) });
    }

    if (result.ok) {
      const n = result.outputs.length;
      return this.endImage(run, 'done', `Wrote ${n} file${n === 1 ? '' : 's'}: ${result.outputs.join(', ')}`, result.outputs);
    }
    if (result.failure === 'cancelled' || run.abort.signal.aborted) return this.endImage(run, 'cancelled', 'Cancelled.');
    if (result.failure === 'nan') return this.endImage(run, 'failed', NAN_MESSAGE);
    if (!RETRYABLE_FAILURES.includes(result.failure)) return this.endImage(run, 'failed', result.message);

    const failedAt = result.stage ? ` during ${result.stage}` : '';
    const caps = this.options.capabilities();
    const rung = run.retries < RECOVERY_LADDER.length ? nextRecoveryRung(run.plan!, caps, run.llmStateAtRun ?? this.llmState) : null;
    if (!rung) {
      return this.endImage(
        run,
        'failed',
        `${result.failure}${failedAt}: ${result.message}. No safer plan is left after ${run.retries} retr${run.retries === 1 ? 'y' : 'ies'}: try a smaller size or a smaller model.`,
      );
    }
    run.retries++;
    run.minimumRung = rung;
    run.floor = floorOf(run.plan!, run.llmStateAtRun ?? this.llmState);
    run.replans = 0;
    this.record({
      kind: 'retry',
      jobId: run.rec.id,
      reason: `${result.failure}${failedAt} (${result.message}) -> rerun seed ${run.spec.seed} with ${RUNG_TEXT[rung]} (retry ${run.retries}/${RECOVERY_LADDER.length})`,
      estimate: run.plan!.peak,
    });
    this.setStatus(run.rec, 'retrying');
    this.progress({ jobId: run.rec.id, stage: 'retrying', message: `retrying with ${RUNG_TEXT[rung]}` });
    this.prepareImage(run);
  }

  private endImage(run: ImageRun, status: 'done' | 'failed' | 'cancelled', message: string, outputs?: string[]): void {
    if (this.imageRun === run) this.imageRun = null;
    run.reserved = 0;
    this.imageEpoch++;
    this.finish(run.rec, status, message, outputs ? { outputs } : {});
  }

  // -------------------------------------------------------------------------------------------------------------
  // LLM requests

  private startLlm(rec: JobRecord): void {
    this.queue.remove(rec.id);
    const run: LlmRun = { rec, spec: rec.info.spec as LlmJobSpec, abort: new AbortController(), phase: 'preparing' };
    this.llmRun = run;
    this.llmWanted = 'hot';
    this.setStatus(rec, 'planning');
    this.spawn(
      async () => Promise.all([this.options.costs.llm(), this.sample()]),
      (r) => {
        if (this.llmRun !== run) return;
        if (!r.ok) return this.endLlm(run, 'failed', readingFailure(r.error, 'Could not plan the request'));
        const [llmCosts, snapshot] = r.value;
        this.llmCosts = llmCosts;
        this.lastSnapshot = snapshot;
        this.syncLlmState();
        this.planLlm(run, snapshot);
      },
    );
  }

  private planLlm(run: LlmRun, snapshot: DeviceSnapshot): void {
    const plan = planLlmJob(this.llmPlanInput(run.rec.id, run.spec, snapshot, this.llmCosts));
    run.rec.info.plan = plan;
    if (this.llmState !== 'hot' || !plan.fits) {
      this.record({ kind: 'plan', jobId: run.rec.id, reason: plan.reason, estimate: plan.peak, measuredFree: plan.available, durationMs: plan.extraTimeMs });
    }
    if (plan.fits && plan.lane === 'cpu') return this.runLlmOnCpu(run);
    if (!plan.fits) {
      if (this.imageHoldsMemory()) {
        // Back into its place in the queue until the image job gives its memory back.
        this.llmRun = null;
        run.rec.blockedEpoch = this.imageEpoch;
        run.rec.blockedLaneEpoch = this.cpuLaneEpoch;
        this.queue.push(run.rec, run.rec.queueSeq);
        this.setStatus(run.rec, 'waiting');
        this.noteWait(run.rec, plan.reason);
        return;
      }
      return this.endLlm(run, 'failed', planMessage(plan));
    }
    if (this.llmState === 'hot') return this.runLlm(run);

    const need = Math.max(0, llmFootprint(this.llmCosts, 'hot') - llmFootprint(this.llmCosts, this.llmState));
    const imageYield = plan.yields.find((y) => y.resident === 'image');
    this.setStatus(run.rec, 'waiting');
    if (!imageYield) return this.loadLlm(run, need);
    run.phase = 'yielding';
    this.spawn(
      () => this.options.image!.stopResident(),
      (r) => {
        this.imageResident = { state: 'stopped', heldBytes: 0 };
        this.imageEpoch++;
        this.record({
          kind: 'yield',
          jobId: run.rec.id,
          reason: r.ok
            ? `stop the idle image worker for ${run.rec.id}: frees ${formatBytes(imageYield.frees)}`
            : `stopping the idle image worker failed: ${r.error.message}`,
          estimate: imageYield.frees,
        });
        if (this.llmRun === run) this.loadLlm(run, need);
      },
    );
  }

  private loadLlm(run: LlmRun, need: Bytes): void {
    run.phase = 'waitMemory';
    this.llmReserve = 'hot';
    this.spawn(
      () => this.pollMemory(need, (s) => this.roomForLlm(s), run.abort.signal),
      (r) => {
        if (this.llmRun !== run) {
          this.llmReserve = null;
          return;
        }
        if (!r.ok || !r.value.ok) {
          this.llmReserve = null;
          const detail = r.ok
            ? `only ${formatBytes(r.value.free)} of ${formatBytes(need)} became free within ${formatDuration(r.value.waitedMs)}`
            : r.error.message;
          return this.endLlm(run, 'failed', `Could not load the LLM: ${detail}. Other programs may be using the GPU; try again.`);
        }
        const wait = r.value;
        this.lastSnapshot = wait.snapshot;
        run.phase = 'loading';
        this.progress({ jobId: run.rec.id, stage: 'waiting', message: 'loading the LLM' });
        const from = this.llmState;
        this.moveLlm('hot', (m) => {
          this.llmReserve = null;
          if (m.ok) {
            this.record({
              kind: 'restore',
              jobId: run.rec.id,
              reason: `LLM ${from} -> hot for ${run.rec.id}: needs ${formatBytes(need)}, free ${formatBytes(wait.free)}, took ${formatDuration(m.value.tookMs)}`,
              estimate: need,
              measuredFree: wait.free,
              durationMs: m.value.tookMs,
            });
            if (m.value.measured.length > 0) this.emitSafe('measured', { job: { ...run.rec.info }, buffers: m.value.measured, tookMs: m.value.tookMs });
          }
          if (this.llmRun !== run) return;
          if (!m.ok) return this.endLlm(run, 'failed', `The LLM did not load: ${m.error.message}`);
          this.runLlm(run);
        });
      },
    );
  }

  private runLlm(run: LlmRun): void {
    run.phase = 'running';
    run.rec.info.startedAt = this.clock.now();
    run.rec.info.attempt = 1;
    this.setStatus(run.rec, 'running');
    const reusedTokens = this.gpuPrompt.reusableTokens(run.spec);
    const crashesBefore = this.llmCrashes();
    this.spawn(
      () => this.options.llm!.run(run.spec, this.streamTo(run), run.abort.signal),
      (r) => {
        this.llmLastUsedAt = this.clock.now();
        this.llmState = this.options.llm!.state();
        // A request the worker ran again after a crash took a restart too: not a time to learn from.
        if (r.ok && run.rec.info.startedAt !== undefined && this.llmCrashes() === crashesBefore) {
          this.llmSpeed.observe('gpu', run.spec, r.value, this.clock.now() - run.rec.info.startedAt, this.llmModelBytes(), reusedTokens);
        }
        this.gpuPrompt.ended(run.spec, r.ok ? 'answered' : run.abort.signal.aborted ? 'cancelled' : 'failed', this.llmState === 'hot');
        if (this.llmRun !== run) return;
        if (r.ok) return this.endLlm(run, 'done', 'Done.', r.value);
        if (run.abort.signal.aborted) return this.endLlm(run, 'cancelled', 'Cancelled.');
        this.endLlm(run, 'failed', `The LLM request failed: ${r.error.message}`);
      },
    );
  }

  private streamTo(run: LlmRun): (delta: string) => void {
    return (delta) => {
      run.streamed = true;
      this.post(() => (this.llmRun === run || this.cpuRun === run) && this.progress({ jobId: run.rec.id, stage: 'generating', textDelta: delta }));
    };
  }

  /** Answers on the CPU copy of the model (the plan chose it over waiting for the image job). */
  private runLlmOnCpu(run: LlmRun): void {
    const lane = this.cpuLane!;
    this.cpuLaneTimer?.abort();
    this.cpuLaneTimer = null;
    if (this.llmRun === run) this.llmRun = null;
    this.cpuRun = run;
    run.phase = 'running';
    run.rec.info.startedAt = this.clock.now();
    run.rec.info.attempt = 1;
    run.rec.info.ranOn = 'cpu-copy';
    this.setStatus(run.rec, 'running');
    if (!lane.running) this.progress({ jobId: run.rec.id, stage: 'waiting', message: 'starting the LLM on the CPU' });
    const { spec: laneSpec, reusedTokens } = lane.asRun(run.spec);
    const estimateMs = this.llmSpeed.estimateMs('cpu', laneSpec, this.llmModelBytes(), reusedTokens);
    this.spawn(
      () => lane.serve(laneSpec, this.streamTo(run), run.abort.signal),
      (r) => {
        this.cpuLaneEpoch++;
        this.scheduleCpuLaneStop();
        if (r.ok && !r.value.rerun) this.llmSpeed.observe('cpu', laneSpec, r.value.text, r.value.runMs, this.llmModelBytes(), reusedTokens);
        if (this.cpuRun !== run) return;
        if (r.ok) {
          const answer = r.value;
          this.record({
            kind: 'answer',
            jobId: run.rec.id,
            reason:
              `${run.rec.id} answered on the CPU in ${formatDuration(answer.runMs)} (est. ${formatDuration(estimateMs)}` +
              (reusedTokens > 0 ? `, ~${reusedTokens} prompt tokens held from the request before` : '') +
              ')' +
              (laneSpec !== run.spec ? `, ${describeCut(run.spec, laneSpec)}` : '') +
              (answer.startMs > 0 ? `, after ${formatDuration(answer.startMs)} starting the CPU copy` : ''),
            durationMs: answer.runMs + answer.startMs,
          });
          return this.endLlm(run, 'done', 'Done on the CPU while an image job held the GPU.', answer.text);
        }
        if (run.abort.signal.aborted) return this.endLlm(run, 'cancelled', 'Cancelled.');
        lane.failure = r.error.message;
        this.record({
          kind: 'worker',
          jobId: run.rec.id,
          reason: `the CPU copy of the LLM failed (${r.error.message}): LLM requests wait for the GPU while image jobs run, from now on`,
        });
        this.spawn(
          () => lane.stop(),
          () => undefined,
        );
        if (run.streamed) return this.endLlm(run, 'failed', `The LLM request failed on the CPU after part of its answer: ${r.error.message}. Ask again.`);
        // Nothing reached the user yet: plan it again, now without the CPU copy.
        this.cpuRun = null;
        delete run.rec.info.ranOn;
        this.queue.push(run.rec, run.rec.queueSeq);
        this.setStatus(run.rec, 'queued');
      },
    );
  }

  /** Stops the CPU copy once it has been idle for cpuLaneIdleMs, to give its RAM back. */
  private scheduleCpuLaneStop(): void {
    const lane = this.cpuLane;
    if (!lane || this.disposed) return;
    this.cpuLaneTimer?.abort();
    const abort = new AbortController();
    this.cpuLaneTimer = abort;
    this.spawn(
      () => this.clock.sleep(this.cpuLaneIdleMs, abort.signal),
      (r) => {
        if (!r.ok || this.cpuLaneTimer !== abort) return;
        this.cpuLaneTimer = null;
        if (lane.serving || !lane.running) return;
        const idleMs = this.clock.now() - lane.lastUsedAt;
        this.spawn(
          () => lane.stop(),
          (s) =>
            this.record({
              kind: 'worker',
              reason: s.ok
                ? `stopped the CPU copy of the LLM: idle for ${formatDuration(idleMs)} (gives its RAM back)`
                : `stopping the CPU copy of the LLM failed: ${s.error.message}`,
            }),
        );
      },
    );
  }

  /** The GPU LLM worker's deaths so far (0 without an LLM). */
  private llmCrashes(): number {
    return this.options.llm?.crashCount() ?? 0;
  }

  /** The whole model's bytes, for request-time estimates. */
  private llmModelBytes(): Bytes {
    return this.llmCosts?.modelBytes ?? this.llmCosts?.weights ?? 0;
  }

  private endLlm(run: LlmRun, status: 'done' | 'failed' | 'cancelled', message: string, text?: string): void {
    if (this.llmRun === run) this.llmRun = null;
    if (this.cpuRun === run) this.cpuRun = null;
    this.llmLastUsedAt = this.clock.now();
    this.finish(run.rec, status, message, text !== undefined ? { text } : {});
  }

  // -------------------------------------------------------------------------------------------------------------
  // The LLM resident: state changes, restore, idle policy, user requests

  private moveLlm(target: LlmState, then: (r: Settled<{ tookMs: Millis; measured: MeasuredBuffer[] }>) => void): void {
    const llm = this.options.llm!;
    if (target !== 'hot') this.gpuPrompt.clear();
    this.llmMove = { from: this.llmState, target };
    this.changed();
    this.spawn(
      () => llm.setState(target, this.lifetime.signal),
      (r) => {
        this.llmMove = null;
        this.llmState = r.ok ? target : llm.state();
        this.changed();
        then(r);
      },
    );
  }

  /**
   * Takes the worker's own state when it differs from our record while nothing is moving it: a worker that
   * crashed while idle too often is left stopped by its owner, and a request must then bring it back rather than
   * be sent to a process that is gone.
   */
  private syncLlmState(): void {
    if (!this.options.llm || this.llmMove || this.llmRun?.phase === 'running') return;
    const actual = this.options.llm.state();
    if (actual === this.llmState) return;
    this.record({ kind: 'worker', reason: `LLM worker is ${actual}, not ${this.llmState} as last known (it stopped on its own); planning from ${actual}` });
    this.llmState = actual;
    this.gpuPrompt.clear();
    this.changed();
  }

  /** After jobs end: bring the LLM back to the state it is wanted in, once the memory for it is really free. */
  private maybeRestore(): void {
    if (!this.options.llm || !this.llmCosts || this.llmManaging || this.llmMove || this.llmRun || this.imageRun) return;
    this.syncLlmState();
    if (llmLevel(this.llmState) <= llmLevel(this.llmWanted)) return;
    // An image job waiting its turn would only make the LLM yield again.
    if (this.queue.some((r) => r.info.spec.kind === 'image')) return;
    if (this.restoreTriedEpoch === this.imageEpoch) return;
    this.restoreTriedEpoch = this.imageEpoch;
    const target = this.llmWanted;
    const from = this.llmState;
    const need = llmFootprint(this.llmCosts, target) - llmFootprint(this.llmCosts, from);
    this.llmManaging = true;
    this.llmReserve = target;
    this.spawn(
      () => this.pollMemory(need, (s) => this.roomForLlm(s), this.lifetime.signal),
      (r) => {
        if (!r.ok || !r.value.ok) {
          this.llmManaging = false;
          this.llmReserve = null;
          const detail = r.ok ? `free ${formatBytes(r.value.free)} after ${formatDuration(r.value.waitedMs)}` : r.error.message;
          this.record({
            kind: 'wait',
            reason: `not restoring the LLM to ${target} yet: needs ${formatBytes(need)}, ${detail}; it comes back when an LLM request needs it`,
            estimate: need,
            ...(r.ok ? { measuredFree: r.value.free } : {}),
          });
          return;
        }
        const wait = r.value;
        this.lastSnapshot = wait.snapshot;
        this.moveLlm(target, (m) => {
          this.llmManaging = false;
          this.llmReserve = null;
          this.record({
            kind: 'restore',
            reason: m.ok
              ? `restore the LLM ${from} -> ${target}: needs ${formatBytes(need)}, free ${formatBytes(wait.free)}, took ${formatDuration(m.value.tookMs)}`
              : `restoring the LLM to ${target} failed: ${m.error.message}`,
            estimate: need,
            measuredFree: wait.free,
            ...(m.ok ? { durationMs: m.value.tookMs } : {}),
          });
        });
      },
    );
  }

  /** LLM hot -> warm after idleWarmSeconds, -> cold after idleColdSeconds (from its last request). */
  private applyIdlePolicy(): void {
    if (!this.options.llm || (!this.idleWarmMs && !this.idleColdMs)) return this.setIdleTimer(Infinity);
    if (this.llmRun || this.llmMove || this.llmManaging || this.queue.some((r) => r.info.spec.kind === 'llm')) {
      return this.setIdleTimer(Infinity);
    }
    const now = this.clock.now();
    const idleMs = now - this.llmLastUsedAt;
    let wanted = this.llmWanted;
    let due = Infinity;
    if (this.idleColdMs && llmLevel(wanted) < llmLevel('cold')) {
      if (idleMs >= this.idleColdMs) wanted = 'cold';
      else due = Math.min(due, this.llmLastUsedAt + this.idleColdMs);
    }
    if (this.idleWarmMs && llmLevel(wanted) < llmLevel('warm')) {
      if (idleMs >= this.idleWarmMs) wanted = 'warm';
      else due = Math.min(due, this.llmLastUsedAt + this.idleWarmMs);
    }
    this.llmWanted = wanted;
    this.setIdleTimer(due);
    if (llmLevel(this.llmState) >= llmLevel(wanted)) return;
    const from = this.llmState;
    const frees = llmFootprint(this.llmCosts, from) - llmFootprint(this.llmCosts, wanted);
    this.llmManaging = true;
    this.moveLlm(wanted, (r) => {
      this.llmManaging = false;
      this.record({
        kind: 'yield',
        reason: r.ok
          ? `LLM idle for ${formatDuration(idleMs)}: ${describeLlmYield(from, wanted)} (frees ${formatBytes(frees)}), took ${formatDuration(r.value.tookMs)}`
          : `idle policy: ${describeLlmYield(from, wanted)} failed: ${r.error.message}`,
        estimate: frees,
        ...(r.ok ? { durationMs: r.value.tookMs } : {}),
      });
    });
  }

  private setIdleTimer(due: Millis): void {
    if (this.idleTimer?.due === due) return;
    this.idleTimer?.abort.abort();
    this.idleTimer = null;
    if (!Number.isFinite(due)) return;
    const abort = new AbortController();
    this.idleTimer = { due, abort };
    this.spawn(
      () => this.clock.sleep(Math.max(0, due - this.clock.now()), abort.signal),
      () => {
        if (this.idleTimer?.abort === abort) this.idleTimer = null;
      },
    );
  }

  private serveUserLlmRequests(): void {
    if (this.userLlm.length === 0 || this.llmRun || this.llmMove || this.llmManaging) return;
    const request = this.userLlm.shift()!;
    const target = request.target;
    const from = this.llmState;
    if (from === target) return request.resolve({ state: from, tookMs: 0 });
    this.llmManaging = true;
    const done = (r: Settled<{ tookMs: Millis }>, decision: NewDecision) => {
      this.llmManaging = false;
      this.llmReserve = null;
      this.record(decision);
      if (r.ok) request.resolve({ state: this.llmState, tookMs: r.value.tookMs });
      else request.reject(r.error);
    };
    if (llmLevel(target) > llmLevel(from)) {
      const frees = llmFootprint(this.llmCosts, from) - llmFootprint(this.llmCosts, target);
      return this.moveLlm(target, (r) =>
        done(r, {
          kind: 'yield',
          reason: r.ok
            ? `asked by the user: ${describeLlmYield(from, target)} (frees ${formatBytes(frees)}), took ${formatDuration(r.value.tookMs)}`
            : `asked by the user: ${describeLlmYield(from, target)} failed: ${r.error.message}`,
          estimate: frees,
        }),
      );
    }
    // Climbing: only when the memory is there; otherwise the wanted state stays and restore brings it later.
    const climb = (need: Bytes) => {
      this.llmReserve = target;
      this.spawn(
        () => this.pollMemory(need, (s) => this.roomForLlm(s), this.lifetime.signal),
        (w) => {
          if (!w.ok || !w.value.ok) {
            const error = w.ok ? new Error(`Only ${formatBytes(w.value.free)} of ${formatBytes(need)} became free.`) : w.error;
            return done({ ok: false, error }, { kind: 'wait', reason: `asked by the user: LLM -> ${target} waits: ${error.message}`, estimate: need });
          }
          const before = this.llmState;
          this.moveLlm(target, (m) =>
            done(m, {
              kind: 'restore',
              reason: m.ok
                ? `asked by the user: LLM ${before} -> ${target}: needs ${formatBytes(need)}, free ${formatBytes(w.value.free)}, took ${formatDuration(m.value.tookMs)}`
                : `asked by the user: LLM -> ${target} failed: ${m.error.message}`,
              estimate: need,
              measuredFree: w.value.free,
            }),
          );
        },
      );
    };
    this.spawn(
      async () => Promise.all([this.options.costs.llm(), this.sample()]),
      (r) => {
        if (!r.ok) return done(r, { kind: 'wait', reason: `cannot reload the LLM: ${r.error.message}` });
        const [costs, snapshot] = r.value;
        this.llmCosts = costs;
        this.lastSnapshot = snapshot;
        const need = llmFootprint(costs, target) - llmFootprint(costs, this.llmState);
        const room = this.roomForLlm(snapshot);
        const idleImage = this.idleImageHeld();
        if (costs && need > room && idleImage > 0 && need <= room + idleImage) {
          // The user wants the LLM: an idle sd-server gives its memory back first, as it does for an LLM request.
          return this.spawn(
            () => this.options.image!.stopResident(),
            (s) => {
              if (s.ok) {
                this.imageResident = { state: 'stopped', heldBytes: 0 };
                this.imageEpoch++;
              }
              this.record({
                kind: 'yield',
                reason: s.ok
                  ? `asked by the user: stop the idle image worker to bring the LLM to ${target} (frees ${formatBytes(idleImage)})`
                  : `asked by the user: stopping the idle image worker failed: ${s.error.message}`,
                estimate: idleImage,
              });
              climb(need);
            },
          );
        }
        if (!costs || need > room) {
          const why = !costs
            ? 'the LLM model is missing or unreadable'
            : `it needs ${formatBytes(need)}, free ${formatBytes(room)}${this.imageHoldsMemory() ? ' while an image job runs' : ''}; it comes back by itself when room returns`;
          return done({ ok: false, error: new Error(`Cannot bring the LLM to ${target} now: ${why}.`) }, {
            kind: 'wait',
            reason: `asked by the user: LLM ${this.llmState} -> ${target} waits: ${why}`,
            estimate: need,
            measuredFree: room,
          });
        }
        climb(need);
      },
    );
  }

  private handleFreeGpu(resolve: (r: { freed: Bytes }) => void): void {
    let pending = 0;
    let freed = 0;
    const settle = () => {
      if (--pending === 0) resolve({ freed });
    };
    const llmNeeded = this.llmRun || this.queue.some((r) => r.info.spec.kind === 'llm');
    if (this.options.llm && !llmNeeded && !this.llmMove && !this.llmManaging && llmLevel(this.llmState) < llmLevel('cold')) {
      const from = this.llmState;
      const frees = llmFootprint(this.llmCosts, from);
      this.llmWanted = 'cold';
      this.llmManaging = true;
      pending++;
      this.moveLlm('cold', (r) => {
        this.llmManaging = false;
        this.record({
          kind: 'yield',
          reason: r.ok
            ? `free GPU memory: ${describeLlmYield(from, 'cold')} (frees ${formatBytes(frees)})`
            : `free GPU memory: unloading the LLM failed: ${r.error.message}`,
          estimate: frees,
          ...(r.ok ? { durationMs: r.value.tookMs } : {}),
        });
        if (r.ok) freed += frees;
        settle();
      });
    } else if (!llmNeeded && llmLevel(this.llmWanted) < llmLevel('cold')) {
      this.llmWanted = 'cold';
    }
    if (this.options.image && !this.imageRun && !this.queue.some((r) => r.info.spec.kind === 'image')) {
      const held = this.imageResident.heldBytes;
      pending++;
      this.spawn(
        () => this.options.image!.stopResident(),
        (r) => {
          if (r.ok) {
            this.imageResident = { state: 'stopped', heldBytes: 0 };
            this.imageEpoch++;
            freed += held;
            if (held > 0) this.record({ kind: 'yield', reason: `free GPU memory: stop the idle image worker (frees ${formatBytes(held)})`, estimate: held });
          }
          settle();
        },
      );
    }
    if (pending === 0) resolve({ freed: 0 });
  }

  // -------------------------------------------------------------------------------------------------------------
  // Cancel and finish

  private handleCancel(rec: JobRecord): void {
    if (rec.outcome) return;
    if (this.queue.remove(rec.id)) return this.finish(rec, 'cancelled', 'Cancelled while queued.', { decision: 'cancel' });
    const image = this.imageRun;
    if (image?.rec === rec) {
      image.abort.abort();
      rec.cancelNoted = true;
      this.record({ kind: 'cancel', jobId: rec.id, reason: `cancel ${rec.id} (${image.phase})` });
      // A running worker answers the abort itself; before that, nothing of the job holds memory.
      if (image.phase !== 'running') this.endImage(image, 'cancelled', 'Cancelled before it ran.');
      return;
    }
    const llm = [this.llmRun, this.cpuRun].find((r) => r?.rec === rec);
    if (llm) {
      llm.abort.abort();
      rec.cancelNoted = true;
      this.record({ kind: 'cancel', jobId: rec.id, reason: `cancel ${rec.id} (${llm.phase})` });
      if (llm.phase !== 'running') this.endLlm(llm, 'cancelled', 'Cancelled before it ran.');
    }
  }

  private finish(
    rec: JobRecord,
    status: 'done' | 'failed' | 'cancelled',
    message: string,
    extra: { outputs?: string[]; text?: string; decision?: 'reject' | 'cancel'; estimate?: Bytes; measuredFree?: Bytes } = {},
  ): void {
    if (rec.outcome) return;
    this.queue.remove(rec.id);
    rec.info.status = status;
    rec.info.message = message;
    rec.info.endedAt = this.clock.now();
    const kind = extra.decision ?? (status === 'failed' ? 'fail' : status === 'cancelled' ? 'cancel' : undefined);
    if (kind && !(kind === 'cancel' && rec.cancelNoted)) {
      this.record({
        kind,
        jobId: rec.id,
        reason: message,
        ...(extra.estimate !== undefined ? { estimate: extra.estimate } : {}),
        ...(extra.measuredFree !== undefined ? { measuredFree: extra.measuredFree } : {}),
      });
    }
    const outcome: JobDoneParams = { job: { ...rec.info } };
    if (extra.outputs) outcome.outputs = extra.outputs;
    if (extra.text !== undefined) outcome.text = extra.text;
    rec.outcome = outcome;
    this.finished.push(rec.id);
    while (this.finished.length > FINISHED_KEPT) this.jobs.delete(this.finished.shift()!);
    this.emitSafe('jobDone', outcome);
    for (const waiter of rec.waiters.splice(0)) waiter(outcome);
    this.changed();
  }

  // -------------------------------------------------------------------------------------------------------------
  // Memory figures

  /** One plausible reading, within a time limit, retried a few times (see deviceReading.ts). */
  private sample(): Promise<DeviceSnapshot> {
    return takeReading(() => this.readOnce(), {
      timeoutMs: this.options.readingTimeoutMs ?? DEFAULT_READING_TIMEOUT_MS,
      attempts: this.options.readingAttempts ?? DEFAULT_READING_ATTEMPTS,
      retryDelayMs: this.memoryPollMs,
      sleep: (ms) => this.clock.sleep(ms, this.lifetime.signal),
    });
  }

  private async readOnce(): Promise<DeviceSnapshot> {
    const source = this.options.device;
    if (typeof source === 'function') return await source();
    const all = await source.sample();
    const snapshot = (this.options.deviceId ? all.find((s) => s.id === this.options.deviceId) : undefined) ?? all[0];
    if (!snapshot) throw new Error('the device probe reported no device');
    return snapshot;
  }

  /** Polls until `room(snapshot) >= need` or the timeout passes. */
  private async pollMemory(need: Bytes, room: (s: DeviceSnapshot) => Bytes, signal: AbortSignal): Promise<MemoryWait> {
    const started = this.clock.now();
    for (;;) {
      const snapshot = await this.sample();
      const free = room(snapshot);
      const waitedMs = this.clock.now() - started;
      if (free >= need) return { ok: true, free, waitedMs, snapshot };
      if (waitedMs >= this.memoryWaitTimeoutMs) return { ok: false, free, waitedMs, snapshot };
      await this.clock.sleep(this.memoryPollMs, signal);
    }
  }

  private llmPart(withReserve: boolean): Bytes {
    const costs = this.llmCosts;
    let bytes = llmFootprint(costs, this.llmState);
    if (this.llmMove) bytes = Math.max(bytes, llmFootprint(costs, this.llmMove.target));
    if (withReserve && this.llmReserve) bytes = Math.max(bytes, llmFootprint(costs, this.llmReserve));
    return bytes;
  }

  private imagePart(withReservation: boolean): Bytes {
    return Math.max(this.imageResident.heldBytes, withReservation ? (this.imageRun?.reserved ?? 0) : 0);
  }

  /** What we hold or have promised, by our account. */
  private accounted(): Bytes {
    return this.llmPart(true) + this.imagePart(true);
  }

  private freeNow(snapshot: DeviceSnapshot): Bytes {
    return effectiveFree(snapshot, this.accounted(), this.options.marginBytes, this.options.ourPids?.());
  }

  /**
   * Free memory for new work given what we account for. `lagAware` takes the lower of the driver's figure and
   * ours (effective free: what a lease waits for); without it, only our account counts, which is what will be free
   * once the driver has caught up with our own frees (what plans are made against; the lease then waits for it).
   */
  private freeFor(snapshot: DeviceSnapshot, accounted: Bytes, lagAware: boolean): Bytes {
    const pids = this.options.ourPids?.();
    if (lagAware) return effectiveFree(snapshot, accounted, this.options.marginBytes, pids);
    const others = otherProgramsUse(snapshot, accounted, pids);
    return Math.max(0, snapshot.total - accounted - others - this.options.marginBytes);
  }

  /** Room for the image job's own use: free memory without its own promise, plus an idle sd-server's bytes. */
  private roomForImage(snapshot: DeviceSnapshot, lagAware = true): Bytes {
    const held = this.imageResident.state === 'resident' ? this.imageResident.heldBytes : 0;
    return this.freeFor(snapshot, this.llmPart(true) + held, lagAware) + held;
  }

  /** Room for the LLM to climb: free memory without the LLM's own promise. */
  private roomForLlm(snapshot: DeviceSnapshot, lagAware = true): Bytes {
    return this.freeFor(snapshot, this.llmPart(false) + this.imagePart(true), lagAware);
  }

  /** Room an image job will have when its turn comes (the running image job's memory back), by our account. */
  private roomWhenFirst(snapshot: DeviceSnapshot): Bytes {
    const others = otherProgramsUse(snapshot, this.accounted(), this.options.ourPids?.());
    const held = this.imageResident.state === 'resident' ? this.imageResident.heldBytes : 0;
    return Math.max(0, snapshot.total - others - this.llmPart(true) - held - this.options.marginBytes) + held;
  }

  /** Room with nothing of ours on the device: the best any job can hope for. */
  private roomWithNothingOfOurs(snapshot: DeviceSnapshot): Bytes {
    const others = otherProgramsUse(snapshot, this.accounted(), this.options.ourPids?.());
    return Math.max(0, snapshot.total - others - this.options.marginBytes);
  }

  /** Bytes an idle resident sd-server holds that no running or queued image job is about to use (else 0). */
  private idleImageHeld(): Bytes {
    if (!this.options.image || this.imageRun || this.queue.some((r) => r.info.spec.kind === 'image')) return 0;
    return this.imageResident.state === 'resident' ? this.imageResident.heldBytes : 0;
  }

  /** The LLM state whose footprint our account holds: the current one, or the higher one it is moving or about to climb to. */
  private llmAccountedState(): LlmState {
    let state = this.llmState;
    for (const other of [this.llmMove?.target, this.llmReserve]) if (other && llmLevel(other) < llmLevel(state)) state = other;
    return state;
  }

  private imageHoldsMemory(): boolean {
    return this.imageRun !== null && (this.imageRun.reserved > 0 || this.imageRun.phase === 'yielding');
  }

  /** LLM requests per ms over the last LLM_RATE_WINDOW_MS. */
  private llmRequestRate(): number {
    const since = this.clock.now() - LLM_RATE_WINDOW_MS;
    while (this.llmArrivals.length > 0 && this.llmArrivals[0] < since) this.llmArrivals.shift();
    return this.llmArrivals.length / LLM_RATE_WINDOW_MS;
  }

  private llmNeededSoon(): boolean {
    return (
      this.llmRun !== null ||
      this.cpuRun !== null ||
      this.queue.some((r) => r.info.spec.kind === 'llm') ||
      this.clock.now() - this.llmLastUsedAt < this.recentUseMs
    );
  }

  private imagePlanInput(
    jobId: string,
    spec: ImageJobSpec,
    costs: ImageJobCosts,
    snapshot: DeviceSnapshot,
    llmCosts: LlmCosts | null,
    asIfNext: boolean,
    lagAware = false,
  ) {
    const held = this.imageResident.state === 'resident' ? this.imageResident.heldBytes : 0;
    const room = asIfNext ? this.roomWhenFirst(snapshot) : this.roomForImage(snapshot, lagAware);
    return {
      jobId,
      spec,
      device: {
        id: snapshot.id,
        effectiveFree: Math.max(0, room - held),
        ...(snapshot.maxAllocation !== undefined ? { maxAllocation: snapshot.maxAllocation } : {}),
        otherUse: otherProgramsUse(snapshot, this.accounted(), this.options.ourPids?.()),
        marginReserve: Math.floor(this.options.marginBytes * MARGIN_LAST_RESORT_SHARE),
      },
      // As if next, the room counts what the LLM is climbing to (roomWhenFirst): that much is what it can yield.
      llm: {
        state: asIfNext ? this.llmAccountedState() : this.llmState,
        costs: llmCosts,
        busy: this.llmRun !== null,
        neededSoon: this.llmNeededSoon(),
        requestRatePerMs: this.llmRequestRate(),
      },
      image: { state: this.imageResident.state, heldBytes: held },
      costs,
      capabilities: this.options.capabilities(),
      ...(this.options.policy ? { policy: this.options.policy } : {}),
    };
  }

  private llmPlanInput(jobId: string, spec: LlmJobSpec, snapshot: DeviceSnapshot, llmCosts: LlmCosts | null) {
    return {
      jobId,
      spec,
      device: {
        id: snapshot.id,
        effectiveFree: this.roomForLlm(snapshot, false),
        otherUse: otherProgramsUse(snapshot, this.accounted(), this.options.ourPids?.()),
        marginReserve: Math.floor(this.options.marginBytes * MARGIN_LAST_RESORT_SHARE),
      },
      llm: { state: this.llmState, costs: llmCosts, busy: false },
      image: {
        state: this.imageResident.state,
        heldBytes: this.imageResident.heldBytes,
        busy: this.imageHoldsMemory(),
        remainingMs: this.imageRemainingMs(),
      },
      // One request at a time on the CPU copy: while it answers one, the next waits for whichever frees first.
      ...(this.cpuLane?.usable && !this.cpuRun && llmCosts ? { cpu: this.cpuLaneEstimate(spec, llmCosts) } : {}),
    };
  }

  private cpuLaneEstimate(spec: LlmJobSpec, costs: LlmCosts): CpuLaneEstimate {
    const bytes = this.llmModelBytes();
    const onLane = this.cpuLane!.asRun(spec);
    return {
      requestMs: this.llmSpeed.estimateMs('cpu', onLane.spec, bytes, onLane.reusedTokens),
      requestRatePerMs: this.llmRequestRate(),
      // Until measured: a process, the weights from the page cache and a context, as for the GPU LLM.
      startMs: this.cpuLane!.startEstimateMs(llmRestoreMs(costs, 'stopped', 'hot')),
      // The GPU LLM will answer after coming back (a new context) unless it kept its context through the image job.
      gpuRequestMs: this.llmSpeed.estimateMs('gpu', spec, bytes, this.llmState === 'hot' ? this.gpuPrompt.reusableTokens(spec) : 0),
    };
  }

  /** The running image job's expected time left, by its plan. */
  private imageRemainingMs(): Millis {
    const run = this.imageRun;
    const estimated = run?.plan?.estimatedMs;
    if (!run || estimated === undefined) return 0;
    const ranMs = run.phase === 'running' && run.runStartedAt !== undefined ? this.clock.now() - run.runStartedAt : 0;
    return Math.max(0, estimated - ranMs);
  }

  private breakdown(): BreakdownPart[] {
    const parts: BreakdownPart[] = [];
    const c = this.llmCosts;
    if (c && llmLevel(this.llmState) <= llmLevel('warm')) parts.push({ label: 'LLM weights', bytes: c.weights, kind: 'llm' });
    if (c && this.llmState === 'hot') {
      parts.push({ label: 'LLM KV cache', bytes: c.kvCache, kind: 'llm' });
      parts.push({ label: 'LLM compute', bytes: c.compute, kind: 'compute' });
    }
    if (this.imageResident.heldBytes > 0) parts.push({ label: 'image worker (idle)', bytes: this.imageResident.heldBytes, kind: 'image' });
    const run = this.imageRun;
    if (run && run.reserved > 0) parts.push({ label: `image job ${run.rec.id}`, bytes: run.reserved, kind: 'image' });
    return parts;
  }

  private deviceId(): string {
    return this.lastSnapshot?.id ?? this.options.deviceId ?? 'unknown';
  }

  // -------------------------------------------------------------------------------------------------------------
  // Events

  private record(decision: NewDecision): void {
    const event = this.log.add({ deviceId: this.lastSnapshot?.id, ...decision });
    this.emitSafe('decision', event);
  }

  private noteWait(rec: JobRecord, reason: string): void {
    if (rec.waitNoted === reason) return;
    rec.waitNoted = reason;
    this.record({ kind: 'wait', jobId: rec.id, reason });
    this.progress({ jobId: rec.id, stage: 'waiting', message: reason });
  }

  private setStatus(rec: JobRecord, status: JobStatus): void {
    if (rec.info.status === status) return;
    rec.info.status = status;
    this.changed();
  }

  private progress(p: JobProgressParams): void {
    const clean: JobProgressParams = { jobId: p.jobId, stage: p.stage };
    if (p.step !== undefined) clean.step = p.step;
    if (p.totalSteps !== undefined) clean.totalSteps = p.totalSteps;
    if (p.message !== undefined) clean.message = p.message;
    if (p.textDelta !== undefined) clean.textDelta = p.textDelta;
    this.emitSafe('progress', clean);
  }

  private changed(): void {
    this.emitSafe('changed');
  }

  /** A listener that throws must not break the loop. */
  private emitSafe<K extends keyof ArbiterEvents>(event: K, ...args: ArbiterEvents[K]): void {
    try {
      (this.emit as (e: K, ...a: ArbiterEvents[K]) => boolean)(event, ...args);
    } catch {
      // The listener's problem; the arbiter goes on.
    }
  }
}

const RUNG_TEXT: Record<RecoveryRung, string> = {
  vaeTiling: 'tiled VAE decode',
  vaeOnCpu: 'the VAE on the CPU',
  textEncoderOnCpu: 'the text encoder on the CPU',
  offloadWeights: 'weights offloaded to RAM',
  stopLlm: 'the LLM stopped',
};

/** A plan that does not fit, as one message: the reason, then what would. */
/** A device reading's failure in its own words; any other failure prefixed with what could not be done. */
function readingFailure(error: Error, what: string): string {
  return error instanceof DeviceReadingError ? error.message : `${what}: ${error.message}`;
}

function planMessage(plan: Plan): string {
  return plan.suggestions.length > 0 ? `${plan.reason}. Try ${plan.suggestions.join('; or ')}.` : plan.reason;
}

function asError(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error));
}

function messageOf(error: unknown): string {
  return asError(error).message;
}
