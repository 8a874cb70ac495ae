/**
 * Binds a `SidecarApi` to a JSON-RPC connection: every `vramRelay/...` request becomes a call, every service
 * notification is sent to the client. Both transports use it (LSP over IPC for the extension, the loopback
 * WebSocket for other local apps), so they speak exactly the same protocol.
 *
 * Errors leave as JSON-RPC errors with a readable message: InvalidParams for a malformed call (the message says
 * what to fix), RequestCancelled when the client cancelled, RequestFailed for everything the service refused.
 * Unknown methods are answered MethodNotFound by vscode-jsonrpc itself.
 */

import { ErrorCodes, LSPErrorCodes, ResponseError } from 'vscode-languageserver';
import type { Log, SidecarApi, SidecarRequestMethod } from '../api';
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
import {
  checkCancelJob,
  checkConfigure,
  checkGetDecisions,
  checkNoParams,
  checkPreviewPlan,
  checkSetLlmState,
  checkSubmitJob,
  checkWaitJob,
  InvalidParamsError,
} from './paramsCheck';

export interface DisposableLike {
  dispose(): void;
}

/** vscode-jsonrpc's CancellationToken, structurally. */
export interface CancellationTokenLike {
  readonly isCancellationRequested: boolean;
  onCancellationRequested(listener: () => void): DisposableLike;
}

/**
 * The part of a JSON-RPC connection this module needs. The vscode-languageserver `Connection` and a vscode-jsonrpc
 * `MessageConnection` both fit. Request handlers registered by name receive the named params (or nothing) and,
 * last, a cancellation token.
 *
 * Thrown errors become `ResponseError`s of the vscode-jsonrpc copy that `vscode-languageserver` uses; give this a
 * connection built from that copy (as both sidecar transports do) so the error codes arrive intact.
 */
export interface RpcConnection {
  onRequest(method: string, handler: (...args: never[]) => unknown): DisposableLike;
  sendNotification(method: string, params?: unknown): Promise<void> | void;
}

export interface BindOptions {
  log?: Log;
}

type Handler = (params: unknown, signal: AbortSignal) => Promise<unknown>;

function handlersFor(api: SidecarApi): Record<SidecarRequestMethod, Handler> {
  return {
    [Configure]: (p) => api.configure(checkConfigure(p)),
    [GetSnapshot]: (p) => (checkNoParams(p), api.getSnapshot()),
    [GetDecisions]: (p) => api.getDecisions(checkGetDecisions(p)),
    [PreviewPlan]: (p) => api.previewPlan(checkPreviewPlan(p)),
    [SubmitJob]: (p) => api.submitJob(checkSubmitJob(p)),
    [CancelJob]: (p) => api.cancelJob(checkCancelJob(p)),
    [WaitJob]: (p, signal) => api.waitJob(checkWaitJob(p), signal),
    [SetLlmState]: (p) => api.setLlmState(checkSetLlmState(p)),
    [FreeGpuMemory]: (p) => (checkNoParams(p), api.freeGpuMemory()),
    [Version]: (p) => (checkNoParams(p), api.version()),
  };
}

function isCancellationToken(value: unknown): value is CancellationTokenLike {
  return typeof value === 'object' && value !== null && 'onCancellationRequested' in value && 'isCancellationRequested' in value;
}

function toResponseError(method: string, error: unknown, signal: AbortSignal, log?: Log): ResponseError<void> {
  if (error instanceof ResponseError) return error;
  if (error instanceof InvalidParamsError) {
    log?.('warn', `${method}: invalid params: ${error.message}`);
    return new ResponseError(ErrorCodes.InvalidParams, `Invalid params for ${method}: ${error.message}`);
  }
  if (signal.aborted) return new ResponseError(LSPErrorCodes.RequestCancelled, `${method} was cancelled.`);
  const message = error instanceof Error ? error.message : String(error);
  log?.('warn', `${method} failed: ${message}`);
  if (error instanceof Error && error.stack) log?.('debug', error.stack);
  return new ResponseError(LSPErrorCodes.RequestFailed, message || `${method} failed without saying why.`);
}

/**
 * Registers every protocol request on `connection` and forwards the api's notifications to it.
 * `dispose()` unregisters, stops forwarding and aborts the requests still in flight (e.g. `waitJob`) when the
 * client goes away; it does not dispose the api, which may serve other clients.
 */
export function bindApi(connection: RpcConnection, api: SidecarApi, options: BindOptions = {}): DisposableLike {
  const { log } = options;
  const inFlight = new Set<AbortController>();
  const registrations: DisposableLike[] = [];

  for (const [method, handler] of Object.entries(handlersFor(api))) {
    const onRequest = async (...args: unknown[]): Promise<unknown> => {
      const token = isCancellationToken(args.at(-1)) ? (args.pop() as CancellationTokenLike) : undefined;
      const controller = new AbortController();
      inFlight.add(controller);
      const cancelListener = token?.onCancellationRequested(() => controller.abort());
      try {
        // Named params arrive as one object; positional params (an array) would arrive spread.
        if (args.length > 1) throw new InvalidParamsError('pass the parameters by name, as one object.');
        if (token?.isCancellationRequested) controller.abort();
        if (controller.signal.aborted) throw new Error('cancelled');
        return await handler(args[0], controller.signal);
      } catch (error) {
        throw toResponseError(method, error, controller.signal, log);
      } finally {
        cancelListener?.dispose();
        inFlight.delete(controller);
      }
    };
    registrations.push(connection.onRequest(method, onRequest as (...args: never[]) => unknown));
  }

  const unsubscribe = api.onNotification((method, params) => {
    try {
      const sent = connection.sendNotification(method, params);
      // A client that has gone away makes the send fail; the transport notices the close on its own.
      if (sent) sent.catch((error: unknown) => log?.('debug', `could not send ${method}: ${String(error)}`));
    } catch (error) {
      log?.('debug', `could not send ${method}: ${String(error)}`);
    }
  });

  let disposed = false;
  return {
    dispose() {
      if (disposed) return;
      disposed = true;
      unsubscribe();
      for (const registration of registrations) registration.dispose();
      for (const controller of inFlight) controller.abort();
      inFlight.clear();
    },
  };
}
