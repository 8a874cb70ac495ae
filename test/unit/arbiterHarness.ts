/**
 * Test doubles for the arbiter tests: a virtual clock, an LLM and an image runner that allocate from the simulated
 * device (so a wrong plan ends in a real simulated out-of-memory), and a builder that wires them to an Arbiter.
 */

import { Arbiter, type ArbiterOptions } from '../../sidecar/core/arbiter';
import { scaleImageCosts } from '../../sidecar/core/planner';
import { LLM_7B_8K, SDXL_1024 as SDXL_1024_PUBLISHED } from '../fixtures/costs';
import type { Clock, ImageFailureKind, ImageRunner, ImageRunResult, LlmControl, StageProgress } from '../../sidecar/core/ports';
import {
  FULL_SD_CAPABILITIES,
  GiB,
  MiB,
  type DecisionEvent,
  type ImageJobCosts,
  type ImageJobSpec,
  type LlmCosts,
  type LlmJobSpec,
  type LlmState,
  type Plan,
  type SdCapabilities,
  type StageName,
} from '../../sidecar/core/types';
import { SimulatedDevice, SimulatedOutOfMemoryError, type SimulatedDeviceOptions } from '../../sidecar/devices/simulatedDevice';

/**
 * Time that moves only when everything else is waiting: a sleep resolves once no other work is pending
 * (checked with setImmediate, which runs after every queued promise callback), earliest first.
 */
export class VirtualClock implements Clock {
  private t: number;
  private seq = 0;
  private timers: { due: number; seq: number; fire: () => void }[] = [];
  private pumpQueued = false;

  constructor(start = 1_000_000) {
    this.t = start;
  }

  now(): number {
    return this.t;
  }

  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason ?? new Error('aborted'));
      const timer = {
        due: this.t + Math.max(0, ms),
        seq: ++this.seq,
        fire: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        },
      };
      const onAbort = () => {
        this.timers = this.timers.filter((x) => x !== timer);
        reject(signal?.reason ?? new Error('aborted'));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.timers.push(timer);
      this.queuePump();
    });
  }

  /** Moves time by hand (for schedules on the simulated device). */
  advance(ms: number): void {
    this.t += ms;
  }

  private queuePump(): void {
    if (this.pumpQueued) return;
    this.pumpQueued = true;
    setImmediate(() => {
      this.pumpQueued = false;
      if (this.timers.length === 0) return;
      this.timers.sort((a, b) => a.due - b.due || a.seq - b.seq);
      const next = this.timers.shift()!;
      this.t = Math.max(this.t, next.due);
      next.fire();
      if (this.timers.length > 0) this.queuePump();
    });
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Figures (sampling shortened to 4 s so that the scenarios run quickly on the virtual clock)

export const SDXL_1024: ImageJobCosts = { ...SDXL_1024_PUBLISHED, time: { ...SDXL_1024_PUBLISHED.time, samplingMs: 4000 } };
export const LLM_7B: LlmCosts = LLM_7B_8K;



export const LLM_PID = 101;
export const SD_PID = 202;

export function imageSpec(overrides: Partial<ImageJobSpec> = {}): ImageJobSpec {
  return {
    kind: 'image',
    modelPath: '/models/sdxl.safetensors',
    prompt: 'a lighthouse at dusk',
    width: 1024,
    height: 1024,
    batch: 1,
    steps: 4,
    seed: 42,
    outputPath: '/tmp/out.png',
    ...overrides,
  };
}

export function llmSpec(overrides: Partial<LlmJobSpec> = {}): LlmJobSpec {
  return { kind: 'llm', task: 'completion', contextSize: 4096, prompt: 'def add(a, b):', ...overrides };
}

// ---------------------------------------------------------------------------------------------------------------
// Fake workers

/** An LLM worker whose weights and context are allocations on the simulated device. */
export class FakeLlm implements LlmControl {
  private current: LlmState = 'stopped';
  private weightsId: string | null = null;
  private contextIds: string[] = [];
  readonly moves: LlmState[] = [];
  readonly served: string[] = [];
  /** Milliseconds a request takes. */
  runMs = 200;
  /** Called after each state change, to change the world at that moment. */
  afterMove?: (state: LlmState) => void;

  constructor(
    private readonly device: SimulatedDevice,
    private readonly costs: LlmCosts,
    private readonly clock: Clock,
    initial: LlmState = 'stopped',
  ) {
    this.apply(initial);
  }

  state(): LlmState {
    return this.current;
  }

  /** Its process never dies on its own. */
  crashCount(): number {
    return 0;
  }

  async setState(target: LlmState, signal?: AbortSignal): Promise<{ tookMs: number; measured: [] }> {
    const started = this.clock.now();
    const order: LlmState[] = ['hot', 'warm', 'cold', 'stopped'];
    const climbing = order.indexOf(target) < order.indexOf(this.current);
    let ms = 20;
    if (climbing) {
      if (this.current === 'stopped') ms += this.costs.startProcessMs;
      if (order.indexOf(this.current) >= 2 && order.indexOf(target) <= 1) ms += this.costs.reloadWeightsMs;
      if (target === 'hot') ms += this.costs.recreateContextMs;
    }
    await this.clock.sleep(ms, signal);
    this.moves.push(target);
    this.apply(target);
    this.afterMove?.(target);
    return { tookMs: this.clock.now() - started, measured: [] };
  }

  async run(job: LlmJobSpec, onText: (delta: string) => void, signal: AbortSignal): Promise<string> {
    if (this.current !== 'hot') throw new Error(`asked to run while ${this.current}`);
    await this.clock.sleep(this.runMs, signal);
    const text = `answer to ${job.prompt ?? job.task}`;
    onText(text);
    this.served.push(job.prompt ?? job.task);
    return text;
  }

  private apply(target: LlmState): void {
    const owner = String(LLM_PID);
    const wantWeights = target === 'hot' || target === 'warm';
    const wantContext = target === 'hot';
    if (!wantContext) for (const id of this.contextIds.splice(0)) this.device.release(id);
    if (!wantWeights && this.weightsId) {
      this.device.release(this.weightsId);
      this.weightsId = null;
    }
    // Allocations throw SimulatedOutOfMemoryError when the arbiter let the LLM climb without room.
    if (wantWeights && !this.weightsId) this.weightsId = this.device.allocate(owner, this.costs.weights, 'llm weights');
    if (wantContext && this.contextIds.length === 0) {
      this.contextIds.push(this.device.allocate(owner, this.costs.kvCache, 'llm kv'));
      this.contextIds.push(this.device.allocate(owner, this.costs.compute, 'llm compute'));
    }
    this.current = target;
  }
}

/** The CPU copy of the LLM: no device memory, a start time, a request time, and failures on demand. */
export class FakeCpuLlm implements LlmControl {
  private current: LlmState = 'stopped';
  readonly moves: LlmState[] = [];
  readonly served: string[] = [];
  /** The requests it answered, as it was sent them. */
  readonly specs: LlmJobSpec[] = [];
  startMs = 1500;
  runMs = 3000;
  /** Makes the next start (or request, after `afterText` text) fail with this message. */
  failStart?: string;
  failRun?: { message: string; afterText: boolean };
  /** Deaths of the worker process (LlmControl.crashCount); a test raises it for a crash it came back from. */
  crashes = 0;

  constructor(private readonly clock: Clock) {}

  crashCount(): number {
    return this.crashes;
  }

  state(): LlmState {
    return this.current;
  }

  async setState(target: LlmState, signal?: AbortSignal): Promise<{ tookMs: number; measured: [] }> {
    const started = this.clock.now();
    await this.clock.sleep(target === 'hot' ? this.startMs : 10, signal);
    if (target === 'hot' && this.failStart) throw new Error(this.failStart);
    this.current = target;
    this.moves.push(target);
    return { tookMs: this.clock.now() - started, measured: [] };
  }

  async run(job: LlmJobSpec, onText: (delta: string) => void, signal: AbortSignal): Promise<string> {
    if (this.current !== 'hot') throw new Error(`asked to run while ${this.current}`);
    const failure = this.failRun;
    if (failure?.afterText) onText('partial ');
    await this.clock.sleep(this.runMs, signal);
    if (failure) throw new Error(failure.message);
    const text = `cpu answer to ${job.prompt ?? job.task}`;
    onText(text);
    this.served.push(job.prompt ?? job.task);
    this.specs.push(job);
    return text;
  }
}

export interface ImageRunRecord {
  jobId: string;
  seed: number;
  plan: Plan;
  result?: ImageRunResult;
}

/**
 * An sd.cpp stand-in inside the process: allocates weights and per-stage buffers on the simulated device under the
 * plan's placement, with the true sizes of `truth` (which may differ from what the planner was told).
 */
export class FakeImageRunner implements ImageRunner {
  readonly runs: ImageRunRecord[] = [];
  /** Failures to report on the next runs, before behaving normally. */
  readonly scripted: ImageFailureKind[] = [];
  /** Called at the start of each stage, to change the world mid-job. */
  onStage?: (stage: StageProgress['stage']) => void;
  stopResidentCalls = 0;

  constructor(
    private readonly device: SimulatedDevice,
    private readonly clock: Clock,
    public truth: ImageJobCosts,
  ) {}

  async run(job: ImageJobSpec, plan: Plan, onProgress: (p: StageProgress) => void, signal: AbortSignal): Promise<ImageRunResult> {
    const record: ImageRunRecord = { jobId: plan.jobId, seed: job.seed, plan };
    this.runs.push(record);
    const owner = String(SD_PID);
    const started = this.clock.now();
    const at: { stage: StageName } = { stage: 'textEncode' };
    try {
      const scripted = this.scripted.shift();
      if (scripted) {
        await this.clock.sleep(100, signal);
        record.result = { ok: false, failure: scripted, message: `scripted ${scripted}`, measured: [], stage: 'vaeDecode' };
        return record.result;
      }
      const p = plan.placement!;
      const w = this.truth.weights;
      const c = this.truth.compute;
      const offload = p.diffusion === 'offload';
      const alloc = (bytes: number, label: string) => this.device.allocate(owner, bytes, label);
      const inStage = async (name: StageName, buffers: [number, string][], ms: number) => {
        at.stage = name;
        this.onStage?.(name);
        onProgress({ stage: name });
        const ids = buffers.filter(([b]) => b > 0).map(([b, l]) => alloc(b, l));
        await this.clock.sleep(ms, signal);
        for (const id of ids) this.device.release(id);
      };
      if (!offload) {
        if (p.textEncoder === 'gpu') alloc(w.textEncoder, 'te weights');
        alloc(w.diffusion, 'diffusion weights');
        if (p.vae === 'gpu') alloc(w.vae, 'vae weights');
      }
      const runs = Math.ceil(job.batch / (plan.batchPerRun ?? job.batch));
      for (let i = 0; i < runs; i++) {
        await inStage(
          'textEncode',
          p.textEncoder === 'gpu' ? [[offload ? w.textEncoder : 0, 'te weights'], [c.textEncoder, 'te compute']] : [],
          this.truth.time.textEncodeMs,
        );
        const perRun = (plan.batchPerRun ?? job.batch) / job.batch;
        await inStage(
          'diffusion',
          [
            [offload ? w.diffusion : 0, 'diffusion weights'],
            [(p.flashAttention ? c.diffusionFlash : c.diffusion) * perRun, 'diffusion compute'],
          ],
          this.truth.time.samplingMs,
        );
        await inStage(
          'vaeDecode',
          p.vae === 'gpu' ? [[offload ? w.vae : 0, 'vae weights'], [p.vaeTiling ? c.vaeDecodeTiled : c.vaeDecode, 'vae compute']] : [],
          this.truth.time.vaeDecodeMs,
        );
      }
      record.result = { ok: true, outputs: [job.outputPath], measured: [{ key: 'vae.compute', bytes: p.vaeTiling ? c.vaeDecodeTiled : c.vaeDecode, where: p.vae }], tookMs: this.clock.now() - started };
      return record.result;
    } catch (error) {
      if (error instanceof SimulatedOutOfMemoryError) {
        record.result = { ok: false, failure: 'oom', message: error.message, measured: [], stage: at.stage };
        return record.result;
      }
      if (signal.aborted) {
        record.result = { ok: false, failure: 'cancelled', message: 'cancelled', measured: [] };
        return record.result;
      }
      throw error;
    } finally {
      this.device.releaseOwner(owner);
    }
  }

  async stopResident(): Promise<void> {
    this.stopResidentCalls++;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Wiring

export interface Rig {
  clock: VirtualClock;
  device: SimulatedDevice;
  llm: FakeLlm;
  /** The CPU copy of the LLM, when the rig has one (`cpuLane`). */
  cpu: FakeCpuLlm | null;
  image: FakeImageRunner;
  arbiter: Arbiter;
  decisions: DecisionEvent[];
  kinds(jobId?: string): string[];
  dispose(): void;
}

export interface RigOptions {
  device?: Partial<SimulatedDeviceOptions>;
  llmState?: LlmState;
  llmCosts?: LlmCosts;
  /** Sizes the planner is told (default SDXL_1024, scaled to the job's size). */
  estimate?: ImageJobCosts;
  /** Sizes the fake runner really allocates (default: the estimate). */
  truth?: ImageJobCosts;
  capabilities?: SdCapabilities;
  arbiter?: Partial<ArbiterOptions>;
  noLlm?: boolean;
  /** Give the arbiter a CPU copy of the LLM. */
  cpuLane?: boolean;
}

export function makeRig(options: RigOptions = {}): Rig {
  const clock = new VirtualClock();
  const device = new SimulatedDevice({ capacity: 24 * GiB, granularity: 2 * MiB, ...options.device }, clock);
  const llmCosts = options.llmCosts ?? LLM_7B;
  const llm = new FakeLlm(device, llmCosts, clock, options.llmState ?? 'hot');
  // Let the lagging driver see the LLM's initial allocations before anything starts.
  clock.advance((options.device?.driverLagMs ?? 0) + 1000);
  const estimate = options.estimate ?? SDXL_1024;
  const image = new FakeImageRunner(device, clock, options.truth ?? estimate);
  const cpu = options.cpuLane ? new FakeCpuLlm(clock) : null;
  const decisions: DecisionEvent[] = [];
  const arbiter = new Arbiter({
    device: () => device.snapshot(),
    marginBytes: 256 * MiB,
    llm: options.noLlm ? null : llm,
    llmCpu: cpu,
    image,
    costs: {
      image: async (spec) => {
        const scaled = scaleImageCosts(estimate, spec.width, spec.height);
        const f = spec.batch / estimate.batch;
        return { ...scaled, batch: spec.batch, compute: { ...scaled.compute, diffusion: scaled.compute.diffusion * f, diffusionFlash: scaled.compute.diffusionFlash * f } };
      },
      llm: async () => (options.noLlm ? null : llmCosts),
    },
    capabilities: () => options.capabilities ?? FULL_SD_CAPABILITIES,
    clock,
    memoryWaitTimeoutMs: 5000,
    memoryPollMs: 250,
    ourPids: () => [LLM_PID, SD_PID],
    ...options.arbiter,
  });
  arbiter.on('decision', (d) => decisions.push(d));
  return {
    clock,
    device,
    llm,
    cpu,
    image,
    arbiter,
    decisions,
    kinds: (jobId) => decisions.filter((d) => jobId === undefined || d.jobId === jobId).map((d) => d.kind),
    dispose: () => arbiter.dispose(),
  };
}

/** Waits for a promise, failing the test instead of hanging. */
export async function within<T>(promise: Promise<T>, ms = 5000, what = 'the arbiter'): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not answer within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Lets queued promise callbacks and virtual timers run until `predicate` holds. */
export async function until(predicate: () => boolean, what: string, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setImmediate(resolve));
  }
}
