/**
 * One simulated machine for one policy run: a simulated device of the budget's size with the trace's other
 * programs on it, a discrete-event clock, and the GPU's compute shared between the LLM and the image job when both
 * run at once. Every policy gets a fresh world built from the same trace, so they all face the same machine.
 */

import { DiscreteEventClock } from './virtualClock';
import { imageTruth, llmTruth, type ImageJobTruth, type LlmTruth, type SdBuild } from './truth';
import { LLM_META, type ImageModel } from './catalog';
import type { ImageArrival, LlmArrival, Trace } from './trace';
import { MiB, type Bytes, type LlmJobSpec, type Millis } from '../../sidecar/core/types';
import { SimulatedDevice } from '../../sidecar/devices/simulatedDevice';

/** Owners of allocations on the device, as process ids (the arbiter tells ours from other programs' by them). */
export const LLM_PID = 101;
export const SD_PID = 202;

/** The driver's free figure is this old (our own frees show up late; the arbiter waits for them). */
export const DRIVER_LAG_MS = 200;
/** Each of two jobs sharing the GPU's compute runs at this share of its speed alone (assumed). */
export const SHARED_GPU_SPEED = 0.6;

export class World {
  readonly clock = new DiscreteEventClock(0);
  readonly device: SimulatedDevice;
  readonly gpu: GpuShare;
  readonly llm: LlmTruth;
  private readonly truths = new Map<string, ImageJobTruth>();
  private readonly requests = new Map<string, LlmArrival>();
  private readonly images = new Map<string, ImageArrival>();
  /** Highest use of the device seen (ours and other programs'). */
  peakUsed: Bytes = 0;

  constructor(
    readonly trace: Trace,
    readonly sdBuild: SdBuild = 'current',
  ) {
    const [first, ...rest] = trace.otherUse;
    this.device = new SimulatedDevice(
      {
        capacity: trace.budget,
        granularity: 2 * MiB,
        driverLagMs: DRIVER_LAG_MS,
        otherUse: first?.bytes ?? 0,
        otherUseSchedule: rest,
        name: 'Simulated GPU (workload benchmark)',
      },
      this.clock,
    );
    this.gpu = new GpuShare(this.clock, SHARED_GPU_SPEED);
    this.llm = llmTruth(LLM_META, trace.llmTruthSeed, undefined, trace.cpuSpeed);
    for (const job of trace.jobs) {
      if (job.kind === 'llm') this.requests.set(job.id, job);
      else this.images.set(job.id, job);
    }
    this.notePeak();
    void this.watchOtherPrograms();
  }

  /** Allocates on the device (throws SimulatedOutOfMemoryError when it does not fit) and keeps the peak. */
  allocate(owner: number, bytes: Bytes, label: string): string {
    const id = this.device.allocate(String(owner), bytes, label);
    this.notePeak();
    return id;
  }

  release(id: string): void {
    this.device.release(id);
  }

  releaseOwner(owner: number): Bytes {
    return this.device.releaseOwner(String(owner));
  }

  /** What the driver reports as free now (lagging). */
  reportedFree(): Bytes {
    return this.device.snapshot().free;
  }

  /** The trace entry a request names on the first line of its prompt, or of its suffix for fill-in-the-middle. */
  request(spec: Pick<LlmJobSpec, 'prompt' | 'suffix'>): LlmArrival {
    const id = (spec.suffix ?? spec.prompt ?? '').split('\n', 1)[0];
    const request = this.requests.get(id);
    if (!request) throw new Error(`No LLM request ${id} in the trace.`);
    return request;
  }

  image(id: string): ImageArrival {
    const image = this.images.get(id);
    if (!image) throw new Error(`No image job ${id} in the trace.`);
    return image;
  }

  model(job: ImageArrival): ImageModel {
    return this.trace.models[job.model];
  }

  imageTruth(job: ImageArrival): ImageJobTruth {
    let truth = this.truths.get(job.id);
    if (!truth) {
      truth = imageTruth(this.model(job), job, this.sdBuild, this.trace.imageBiasSeed);
      this.truths.set(job.id, truth);
    }
    return truth;
  }

  /** Other programs' use at `at` (ms since the start), from the trace. */
  otherUseAt(at: Millis): Bytes {
    let bytes = this.trace.otherUse[0]?.bytes ?? 0;
    for (const step of this.trace.otherUse) {
      if (step.atMs > at) break;
      bytes = step.bytes;
    }
    return bytes;
  }

  /** The most other programs hold at any time in [from, to]. */
  otherUseMax(from: Millis, to: Millis): Bytes {
    let max = this.otherUseAt(from);
    for (const step of this.trace.otherUse) if (step.atMs > from && step.atMs <= to) max = Math.max(max, step.bytes);
    return max;
  }

  private notePeak(): void {
    const used = this.trace.budget - this.device.trueFree();
    if (used > this.peakUsed) this.peakUsed = used;
  }

  /** Other programs' growth raises the peak too. */
  private async watchOtherPrograms(): Promise<void> {
    for (const step of this.trace.otherUse) {
      if (step.atMs > this.clock.now()) await this.clock.sleep(step.atMs - this.clock.now());
      this.notePeak();
    }
  }
}

/**
 * The GPU's compute as processor sharing: one task alone runs at full speed; two at once each run at `sharedSpeed`
 * (an LLM request's token generation is bound by memory bandwidth, sampling by arithmetic, so together they get
 * more done than either alone). `run(workMs)` resolves once `workMs` of solo work is done.
 */
export class GpuShare {
  private readonly tasks: { remaining: number; resolve: () => void; reject: (e: unknown) => void }[] = [];
  private last: Millis;
  private timer: AbortController | null = null;

  constructor(
    private readonly clock: DiscreteEventClock,
    private readonly sharedSpeed: number,
  ) {
    this.last = clock.now();
  }

  get active(): number {
    return this.tasks.length;
  }

  run(workMs: Millis, signal?: AbortSignal): Promise<void> {
    if (!(workMs > 0)) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason ?? new Error('aborted'));
      this.progress();
      const task = { remaining: workMs, resolve, reject };
      this.tasks.push(task);
      signal?.addEventListener(
        'abort',
        () => {
          const index = this.tasks.indexOf(task);
          if (index < 0) return;
          this.progress();
          this.tasks.splice(index, 1);
          reject(signal.reason ?? new Error('aborted'));
          this.reschedule();
        },
        { once: true },
      );
      this.reschedule();
    });
  }

  private speed(): number {
    return this.tasks.length > 1 ? this.sharedSpeed : 1;
  }

  private progress(): void {
    const now = this.clock.now();
    const done = (now - this.last) * this.speed();
    for (const task of this.tasks) task.remaining -= done;
    this.last = now;
  }

  private reschedule(): void {
    this.timer?.abort();
    this.timer = null;
    for (let i = this.tasks.length - 1; i >= 0; i--) {
      if (this.tasks[i].remaining <= 1e-6) this.tasks.splice(i, 1)[0].resolve();
    }
    if (this.tasks.length === 0) return;
    const next = Math.min(...this.tasks.map((t) => t.remaining)) / this.speed();
    const timer = new AbortController();
    this.timer = timer;
    this.clock.sleep(next, timer.signal).then(
      () => {
        if (this.timer !== timer) return;
        this.timer = null;
        this.progress();
        this.reschedule();
      },
      () => undefined,
    );
  }
}
