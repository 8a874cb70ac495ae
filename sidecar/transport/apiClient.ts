/**
 * The other end of `bindApi`: turns a JSON-RPC connection to a sidecar back into a `SidecarApi`, so remote and
 * in-process callers use one interface. Plain TypeScript with no Node imports: the extension can use it over its
 * LanguageClient (which fits `RpcClientConnection`) as well as `wsClient.ts` over the WebSocket.
 */

import { NOTIFICATION_METHODS } from '../api';
import type {
  NotificationListener,
  SidecarApi,
  SidecarNotificationMap,
  SidecarNotificationMethod,
  SidecarRequestMap,
  SidecarRequestMethod,
} from '../api';
import {
  CancelJob,
  Configure,
  FreeGpuMemory,
  GetDecisions,
  GetSnapshot,
  PreviewPlan,
  SetLlmState,
  SubmitJob,
  Version,
  WaitJob,
} from '../protocol';
import type { CancellationTokenLike, DisposableLike } from './protocolHandlers';

/** What a client connection must offer: a vscode-jsonrpc `MessageConnection` or a `LanguageClient` both fit. */
export interface RpcClientConnection {
  sendRequest(method: string, ...args: unknown[]): Promise<unknown>;
  onNotification(method: string, handler: (params: unknown) => void): DisposableLike;
}

/** Parameters of a request as a tuple: empty for requests that take none. */
export type RequestArgs<M extends SidecarRequestMethod> = SidecarRequestMap[M][0] extends void ? [] : [SidecarRequestMap[M][0]];

export interface SidecarApiClient extends SidecarApi {
  /** Any protocol request by method name, typed. */
  request<M extends SidecarRequestMethod>(method: M, ...params: RequestArgs<M>): Promise<SidecarRequestMap[M][1]>;
  /** One notification kind, typed; returns the unsubscribe function. */
  on<M extends SidecarNotificationMethod>(method: M, handler: (params: SidecarNotificationMap[M]) => void): () => void;
}

/** A vscode-jsonrpc cancellation token driven by an AbortSignal (vscode-jsonrpc checks tokens structurally). */
function tokenFor(signal: AbortSignal): CancellationTokenLike {
  return {
    get isCancellationRequested() {
      return signal.aborted;
    },
    onCancellationRequested(listener: () => void) {
      signal.addEventListener('abort', listener, { once: true });
      return { dispose: () => signal.removeEventListener('abort', listener) };
    },
  };
}

function abortError(signal: AbortSignal): Error {
  return signal.reason instanceof Error ? signal.reason : new Error('The wait was aborted.');
}

/**
 * @param dispose closes the connection (the sidecar keeps running); called by the client's `dispose()`.
 */
export function createApiClient(connection: RpcClientConnection, dispose: () => Promise<void> | void): SidecarApiClient {
  const listeners = new Set<NotificationListener>();
  const registrations = NOTIFICATION_METHODS.map((method) =>
    connection.onNotification(method, (params: unknown) => {
      for (const listener of listeners) listener(method, params);
    }),
  );

  // async: a closed connection throws synchronously, and callers expect a rejected promise.
  async function request<M extends SidecarRequestMethod>(method: M, ...params: RequestArgs<M>): Promise<SidecarRequestMap[M][1]> {
    return (await connection.sendRequest(method, ...params)) as SidecarRequestMap[M][1];
  }

  let disposed = false;
  return {
    request,
    on(method, handler) {
      const listener: NotificationListener = (m, params) => {
        if (m === method) handler(params as SidecarNotificationMap[typeof method]);
      };
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    configure: (params) => request(Configure, params),
    getSnapshot: () => request(GetSnapshot),
    getDecisions: (params) => request(GetDecisions, params),
    previewPlan: (params) => request(PreviewPlan, params),
    submitJob: (params) => request(SubmitJob, params),
    cancelJob: (params) => request(CancelJob, params),
    waitJob(params, signal) {
      if (!signal) return request(WaitJob, params);
      if (signal.aborted) return Promise.reject(abortError(signal));
      // The token tells the sidecar to stop waiting; the local race answers at once even if it never replies.
      return new Promise((resolve, reject) => {
        let answer: ReturnType<SidecarApi['waitJob']>;
        try {
          answer = connection.sendRequest(WaitJob, params, tokenFor(signal)) as ReturnType<SidecarApi['waitJob']>;
        } catch (error) {
          return reject(error);
        }
        const onAbort = () => reject(abortError(signal));
        signal.addEventListener('abort', onAbort, { once: true });
        answer.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
      });
    },
    setLlmState: (params) => request(SetLlmState, params),
    freeGpuMemory: () => request(FreeGpuMemory),
    version: () => request(Version),
    onNotification(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    async dispose() {
      if (disposed) return;
      disposed = true;
      listeners.clear();
      for (const registration of registrations) registration.dispose();
      await dispose();
    },
  };
}
