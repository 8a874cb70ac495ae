/**
 * The vocabulary of the sidecar core: devices, residents, jobs, costs, plans and decisions.
 *
 * Everything here is plain data (JSON-serialisable) so that it can cross the protocol unchanged and so that the
 * planner and the arbiter stay pure functions of it. Sizes are always bytes; durations are always milliseconds.
 */

export type Bytes = number;
export type Millis = number;

export const KiB = 1024;
export const MiB = 1024 * 1024;
export const GiB = 1024 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------------------------
// Devices

/** Where VRAM figures come from. `cpu` means no GPU was found: plans are made for system RAM. */
export type DeviceKind = 'nvidia' | 'amd' | 'apple' | 'cpu' | 'simulated';

export interface GpuProcessUse {
  pid: number;
  name?: string;
  used: Bytes;
}

/** One reading of one device. `free` is what the driver reports; it can lag behind real frees and allocations. */
export interface DeviceSnapshot {
  /** Stable id, e.g. `nvidia:0`, `amd:1`, `apple:0`, `cpu`, `sim:0`. */
  id: string;
  name: string;
  kind: DeviceKind;
  total: Bytes;
  used: Bytes;
  free: Bytes;
  /** True when GPU and CPU share one memory pool (Apple silicon, CPU-only). */
  unified: boolean;
  /** Per-process use where the driver reports it (nvidia-smi --query-compute-apps). */
  processes?: GpuProcessUse[];
  /** Largest single allocation the driver allows (Vulkan caps at 2-4 GB), when known. */
  maxAllocation?: Bytes;
  /** Milliseconds since the epoch when this reading was taken. */
  at: Millis;
}

/** Source of device readings. Implementations: nvidia, amd, apple, cpu-only, simulated. */
export interface DeviceProbe {
  readonly kind: DeviceKind;
  /** One fresh reading of every device this probe sees. */
  sample(): Promise<DeviceSnapshot[]>;
  /** Continuous readings at roughly `intervalMs`; returns a function that stops them. */
  watch(intervalMs: number, onSample: (snapshots: DeviceSnapshot[]) => void, onError?: (error: Error) => void): () => void;
  dispose(): void;
}

// ---------------------------------------------------------------------------------------------------------------
// Residents: the long-lived holders of VRAM that the arbiter can ask to yield.

/**
 * LLM residency. hot = weights + context (KV cache, compute buffers) on the GPU; warm = weights only;
 * cold = nothing on the GPU (the worker process may live); stopped = no process.
 */
export type LlmState = 'hot' | 'warm' | 'cold' | 'stopped';
export const LLM_STATES_BY_FOOTPRINT: readonly LlmState[] = ['hot', 'warm', 'cold', 'stopped'];

/** Image worker residency: an sd-server holding weights between jobs, or nothing. */
export type ImageWorkerState = 'resident' | 'stopped';

export interface LlmResident {
  id: 'llm';
  state: LlmState;
  deviceId: string;
  /** The state the user last asked for / the LLM last needed; the arbiter restores towards it when room returns. */
  wantedState: LlmState;
  costs: LlmCosts | null;
  /** Millis since the epoch of the last LLM request; drives the idle policy. */
  lastUsedAt: Millis;
  /**
   * The CPU copy of the model (cpuLane.ts): `available` when it may answer while an image job holds the GPU (it
   * starts on first use), `running` while its process is up (it uses RAM, no VRAM), `set-aside` after it failed;
   * absent when there is none.
   */
  cpuCopy?: 'available' | 'running' | 'set-aside';
}

export interface ImageResident {
  id: 'image';
  state: ImageWorkerState;
  deviceId: string;
  /** Bytes the resident sd-server holds on the device (its weights under its current placement). */
  heldBytes: Bytes;
}

// ---------------------------------------------------------------------------------------------------------------
// Costs: what the estimators produce and the planner consumes.

/** Memory and time figures of one LLM on one device, from the GGUF header (and calibration when present). */
export interface LlmCosts {
  modelPath: string;
  layerCount: number;
  /** Layers the plan puts on the GPU when hot/warm. */
  gpuLayers: number;
  contextSize: number;
  /** Weights on the GPU for `gpuLayers`. */
  weights: Bytes;
  /** KV cache for `contextSize` on the GPU. */
  kvCache: Bytes;
  /** Compute buffers for `contextSize`. */
  compute: Bytes;
  /** Time to bring weights back from the page cache (warm <- cold). */
  reloadWeightsMs: Millis;
  /** Time to recreate the context (hot <- warm). */
  recreateContextMs: Millis;
  /** Time to start the worker process (cold <- stopped). */
  startProcessMs: Millis;
  /** Every tensor's bytes (the whole model, wherever it runs): what a token's generation reads. */
  modelBytes?: Bytes;
}

/** The three parts of an image model. */
export type ImageComponent = 'textEncoder' | 'diffusion' | 'vae';

export type ImageModelFamily = 'sd1' | 'sd2' | 'sdxl' | 'sd3' | 'flux' | 'wan' | 'unknown';

/**
 * Memory and time figures of one image (or video) job under every placement option the planner may choose.
 * Produced by the image estimator from the model headers, the size and calibration; consumed by the planner.
 */
export interface ImageJobCosts {
  family: ImageModelFamily;
  width: number;
  height: number;
  batch: number;
  frames: number;
  weights: Record<ImageComponent, Bytes>;
  compute: {
    textEncoder: Bytes;
    diffusion: Bytes;
    /** Diffusion compute with flash attention, when the binary supports it (else equal to `diffusion`). */
    diffusionFlash: Bytes;
    /** Whole-image VAE decode compute buffer. */
    vaeDecode: Bytes;
    /** Peak of a tiled VAE decode (roughly constant per tile). */
    vaeDecodeTiled: Bytes;
  };
  /** Baseline durations on the GPU and the extra time of each safer option. */
  time: {
    textEncodeMs: Millis;
    samplingMs: Millis;
    vaeDecodeMs: Millis;
    vaeTiledExtraMs: Millis;
    vaeCpuExtraMs: Millis;
    textEncoderCpuExtraMs: Millis;
    /** Extra time when diffusion weights are streamed from RAM (--offload-to-cpu). */
    offloadExtraMs: Millis;
  };
  /** Which figures came from calibration rather than the prior. */
  calibrated: string[];
}

// ---------------------------------------------------------------------------------------------------------------
// Jobs

export type JobPriority = 'interactive' | 'normal' | 'batch';

/** Where an LLM request is served: the GPU LLM, or its CPU copy (see planning/llmPlanner.ts). */
export type LlmLane = 'gpu' | 'cpu';

export type LlmTask = 'completion' | 'infill' | 'chat' | 'enhancePrompt' | 'tagImage';

export interface ImageJobSpec {
  kind: 'image';
  /** Path of a single checkpoint, or of the diffusion model when split files are given. */
  modelPath: string;
  /** Split model files, when used instead of one checkpoint. */
  parts?: Partial<Record<'vae' | 'clipL' | 'clipG' | 't5xxl' | 'llm' | 'taesd', string>>;
  prompt: string;
  negativePrompt?: string;
  width: number;
  height: number;
  batch: number;
  steps: number;
  seed: number;
  cfgScale?: number;
  samplingMethod?: string;
  /** Video jobs (-M vid_gen): number of frames; 1 for still images. */
  frames?: number;
  /** Where the finished image(s) go; the worker writes to a temporary name first. */
  outputPath: string;
}

export interface LlmJobSpec {
  kind: 'llm';
  task: LlmTask;
  /** Context size the request needs. */
  contextSize: number;
  prompt?: string;
  messages?: { role: 'system' | 'user' | 'assistant'; content: string }[];
  /** Fill-in-the-middle parts. */
  prefix?: string;
  suffix?: string;
  maxTokens?: number;
  temperature?: number;
}

export type JobSpec = ImageJobSpec | LlmJobSpec;

export type JobStatus = 'queued' | 'planning' | 'waiting' | 'running' | 'retrying' | 'done' | 'failed' | 'cancelled';

export interface JobInfo {
  id: string;
  spec: JobSpec;
  priority: JobPriority;
  status: JobStatus;
  submittedAt: Millis;
  startedAt?: Millis;
  endedAt?: Millis;
  plan?: Plan;
  attempt: number;
  /** 'cpu-copy' while an LLM request runs on the CPU copy of the model (RAM, no VRAM), and after it ran there. */
  ranOn?: 'cpu-copy';
  /** Human-readable outcome: the output paths, or what went wrong and what to do. */
  message?: string;
}

// ---------------------------------------------------------------------------------------------------------------
// Plans

export type Placement = 'gpu' | 'cpu';

/** How sd.cpp places and runs the parts of an image job. Each field maps onto sd.cpp flags in the worker. */
export interface ImagePlacement {
  textEncoder: Placement;
  /** `offload`: weights in RAM, moved to VRAM when needed (--offload-to-cpu). */
  diffusion: 'gpu' | 'offload';
  vae: Placement;
  vaeTiling: boolean;
  flashAttention: boolean;
}

/** The safer rungs, in the order recovery climbs them after a failure the plan did not foresee. */
export const RECOVERY_LADDER = ['vaeTiling', 'vaeOnCpu', 'textEncoderOnCpu', 'offloadWeights', 'stopLlm'] as const;
export type RecoveryRung = (typeof RECOVERY_LADDER)[number];

/** A resident the plan asks to give memory back before the job starts. */
export interface YieldStep {
  resident: 'llm' | 'image';
  from: LlmState | ImageWorkerState;
  to: LlmState | ImageWorkerState;
  frees: Bytes;
  /** Expected cost of coming back later. */
  restoreMs: Millis;
}

export type StageName = 'textEncode' | 'diffusion' | 'vaeDecode' | 'llmLoad' | 'llmInfer';

export interface StagePlan {
  stage: StageName;
  /** Expected peak device use of our own work during this stage (residents that stay + the stage's buffers). */
  peak: Bytes;
  /** What makes up the peak, for the panel. */
  parts: { label: string; bytes: Bytes }[];
}

export interface Plan {
  jobId: string;
  deviceId: string;
  /** True when every stage's peak fits in the effective free memory (after the yields). */
  fits: boolean;
  placement?: ImagePlacement;
  /** Set for LLM jobs: the state the LLM must be in to serve it. */
  llmTarget?: LlmState;
  yields: YieldStep[];
  stages: StagePlan[];
  /** The largest stage peak. */
  peak: Bytes;
  /** Effective free memory the plan was made against (after margin, before yields). */
  available: Bytes;
  /** Expected time added by the safer options and the yields, versus running everything on the GPU. */
  extraTimeMs: Millis;
  /** Image jobs: the job's expected time from its start to its end under this plan (yields included). */
  estimatedMs?: Millis;
  /**
   * LLM requests: where the request runs. `cpu`: on the CPU copy of the model, because an image job holds the GPU
   * memory the LLM needs and waiting for it is expected to take longer (no VRAM is used).
   */
  lane?: LlmLane;
  /** One sentence: why this plan (e.g. `estimate 6.5 GB for VAE decode 1024x1024, free 3.1 GB -> tiled decode`). */
  reason: string;
  /** When nothing fits: what would (smaller size, another model, freeing other programs' memory). */
  suggestions: string[];
  /** Images per run when a batch cannot fit at once (batch jobs that do not fit run image by image). */
  batchPerRun?: number;
  /**
   * Bytes of the safety margin the plan runs in, as a last resort: nothing fitted outside the margin with every
   * yield and safer option, and the shortfall was within the part of the margin the arbiter allows.
   */
  marginUsed?: Bytes;
}

// ---------------------------------------------------------------------------------------------------------------
// Decisions: every choice the arbiter makes, with its reason and numbers.

export type DecisionKind =
  | 'plan'
  | 'yield'
  | 'restore'
  | 'wait'
  | 'lease'
  | 'release'
  | 'retry'
  | 'reject'
  | 'cancel'
  | 'fail'
  | 'calibrate'
  | 'worker'
  /** An LLM request answered off the GPU (on the CPU copy): what it took against its estimate. */
  | 'answer';

export interface DecisionEvent {
  seq: number;
  at: Millis;
  kind: DecisionKind;
  jobId?: string;
  deviceId?: string;
  /** One line a person can read, with the numbers in it. */
  reason: string;
  /** What we expected, in bytes, when the decision concerns memory. */
  estimate?: Bytes;
  /** What the device said was free when we decided. */
  measuredFree?: Bytes;
  /** What was then measured (a worker's logged buffer, the memory that really came back). */
  measured?: Bytes;
  /** Time the decision is expected to add, or took. */
  durationMs?: Millis;
}

// ---------------------------------------------------------------------------------------------------------------
// Engine capabilities, detected from the binary (`--help`), that decide which placements a plan may use.

export interface SdCapabilities {
  /** `backend`: `--backend te=cpu,vae=cpu`; `legacy`: `--clip-on-cpu`/`--vae-on-cpu`; `none`: no CPU placement. */
  cpuPlacementFlags: 'backend' | 'legacy' | 'none';
  vaeTiling: boolean;
  offloadToCpu: boolean;
  diffusionFlashAttention: boolean;
  vaeConvDirect: boolean;
  videoGeneration: boolean;
  temporalTiling: boolean;
  /** The backend the binary was built for, when it says (cuda, vulkan, rocm, metal, cpu). */
  backend: 'cuda' | 'vulkan' | 'rocm' | 'metal' | 'cpu' | 'unknown';
}

/** What a current sd-cli supports; the planner's default when no binary has been probed yet. */
export const FULL_SD_CAPABILITIES: SdCapabilities = {
  cpuPlacementFlags: 'backend',
  vaeTiling: true,
  offloadToCpu: true,
  diffusionFlashAttention: true,
  vaeConvDirect: true,
  videoGeneration: true,
  temporalTiling: true,
  backend: 'cuda',
};
