/**
 * Connects a local app (or a test, or the benchmark) to a standalone sidecar (`node dist/sidecar.js --serve`):
 * reads the token file, opens the WebSocket with the token, checks the protocol version and hands back the
 * sidecar as a typed `SidecarApi`.
 *
 *   const sidecar = await connectSidecar();               // default token file
 *   sidecar.on('vramRelay/snapshot', (s) => draw(s));
 *   console.log(await sidecar.getSnapshot());
 *   await sidecar.dispose();                              // closes the connection; the sidecar keeps running
 */

import { createMessageConnection } from 'vscode-languageserver/node';
import { toSocket, WebSocketMessageReader, WebSocketMessageWriter } from 'vscode-ws-jsonrpc';
import WebSocket from 'ws';
import type { Log } from '../api';
import { PROTOCOL_VERSION } from '../protocol';
import { createApiClient } from './apiClient';
import type { SidecarApiClient } from './apiClient';
import { defaultTokenFile, isProcessAlive, readTokenFile } from './tokenFile';
import { DEFAULT_MAX_PAYLOAD, LOOPBACK_HOST } from './wsServer';

export interface ConnectOptions {
  /** Token file written by the server; defaults to the per-user one (`defaultTokenFile()`). */
  tokenFile?: string;
  /** Port and token given directly instead of through the token file. */
  port?: number;
  token?: string;
  /** Connection and version-check timeout, in ms. */
  timeoutMs?: number;
  /** Refuse a sidecar that speaks another protocol version (default true). */
  checkVersion?: boolean;
  /** Extra handshake headers; the tests use this to play a browser. */
  headers?: Record<string, string>;
  log?: Log;
}

export interface SidecarClient extends SidecarApiClient {
  readonly url: string;
  /** Settles when the connection closes, from either side. */
  readonly closed: Promise<void>;
}

/** Thrown when the server refuses the handshake; `status` is the HTTP status (401, 403, 503). */
export class SidecarRefusedError extends Error {
  override readonly name = 'SidecarRefusedError';
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms.`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function refusalMessage(status: number, source: string): string {
  if (status === 401) return `The sidecar refused the token from ${source}: the file is stale or belongs to another sidecar. Restart the sidecar or reread the file.`;
  if (status === 403) return 'The sidecar refused the connection: it accepts loopback clients without an Origin header only.';
  if (status === 503) return 'The sidecar has too many connections; close some clients and try again.';
  return `The sidecar answered the handshake with HTTP ${status}.`;
}

function openSocket(url: string, token: string, headers: Record<string, string>, timeoutMs: number, source: string): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, {
      headers: { ...headers, Authorization: `Bearer ${token}` },
      handshakeTimeout: timeoutMs,
      maxPayload: 64 * DEFAULT_MAX_PAYLOAD,
      perMessageDeflate: false,
    });
    const fail = (error: Error) => {
      ws.removeAllListeners();
      ws.on('error', () => undefined);
      ws.terminate();
      reject(error);
    };
    ws.once('unexpected-response', (_request, response) => {
      fail(new SidecarRefusedError(response.statusCode ?? 0, refusalMessage(response.statusCode ?? 0, source)));
    });
    ws.once('error', (error: NodeJS.ErrnoException) => {
      if (error.code === 'ECONNREFUSED') {
        fail(new Error(`No sidecar listens on ${url} (from ${source}). Start one with \`node dist/sidecar.js --serve\`.`));
      } else {
        fail(error);
      }
    });
    ws.once('open', () => {
      ws.removeAllListeners();
      resolve(ws);
    });
  });
}

export async function connectSidecar(options: ConnectOptions = {}): Promise<SidecarClient> {
  const timeoutMs = options.timeoutMs ?? 5000;
  let port = options.port;
  let token = options.token;
  let source = 'the given token';
  if (port === undefined || token === undefined) {
    const tokenFile = options.tokenFile ?? defaultTokenFile();
    const content = await readTokenFile(tokenFile);
    if (!isProcessAlive(content.pid)) {
      throw new Error(`The sidecar that wrote ${tokenFile} (pid ${content.pid}) is not running. Start one with \`node dist/sidecar.js --serve\`.`);
    }
    port ??= content.port;
    token ??= content.token;
    source = tokenFile;
  }
  const url = `ws://${LOOPBACK_HOST}:${port}`;
  const ws = await openSocket(url, token, options.headers ?? {}, timeoutMs, source);
  ws.on('error', (error) => options.log?.('debug', `sidecar socket: ${error.message}`));

  // toSocket is typed for the DOM WebSocket; ws implements the same onmessage/onerror/onclose attributes.
  const socket = toSocket(ws as unknown as Parameters<typeof toSocket>[0]);
  const connection = createMessageConnection(new WebSocketMessageReader(socket), new WebSocketMessageWriter(socket), {
    error: (message) => options.log?.('error', message),
    warn: (message) => options.log?.('warn', message),
    info: (message) => options.log?.('debug', message),
    log: (message) => options.log?.('debug', message),
  });
  const closed = new Promise<void>((resolve) =>
    connection.onClose(() => {
      // Disposing rejects the requests still waiting for an answer, which would otherwise wait forever.
      connection.dispose();
      resolve();
    }),
  );
  connection.listen();

  const api = createApiClient(connection, async () => {
    if (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING) ws.close(1000);
    await withTimeout(closed, timeoutMs, 'Closing the sidecar connection').catch(() => ws.terminate());
    connection.dispose();
  });
  const client: SidecarClient = Object.assign(api, { url, closed });

  if (options.checkVersion ?? true) {
    try {
      const version = await withTimeout(client.version(), timeoutMs, 'Asking the sidecar for its version');
      if (version.protocol !== PROTOCOL_VERSION) {
        throw new Error(
          `The sidecar at ${url} speaks protocol ${version.protocol} (sidecar ${version.sidecar}); this client speaks ` +
            `${PROTOCOL_VERSION}. Use a matching build.`,
        );
      }
    } catch (error) {
      await client.dispose();
      throw error;
    }
  }
  return client;
}
