/**
 * Every message between a client (the VS Code extension over IPC, or a local app over the loopback WebSocket)
 * and the sidecar. Both transports carry exactly these JSON-RPC methods.
 *
 * Each block: the method name, what it does, its parameters and result. Requests answer; notifications do not.
 * This file is imported by the extension, the sidecar and the tests; it holds no code beyond names and types.
 */

import type {
  DecisionEvent,
  DeviceSnapshot,
  ImageJobSpec,
  ImageResident,
  JobInfo,
  JobPriority,
  LlmJobSpec,
  LlmResident,
  LlmState,
  Plan,
} from './core/types';

// ---------------------------------------------------------------------------------------------------------------
// Settings pushed by the extension. The sidecar never reads VS Code settings itself.

export interface SidecarSettings {
  /** `auto` probes the real GPU; `simulated` uses the labelled demo device. */
  device: 'auto' | 'simulated';
  simulatedCapacityMiB: number;
  safetyMarginMiB: number;
  pollIntervalMs: number;
  llm: {
    /** GGUF model path; empty when none is configured. */
    modelPath: string;
    /** `embedded` runs llama.cpp through node-llama-cpp; `server` runs the user's llama-server binary. */
    engine: 'embedded' | 'server';
    serverPath: string;
    contextSize: number;
    /** Seconds of inactivity after which the LLM drops its context (0 = never). */
    idleWarmSeconds: number;
    /** Seconds of inactivity after which the LLM drops its weights (0 = never). */
    idleColdSeconds: number;
    /**
     * Answer requests with a CPU copy of the model while an image job holds the GPU memory the LLM needs, when
     * that is quicker than waiting (embedded engine only). Optional: a client that does not send it gets true.
     */
    cpuWhileImageRuns?: boolean;
  };
  image: {
    /** sd-cli / sd / sd-server binary; empty means look on PATH. */
    binaryPath: string;
    modelPath: string;
    /** Keep an sd-server resident between jobs while memory allows. */
    keepResident: boolean;
  };
  /** Folder where the sidecar keeps calibration data and the token file. */
  storageDir: string;
  /** False in an untrusted workspace: no engine binary is launched. */
  allowBinaries: boolean;
}

/** `vramRelay/configure` (request): replace the settings; answers with the settings that need a restart, if any. */
export const Configure = 'vramRelay/configure';
export type ConfigureParams = SidecarSettings;
export interface ConfigureResult {
  applied: boolean;
  restartNeeded: string[];
}

// ---------------------------------------------------------------------------------------------------------------
// State

/** Everything a monitor needs to draw itself from nothing. */
export interface SidecarSnapshot {
  /** `simulated` is shown as a demo in every UI. */
  deviceSource: 'real' | 'simulated' | 'cpu-only';
  devices: DeviceSnapshot[];
  /** Effective free per device: min(reported free, total - accounted) - margin. */
  effectiveFree: Record<string, number>;
  safetyMargin: number;
  llm: LlmResident;
  image: ImageResident;
  queue: JobInfo[];
  running: JobInfo[];
  recentDecisions: DecisionEvent[];
  /** Per-device breakdown of what we hold, for the panel's stacked bar. */
  breakdown: Record<string, { label: string; bytes: number; kind: 'llm' | 'image' | 'compute' | 'other' | 'free' | 'margin' }[]>;
  at: number;
}

/** `vramRelay/getSnapshot` (request): the full current state. */
export const GetSnapshot = 'vramRelay/getSnapshot';
export type GetSnapshotResult = SidecarSnapshot;

/** `vramRelay/snapshot` (notification, sidecar -> client): pushed on every change, at most every pollIntervalMs. */
export const SnapshotNotification = 'vramRelay/snapshot';
export type SnapshotNotificationParams = SidecarSnapshot;

/** `vramRelay/decision` (notification, sidecar -> client): one arbiter decision as it happens. */
export const DecisionNotification = 'vramRelay/decision';
export type DecisionNotificationParams = DecisionEvent;

/** `vramRelay/getDecisions` (request): the bounded decision history, optionally for one job. */
export const GetDecisions = 'vramRelay/getDecisions';
export interface GetDecisionsParams {
  jobId?: string;
  sinceSeq?: number;
}
export type GetDecisionsResult = DecisionEvent[];

// ---------------------------------------------------------------------------------------------------------------
// Plans and jobs

/** `vramRelay/previewPlan` (request): dry run; the plan this job would get now, nothing runs. */
export const PreviewPlan = 'vramRelay/previewPlan';
export interface PreviewPlanParams {
  spec: ImageJobSpec | LlmJobSpec;
}
export type PreviewPlanResult = Plan;

/** `vramRelay/submitJob` (request): queue a job; answers at once with its id. Progress follows as notifications. */
export const SubmitJob = 'vramRelay/submitJob';
export interface SubmitJobParams {
  spec: ImageJobSpec | LlmJobSpec;
  priority?: JobPriority;
}
export interface SubmitJobResult {
  jobId: string;
}

/** `vramRelay/cancelJob` (request): cancel a queued or running job. */
export const CancelJob = 'vramRelay/cancelJob';
export interface CancelJobParams {
  jobId: string;
}
export interface CancelJobResult {
  cancelled: boolean;
}

/** `vramRelay/jobProgress` (notification, sidecar -> client): a stage change or a sampling step. */
export const JobProgressNotification = 'vramRelay/jobProgress';
export interface JobProgressParams {
  jobId: string;
  stage: 'queued' | 'waiting' | 'textEncode' | 'diffusion' | 'vaeDecode' | 'saving' | 'generating' | 'retrying';
  step?: number;
  totalSteps?: number;
  message?: string;
  /** Streamed LLM text, for LLM jobs. */
  textDelta?: string;
}

/** `vramRelay/jobDone` (notification, sidecar -> client): the job ended (done, failed or cancelled). */
export const JobDoneNotification = 'vramRelay/jobDone';
export interface JobDoneParams {
  job: JobInfo;
  /** Image jobs: the files written. */
  outputs?: string[];
  /** LLM jobs: the whole answer. */
  text?: string;
}

/** `vramRelay/waitJob` (request): resolves when the job ends, with the same payload as jobDone. */
export const WaitJob = 'vramRelay/waitJob';
export interface WaitJobParams {
  jobId: string;
}
export type WaitJobResult = JobDoneParams;

// ---------------------------------------------------------------------------------------------------------------
// Residents

/** `vramRelay/setLlmState` (request): the user unloads or reloads the LLM (Unload LLM / Reload LLM commands). */
export const SetLlmState = 'vramRelay/setLlmState';
export interface SetLlmStateParams {
  state: LlmState;
}
export interface SetLlmStateResult {
  state: LlmState;
  tookMs: number;
}

/** `vramRelay/freeGpuMemory` (request): drop everything we hold that no running job needs. */
export const FreeGpuMemory = 'vramRelay/freeGpuMemory';
export interface FreeGpuMemoryResult {
  freed: number;
}

// ---------------------------------------------------------------------------------------------------------------
// Housekeeping

/** `vramRelay/version` (request): protocol version and sidecar build, checked by clients on connect. */
export const Version = 'vramRelay/version';
export interface VersionResult {
  protocol: number;
  sidecar: string;
}
export const PROTOCOL_VERSION = 1;

/** Every request method, for the WebSocket server's allowlist. */
export const REQUEST_METHODS = [
  Configure,
  GetSnapshot,
  GetDecisions,
  PreviewPlan,
  SubmitJob,
  CancelJob,
  WaitJob,
  SetLlmState,
  FreeGpuMemory,
  Version,
] as const;
