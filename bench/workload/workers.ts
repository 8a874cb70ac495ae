/**
 * Stand-ins for llama.cpp and sd-cli that every policy drives: they allocate the TRUE sizes of each stage on the
 * simulated device under the placement they are given, take the true time (GPU work through the shared GPU), and
 * fail the way the engines fail when an allocation does not fit:
 * - llama.cpp: a CUDA out-of-memory aborts the process (SIGABRT, exit 134): the LLM is gone and the request fails;
 * - sd-cli: `failed to allocate the compute buffer` and no image; on an older build a failed VAE allocation still
 *   "succeeds" and writes a uniform gray image (reported as `blank`, as VRAM Relay's image check does).
 * Both report the buffers they would log, which VRAM Relay's calibration learns from.
 */

import type { World } from './world';
import { LLM_PID, SD_PID } from './world';
import { CHARS_PER_TOKEN } from '../../sidecar/core/estimators/figures';
import { sharedPromptTokens, type CompletionPlace, type ImageArrival, type LlmArrival } from './trace';
import type { ImageRunner, ImageRunResult, LlmControl, MeasuredBuffer, StageProgress } from '../../sidecar/core/ports';
import {
  LLM_STATES_BY_FOOTPRINT,
  type Bytes,
  type ImageJobSpec,
  type ImagePlacement,
  type LlmJobSpec,
  type LlmState,
  type Millis,
  type Plan,
  type StageName,
} from '../../sidecar/core/types';
import { SimulatedOutOfMemoryError } from '../../sidecar/devices/simulatedDevice';

// ---------------------------------------------------------------------------------------------------------------
// llama.cpp

export class TrueLlm implements LlmControl {
  private current: LlmState = 'stopped';
  private weightsId: string | null = null;
  private contextIds: string[] = [];
  private gpuLayers: number;
  private nextLayers: number;
  /** Weight loads onto the GPU (after `prime`). */
  weightLoads = 0;
  /** Out-of-memory aborts. */
  crashes = 0;
  /** The request whose prompt the context holds (llama.cpp keeps a sequence's tokens between requests). */
  private held: LlmArrival | null = null;

  constructor(
    private readonly world: World,
    gpuLayers: number,
  ) {
    this.gpuLayers = gpuLayers;
    this.nextLayers = gpuLayers;
  }

  get layers(): number {
    return this.gpuLayers;
  }

  /** The state before the session starts (the user had the LLM loaded), set at no cost. */
  prime(state: LlmState): void {
    this.applyMemory(state);
    this.current = state;
  }

  /** Layers to put on the GPU from the next weight load on (llama.cpp fixes them at load). */
  configure(gpuLayers: number): void {
    this.nextLayers = gpuLayers;
    if (!this.weightsId && this.current !== 'hot' && this.current !== 'warm') this.gpuLayers = gpuLayers;
  }

  state(): LlmState {
    return this.current;
  }

  crashCount(): number {
    return this.crashes;
  }

  async setState(target: LlmState, signal?: AbortSignal): Promise<{ tookMs: Millis; measured: MeasuredBuffer[] }> {
    const started = this.world.clock.now();
    const truth = this.world.llm;
    let level = LLM_STATES_BY_FOOTPRINT.indexOf(this.current);
    const goal = LLM_STATES_BY_FOOTPRINT.indexOf(target);
    while (level !== goal) {
      const up = goal < level;
      const next = LLM_STATES_BY_FOOTPRINT[up ? level - 1 : level + 1];
      if (up) {
        // Memory is taken when the step starts (cudaMalloc, then the copy), so a failure shows at once.
        if (next === 'warm') this.gpuLayers = this.nextLayers;
        const k = this.gpuLayers;
        const ms = next === 'cold' ? truth.startMs : next === 'warm' ? truth.loadMs(k) : truth.contextMs(k);
        this.climbTo(next);
        await this.world.clock.sleep(ms, signal);
      } else {
        // Memory comes back when the step ends (a stopped process frees it when it has exited).
        const ms = next === 'warm' ? truth.dropContextMs : next === 'cold' ? truth.dropWeightsMs : truth.exitMs;
        await this.world.clock.sleep(ms, signal);
        this.applyMemory(next);
      }
      this.current = next;
      level = LLM_STATES_BY_FOOTPRINT.indexOf(next);
    }
    return { tookMs: this.world.clock.now() - started, measured: this.measured() };
  }

  async run(job: LlmJobSpec, onText: (delta: string) => void, signal: AbortSignal): Promise<string> {
    if (this.current !== 'hot') throw new Error(`the LLM is ${this.current}: it must be hot to serve a request`);
    const asked = this.world.request(job);
    const request = asked.place && job.prefix !== undefined && job.suffix !== undefined ? sentAs(asked, asked.place, job.prefix, job.suffix) : asked;
    const { promptMs, genMs } = this.world.llm.requestPhasesMs(request, this.gpuLayers, sharedPromptTokens(this.held, request));
    const compute = (ms: Millis, stop?: AbortSignal) => (this.gpuLayers > 0 ? this.world.gpu.run(ms, stop) : this.world.clock.sleep(ms, stop));
    // node-llama-cpp evaluates the prompt in one piece and looks at the abort signal only between generated tokens:
    // a request cancelled meanwhile stops once its prompt is in the context, which then holds that prompt.
    this.held = null;
    await compute(promptMs);
    this.held = request;
    signal.throwIfAborted();
    await compute(genMs, signal);
    // As long as the tokens it stands for, as a real answer would be.
    const text = 'y'.repeat(request.genTokens * CHARS_PER_TOKEN);
    onText(text);
    return text;
  }

  private climbTo(next: LlmState): void {
    try {
      this.applyMemory(next);
      if (next === 'warm' && this.gpuLayers > 0) this.weightLoads++;
    } catch (error) {
      if (!(error instanceof SimulatedOutOfMemoryError)) throw error;
      // llama.cpp aborts on a CUDA out-of-memory: the process and all it held are gone.
      this.crashes++;
      this.world.releaseOwner(LLM_PID);
      this.weightsId = null;
      this.contextIds = [];
      this.current = 'stopped';
      throw new Error(`llama.cpp aborted (exit 134): ${error.message}`);
    }
  }

  private applyMemory(state: LlmState): void {
    const truth = this.world.llm;
    const k = this.gpuLayers;
    const wantWeights = state === 'hot' || state === 'warm';
    const wantContext = state === 'hot';
    if (!wantContext) {
      this.held = null;
      for (const id of this.contextIds.splice(0)) this.world.release(id);
    }
    if (!wantWeights && this.weightsId) {
      this.world.release(this.weightsId);
      this.weightsId = null;
    }
    if (wantWeights && !this.weightsId && truth.weights(k) > 0) this.weightsId = this.world.allocate(LLM_PID, truth.weights(k), 'llm weights');
    if (wantContext && this.contextIds.length === 0 && k > 0) {
      this.contextIds.push(this.world.allocate(LLM_PID, truth.kv(k), 'llm kv'));
      this.contextIds.push(this.world.allocate(LLM_PID, truth.compute(k), 'llm compute'));
    }
  }

  /** What llama.cpp's log says it holds (`CUDA0 model/KV/compute buffer size`). */
  private measured(): MeasuredBuffer[] {
    const truth = this.world.llm;
    const k = this.gpuLayers;
    if (k <= 0) return [];
    const out: MeasuredBuffer[] = [];
    if (this.current === 'hot' || this.current === 'warm') out.push({ key: 'llm.weights', bytes: truth.weights(k), where: 'gpu' });
    if (this.current === 'hot') {
      out.push({ key: 'llm.kv', bytes: truth.kv(k), where: 'gpu' });
      out.push({ key: 'llm.compute', bytes: truth.compute(k), where: 'gpu' });
    }
    return out;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// sd-cli

export interface SdRunOptions {
  /** Images per sd-cli run (a batch that does not fit runs in several). Default: the whole batch. */
  batchPerRun?: number;
  /** sd.cpp `--auto-fit`: retry a failed whole-image VAE decode once, tiled (current builds only). */
  retryVaeTiled?: boolean;
  signal?: AbortSignal;
  onProgress?: (p: StageProgress) => void;
}

export class TrueSdCli implements ImageRunner {
  /** sd-cli runs started (a split batch starts several). */
  runs = 0;

  constructor(private readonly world: World) {}

  /** The arbiter's entry point: the plan says where each part goes. */
  async run(job: ImageJobSpec, plan: Plan, onProgress: (p: StageProgress) => void, signal: AbortSignal): Promise<ImageRunResult> {
    if (!plan.placement) return { ok: false, failure: 'input', message: 'the plan has no placement', measured: [] };
    return this.execute(this.world.image(job.prompt), plan.placement, { batchPerRun: plan.batchPerRun, signal, onProgress });
  }

  async stopResident(): Promise<void> {
    // sd-cli keeps nothing between jobs.
  }

  /** Runs one image job under `placement` with the job's true sizes and times. */
  async execute(job: ImageArrival, placement: ImagePlacement, options: SdRunOptions = {}): Promise<ImageRunResult> {
    const { world } = this;
    const clock = world.clock;
    const truth = world.imageTruth(job);
    const w = truth.weights;
    const c = truth.compute;
    const t = truth.time;
    const signal = options.signal;
    const offload = placement.diffusion === 'offload';
    const teOnGpu = placement.textEncoder === 'gpu';
    const vaeOnGpu = placement.vae === 'gpu';
    const perRun = Math.max(1, Math.min(job.batch, options.batchPerRun ?? job.batch));
    const measured: MeasuredBuffer[] = [];
    const started = clock.now();
    let stage: StageName = 'textEncode';
    let blank = false;
    const alloc = (bytes: Bytes, label: string) => world.allocate(SD_PID, bytes, label);
    const enter = (name: StageName) => {
      stage = name;
      options.onProgress?.({ stage: name });
    };
    /** Brings offloaded weights to the device for one stage. */
    const stream = async (bytes: Bytes, label: string): Promise<string | null> => {
      if (!offload) return null;
      const id = alloc(bytes, label);
      await clock.sleep(truth.offloadMs(bytes), signal);
      return id;
    };
    const free = (...ids: (string | null)[]) => {
      for (const id of ids) if (id) world.release(id);
    };

    try {
      for (let done = 0; done < job.batch; done += perRun) {
        const n = Math.min(perRun, job.batch - done);
        this.runs++;
        // Start and load: components on the GPU keep their weights there for the whole run.
        await clock.sleep(t.startMs, signal);
        if (!offload) {
          if (teOnGpu) alloc(w.textEncoder, 'text encoder weights');
          alloc(w.diffusion, 'diffusion weights');
          if (vaeOnGpu) alloc(w.vae, 'vae weights');
        }
        measured.push(
          { key: 'textEncoder.weights', bytes: w.textEncoder, where: teOnGpu && !offload ? 'gpu' : 'cpu' },
          { key: 'diffusion.weights', bytes: w.diffusion, where: offload ? 'cpu' : 'gpu' },
          { key: 'vae.weights', bytes: w.vae, where: vaeOnGpu && !offload ? 'gpu' : 'cpu' },
        );

        enter('textEncode');
        if (teOnGpu) {
          const weights = await stream(w.textEncoder, 'text encoder weights');
          const compute = alloc(c.textEncoder, 'text encoder compute');
          measured.push({ key: 'textEncoder.compute', bytes: c.textEncoder, where: 'gpu' });
          await world.gpu.run(t.textEncodeGpuMs, signal);
          free(compute, weights);
        } else {
          await clock.sleep(t.textEncodeCpuMs, signal);
        }

        enter('diffusion');
        {
          const weights = await stream(w.diffusion, 'diffusion weights');
          const bytes = placement.flashAttention ? c.diffusionFlash : c.diffusion;
          const compute = alloc(bytes, 'diffusion compute');
          measured.push({ key: 'diffusion.compute', bytes, where: 'gpu' });
          await world.gpu.run(n * (placement.flashAttention ? t.samplingFlashMs : t.samplingMs), signal);
          free(compute, weights);
        }

        enter('vaeDecode');
        if (vaeOnGpu) {
          const weights = await stream(w.vae, 'vae weights');
          let tiled = placement.vaeTiling;
          let compute: string | null = null;
          const bytes = tiled ? c.vaeDecodeTiled : c.vaeDecode;
          try {
            compute = alloc(bytes, 'vae compute');
            measured.push({ key: 'vae.compute', bytes, where: 'gpu' });
          } catch (error) {
            if (!(error instanceof SimulatedOutOfMemoryError)) throw error;
            // The log names the refused size either way.
            measured.push({ key: 'vae.compute', bytes, where: 'gpu' });
            if (truth.build === 'older') {
              blank = true;
            } else if (options.retryVaeTiled && !tiled) {
              tiled = true;
              compute = alloc(c.vaeDecodeTiled, 'vae compute (tiled retry)');
            } else {
              throw error;
            }
          }
          if (compute) await world.gpu.run(n * (tiled ? t.vaeTiledMs : t.vaeGpuMs), signal);
          free(compute, weights);
        } else {
          await clock.sleep(n * t.vaeCpuMs, signal);
        }
        // The process exits: everything it held comes back.
        world.releaseOwner(SD_PID);
      }
      if (blank) {
        return {
          ok: false,
          failure: 'blank',
          message: 'sd.cpp reported success but the image is a uniform gray square: the VAE compute buffer was not allocated',
          measured,
          stage: 'vaeDecode',
        };
      }
      return { ok: true, outputs: [`${job.id}.png`], measured, tookMs: clock.now() - started };
    } catch (error) {
      if (error instanceof SimulatedOutOfMemoryError) {
        return { ok: false, failure: 'oom', message: `failed to allocate the compute buffer: ${error.message}`, measured, stage };
      }
      if (signal?.aborted) return { ok: false, failure: 'cancelled', message: 'cancelled', measured };
      throw error;
    } finally {
      world.releaseOwner(SD_PID);
    }
  }
}

/**
 * A completion as long as what was sent: the CPU copy of VRAM Relay cuts a completion's prefix and suffix
 * (sidecar/core/cpuLane.ts). A prefix cut at its start is a window that starts further on.
 */
function sentAs(asked: LlmArrival, place: CompletionPlace, prefix: string, suffix: string): LlmArrival {
  const windowStart = place.cursor - Math.ceil(prefix.length / CHARS_PER_TOKEN);
  const suffixTokens = Math.ceil(suffix.length / CHARS_PER_TOKEN);
  return { ...asked, place: { ...place, windowStart, suffix: suffixTokens }, promptTokens: place.cursor - windowStart + suffixTokens };
}
