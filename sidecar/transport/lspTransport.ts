/**
 * The extension's end of the link: vscode-languageclient starts the sidecar with TransportKind.ipc, and this side
 * answers over the Node IPC channel with vscode-languageserver. The LSP handshake is kept (initialize, shutdown,
 * exit) but no language feature is advertised: everything else is the custom `vramRelay/...` requests.
 *
 * The sidecar must never outlive the extension host. It exits on `exit`, when the IPC channel closes (the parent
 * died or let go of it), when the process id given in `initialize` disappears (vscode-languageserver's watchdog,
 * every 3 s), and on SIGTERM/SIGINT/SIGHUP; each time after stopping its engines.
 */

import { createConnection, IPCMessageReader, IPCMessageWriter } from 'vscode-languageserver/node';
import type { Connection, InitializeResult } from 'vscode-languageserver/node';
import { SIDECAR_VERSION } from '../api';
import type { Log, LogLevel, SidecarApi } from '../api';
import { LOG_LEVELS } from './stderrLog';
import { bindApi } from './protocolHandlers';

export interface IpcServeOptions {
  api: SidecarApi;
  log: Log;
  /** Exits the process; replaceable for tests. */
  exit?: (code: number) => void;
  /** Longest wait for `api.dispose()` before exiting anyway, in ms. */
  disposeTimeoutMs?: number;
  /** Called synchronously on SIGTERM/SIGINT/SIGHUP, before the orderly shutdown (e.g. to signal the engines). */
  onSignal?: (signal: NodeJS.Signals) => void;
}

export function serveOverIpc(options: IpcServeOptions): Connection {
  const { api, log } = options;
  const exit = options.exit ?? ((code: number) => process.exit(code));
  const disposeTimeoutMs = options.disposeTimeoutMs ?? 5000;
  if (typeof process.send !== 'function') {
    throw new Error('No IPC channel: the sidecar was not started by the extension. Run it with --serve to use it standalone.');
  }

  const connection = createConnection(new IPCMessageReader(process), new IPCMessageWriter(process));
  const binding = bindApi(connection, api, { log });
  let shutdownReceived = false;

  let disposing: Promise<void> | undefined;
  const disposeAll = () =>
    (disposing ??= (async () => {
      binding.dispose();
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        api.dispose().catch((error: unknown) => log('error', `stopping the service failed: ${String(error)}`)),
        new Promise<void>((resolve) => {
          timer = setTimeout(() => {
            log('warn', `the service did not stop within ${disposeTimeoutMs} ms; exiting anyway`);
            resolve();
          }, disposeTimeoutMs);
        }),
      ]);
      clearTimeout(timer);
    })());

  connection.onInitialize((params): InitializeResult => {
    const client = params.clientInfo ? `${params.clientInfo.name} ${params.clientInfo.version ?? ''}`.trim() : 'a client';
    log('info', `connected to ${client} over IPC (parent pid ${params.processId ?? 'unknown'})`);
    return { capabilities: {}, serverInfo: { name: 'vram-relay-sidecar', version: SIDECAR_VERSION } };
  });

  connection.onShutdown(async () => {
    shutdownReceived = true;
    log('info', 'shutdown requested');
    await disposeAll();
  });

  // vscode-languageserver exits right after this handler: 0 after a shutdown request, 1 otherwise.
  connection.onExit(() => {
    log(shutdownReceived ? 'info' : 'warn', shutdownReceived ? 'exiting' : 'exit without shutdown');
    void disposeAll();
  });

  process.once('disconnect', () => {
    log('warn', 'the IPC channel closed (the extension host went away); stopping');
    void disposeAll().finally(() => exit(shutdownReceived ? 0 : 1));
  });

  // A signal to the whole process group (the editor's server being stopped) would otherwise end the sidecar at once
  // and leave its engines, which run in their own groups, holding VRAM: stop them first.
  for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
    process.once(signal, () => {
      options.onSignal?.(signal);
      log('warn', `${signal} received; stopping the engines and exiting`);
      void disposeAll().finally(() => exit(shutdownReceived ? 0 : 1));
    });
  }

  connection.listen();
  return connection;
}

/**
 * A Log that sends each line to the client as `window/logMessage` at its level, filtered by `level`. Once the IPC
 * channel has closed, lines go to `fallback` (stderr), the only place left where they can be seen.
 */
export function createConsoleLog(connection: Connection, level: LogLevel, fallback?: Log): Log {
  const threshold = LOG_LEVELS.indexOf(level);
  return (lineLevel, message) => {
    if (LOG_LEVELS.indexOf(lineLevel) > threshold) return;
    if (!process.connected) {
      fallback?.(lineLevel, message);
      return;
    }
    try {
      if (lineLevel === 'error') connection.console.error(message);
      else if (lineLevel === 'warn') connection.console.warn(message);
      else if (lineLevel === 'info') connection.console.info(message);
      else connection.console.log(message);
    } catch {
      fallback?.(lineLevel, message);
    }
  };
}
