/**
 * Entry point of the sidecar (`dist/sidecar.js`).
 * - Started by the extension through vscode-languageclient (`--node-ipc`): serves the protocol over IPC until the
 *   extension says exit or goes away. Logs go through the connection's console (window/logMessage), which the
 *   extension shows in its log channel at each line's level.
 * - `--serve`: serves the same protocol on a loopback WebSocket for other local apps, prints one line
 *   `VRAM Relay sidecar listening on ws://127.0.0.1:PORT (token in PATH)` and runs until SIGINT/SIGTERM.
 */

import type { Log, LogLevel, SidecarApi } from './api';
import { createSidecarService } from './service';
import { parseCommand, standaloneSettings, UsageError, USAGE } from './transport/cliArgs';
import type { ServeOptions } from './transport/cliArgs';
import { createConsoleLog, serveOverIpc } from './transport/lspTransport';
import { createStderrLog } from './transport/stderrLog';
import { startWsServer } from './transport/wsServer';
import { signalTrackedGroups } from './workers/processTree';
import type { WsServer } from './transport/wsServer';

function runIpc(level: LogLevel): void {
  // Until the connection is up, lines go to stderr; then through the connection's console, so the extension
  // shows each at its own level (it shows every stderr line as an error).
  const stderrLog = createStderrLog({ level, timestamps: false });
  let sink: Log = stderrLog;
  const log: Log = (lineLevel, message) => sink(lineLevel, message);
  // stdout belongs to no one in IPC mode; route stray console output from libraries to the log instead.
  console.log = (...args: unknown[]) => log('info', args.map(String).join(' '));
  console.info = console.log;
  console.debug = (...args: unknown[]) => log('debug', args.map(String).join(' '));
  const api = createSidecarService({ log });
  // The engines are told at once: the editor's server may kill this process right after the same signal.
  const connection = serveOverIpc({ api, log, onSignal: () => signalTrackedGroups('SIGTERM') });
  sink = createConsoleLog(connection, level, stderrLog);
}

async function runServe(options: ServeOptions, log: Log): Promise<void> {
  const api: SidecarApi = createSidecarService({ log });
  let server: WsServer | undefined;
  let stopping: Promise<void> | undefined;
  let stoppingSince = 0;
  const stop = (code: number, why: string) =>
    (stopping ??= (async () => {
      stoppingSince = Date.now();
      log('info', `stopping (${why})`);
      // Clients first, so no request arrives while the service winds down; closing also removes the token file.
      await server?.close().catch((error: unknown) => log('error', `closing the server: ${String(error)}`));
      await api.dispose().catch((error: unknown) => log('error', `stopping the service: ${String(error)}`));
      process.exit(code);
    })());

  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(signal, () => {
      // A terminal that closes signals this process's group, never the engines' own groups: tell them at once.
      signalTrackedGroups('SIGTERM');
      if (stopping) {
        // Ctrl+C under `npm run` reaches us twice at once (from the terminal and from npm): only a later
        // signal means "stop waiting for the clean-up".
        if (Date.now() - stoppingSince < 1000) return;
        log('warn', `${signal} again: exiting without cleaning up`);
        process.exit(130);
      }
      void stop(0, signal);
    });
  }
  process.on('uncaughtException', (error) => {
    log('error', `uncaught: ${error.stack ?? error.message}`);
    void stop(1, 'uncaught exception');
  });
  process.on('unhandledRejection', (reason) => {
    log('error', `unhandled rejection: ${reason instanceof Error ? (reason.stack ?? reason.message) : String(reason)}`);
  });

  try {
    await api.configure(standaloneSettings(options));
    server = await startWsServer({
      api,
      port: options.port,
      tokenFile: options.tokenFile,
      allowedOrigins: options.allowedOrigins,
      log,
    });
  } catch (error) {
    log('error', (error as Error).message);
    await api.dispose().catch(() => undefined);
    process.exit(1);
  }
  if (options.device === 'simulated') log('info', 'using the simulated demo device: no real GPU memory is measured');
  process.stdout.write(`VRAM Relay sidecar listening on ${server.url} (token in ${server.tokenFile})\n`);
}

function main(): void {
  let command;
  try {
    command = parseCommand(process.argv.slice(2), typeof process.send === 'function');
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    process.stderr.write(`${error.message}\n\n${USAGE}\n`);
    process.exit(2);
  }
  if (command.mode === 'help') {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  if (command.mode === 'ipc') {
    runIpc(command.logLevel);
    return;
  }
  void runServe(command.options, createStderrLog({ level: command.options.logLevel, timestamps: true }));
}

main();
