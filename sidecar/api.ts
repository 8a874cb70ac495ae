/**
 * The sidecar as a set of async calls: one method per request in `protocol.ts`, plus its notifications.
 *
 * The service implements it in-process; the transports (`transport/protocolHandlers.ts` over IPC or the loopback
 * WebSocket) expose it as JSON-RPC, and `transport/apiClient.ts` turns a JSON-RPC connection back into it.
 * So tests, the extension and other local apps all talk to the same interface.
 */

// A named import lets the bundler keep only this field of the manifest.
import { version as packageVersion } from '../package.json';
import {
  CancelJob,
  Configure,
  DecisionNotification,
  FreeGpuMemory,
  GetDecisions,
  GetSnapshot,
  JobDoneNotification,
  JobProgressNotification,
  PreviewPlan,
  SetLlmState,
  SnapshotNotification,
  SubmitJob,
  Version,
  WaitJob,
} from './protocol';
import type {
  CancelJobParams,
  CancelJobResult,
  ConfigureParams,
  ConfigureResult,
  DecisionNotificationParams,
  FreeGpuMemoryResult,
  GetDecisionsParams,
  GetDecisionsResult,
  GetSnapshotResult,
  JobDoneParams,
  JobProgressParams,
  PreviewPlanParams,
  PreviewPlanResult,
  SetLlmStateParams,
  SetLlmStateResult,
  SnapshotNotificationParams,
  SubmitJobParams,
  SubmitJobResult,
  VersionResult,
  WaitJobParams,
  WaitJobResult,
} from './protocol';

/** The sidecar build, reported by `vramRelay/version`. */
export const SIDECAR_VERSION: string = packageVersion;

export type LogLevel = 'error' | 'warn' | 'info' | 'debug';
export type Log = (level: LogLevel, message: string) => void;

/** Notifications the sidecar pushes, with their parameter types. */
export interface SidecarNotificationMap {
  [SnapshotNotification]: SnapshotNotificationParams;
  [DecisionNotification]: DecisionNotificationParams;
  [JobProgressNotification]: JobProgressParams;
  [JobDoneNotification]: JobDoneParams;
}
export type SidecarNotificationMethod = keyof SidecarNotificationMap;

export const NOTIFICATION_METHODS: readonly SidecarNotificationMethod[] = [
  SnapshotNotification,
  DecisionNotification,
  JobProgressNotification,
  JobDoneNotification,
];

/** Called for every notification; narrow `params` with `SidecarNotificationMap[method]`. */
export type NotificationListener = (method: SidecarNotificationMethod, params: unknown) => void;

export interface SidecarApi {
  /** `vramRelay/configure` */
  configure(params: ConfigureParams): Promise<ConfigureResult>;
  /** `vramRelay/getSnapshot` */
  getSnapshot(): Promise<GetSnapshotResult>;
  /** `vramRelay/getDecisions` */
  getDecisions(params: GetDecisionsParams): Promise<GetDecisionsResult>;
  /** `vramRelay/previewPlan`: a dry run, nothing starts. */
  previewPlan(params: PreviewPlanParams): Promise<PreviewPlanResult>;
  /** `vramRelay/submitJob`: answers once the job is queued. */
  submitJob(params: SubmitJobParams): Promise<SubmitJobResult>;
  /** `vramRelay/cancelJob` */
  cancelJob(params: CancelJobParams): Promise<CancelJobResult>;
  /**
   * `vramRelay/waitJob`: resolves when the job ends. `signal` aborts the wait only (the client went away or
   * cancelled its request); the job itself keeps running.
   */
  waitJob(params: WaitJobParams, signal?: AbortSignal): Promise<WaitJobResult>;
  /** `vramRelay/setLlmState` */
  setLlmState(params: SetLlmStateParams): Promise<SetLlmStateResult>;
  /** `vramRelay/freeGpuMemory` */
  freeGpuMemory(): Promise<FreeGpuMemoryResult>;
  /** `vramRelay/version` */
  version(): Promise<VersionResult>;
  /** Subscribes to snapshot, decision, jobProgress and jobDone notifications; returns the unsubscribe function. */
  onNotification(listener: NotificationListener): () => void;
  /** Stops everything the service started (workers, probes, timers). Safe to call twice. */
  dispose(): Promise<void>;
}

/** Request method -> [params, result], for typed JSON-RPC clients. `void` params means the request takes none. */
export interface SidecarRequestMap {
  [Configure]: [ConfigureParams, ConfigureResult];
  [GetSnapshot]: [void, GetSnapshotResult];
  [GetDecisions]: [GetDecisionsParams, GetDecisionsResult];
  [PreviewPlan]: [PreviewPlanParams, PreviewPlanResult];
  [SubmitJob]: [SubmitJobParams, SubmitJobResult];
  [CancelJob]: [CancelJobParams, CancelJobResult];
  [WaitJob]: [WaitJobParams, WaitJobResult];
  [SetLlmState]: [SetLlmStateParams, SetLlmStateResult];
  [FreeGpuMemory]: [void, FreeGpuMemoryResult];
  [Version]: [void, VersionResult];
}
export type SidecarRequestMethod = keyof SidecarRequestMap;
