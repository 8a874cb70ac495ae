/**
 * The standalone sidecar's API for other local apps: the same JSON-RPC methods as over IPC, on a WebSocket bound to
 * 127.0.0.1 only.
 *
 * Who may connect, checked during the HTTP upgrade (before any JSON-RPC is spoken):
 * - Host must name the loopback (`127.0.0.1`, `localhost`, `[::1]`) and our port, so a DNS-rebound name that a web
 *   page resolves to 127.0.0.1 is refused.
 * - Origin must be absent or in the allowlist (empty by default). Browsers always send Origin on WebSocket
 *   handshakes and Node clients do not, so no web page can drive the sidecar.
 * - `Authorization: Bearer <token>` must carry the token from the token file (0600, user-only). It is compared in
 *   constant time. The token is the only credential: a client that can read the file is the user.
 * Refusals are a bare 401 (no or wrong token), 403 (Host or Origin) or 503 (too many connections) with no body.
 */

import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { createServer } from 'node:http';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { createMessageConnection } from 'vscode-languageserver/node';
import type { Logger } from 'vscode-languageserver/node';
import { toSocket, WebSocketMessageReader, WebSocketMessageWriter } from 'vscode-ws-jsonrpc';
import { WebSocketServer } from 'ws';
import type { WebSocket } from 'ws';
import type { Log, SidecarApi } from '../api';
import { bindApi } from './protocolHandlers';
import { isProcessAlive, readTokenFile, removeTokenFile, writeTokenFile } from './tokenFile';

export const LOOPBACK_HOST = '127.0.0.1';
export const DEFAULT_MAX_PAYLOAD = 1024 * 1024;
export const DEFAULT_MAX_CONNECTIONS = 16;

export interface WsServerOptions {
  api: SidecarApi;
  /** Must be `127.0.0.1` (the default); anything else is refused. */
  host?: string;
  /** 0 (the default) picks a free port. */
  port?: number;
  /** Where `{port, token, pid}` is written for clients. */
  tokenFile: string;
  /** Origins allowed to connect, e.g. `vscode-webview://...`; empty by default: no browser page may connect. */
  allowedOrigins?: readonly string[];
  /** Largest incoming message, in bytes. */
  maxPayload?: number;
  maxConnections?: number;
  log?: Log;
}

export interface WsServer {
  readonly port: number;
  readonly url: string;
  readonly tokenFile: string;
  /** Number of open client connections. */
  connectionCount(): number;
  /** Closes the clients and the server and removes the token file. Safe to call twice. */
  close(): Promise<void>;
}

interface Refusal {
  status: 401 | 403 | 503;
  reason: string;
}

const STATUS_TEXT: Record<Refusal['status'], string> = {
  401: 'Unauthorized',
  403: 'Forbidden',
  503: 'Service Unavailable',
};

const LOOPBACK_HOSTNAMES = new Set(['127.0.0.1', 'localhost', '[::1]']);

function digest(value: string): Buffer {
  return createHash('sha256').update(value).digest();
}

/** Constant-time comparison: equal-length digests, so neither content nor length leaks through timing. */
function sameSecret(presented: string, expected: string): boolean {
  return timingSafeEqual(digest(presented), digest(expected));
}

function normalizeOrigin(origin: string): string {
  return origin.trim().toLowerCase().replace(/\/+$/, '');
}

function checkHost(host: string | undefined, port: number): string | undefined {
  if (!host) return 'no Host header';
  let url: URL;
  try {
    url = new URL(`http://${host}`);
  } catch {
    return 'malformed Host header';
  }
  if (!LOOPBACK_HOSTNAMES.has(url.hostname) || url.username || url.password || url.pathname !== '/') {
    return `Host ${JSON.stringify(host)} is not the loopback`;
  }
  if ((url.port || '80') !== String(port)) return `Host ${JSON.stringify(host)} names another port`;
  return undefined;
}

function refusalFor(request: IncomingMessage, port: number, token: string, allowedOrigins: Set<string>): Refusal | undefined {
  const hostProblem = checkHost(request.headers.host, port);
  if (hostProblem) return { status: 403, reason: hostProblem };
  // `Sec-WebSocket-Origin` is what very old clients sent instead of Origin.
  const origin = request.headers.origin ?? request.headers['sec-websocket-origin'];
  if (origin !== undefined) {
    const value = Array.isArray(origin) ? origin.join(',') : origin;
    if (!allowedOrigins.has(normalizeOrigin(value))) return { status: 403, reason: `Origin ${JSON.stringify(value)} is not allowed` };
  }
  const authorization = request.headers.authorization;
  if (!authorization) return { status: 401, reason: 'no Authorization header' };
  const match = /^Bearer[ \t]+([^\s]+)[ \t]*$/i.exec(authorization);
  if (!match) return { status: 401, reason: 'Authorization is not a Bearer token' };
  if (!sameSecret(match[1], token)) return { status: 401, reason: 'wrong token' };
  return undefined;
}

function refuse(socket: Duplex, status: Refusal['status']): void {
  socket.once('finish', () => socket.destroy());
  socket.end(`HTTP/1.1 ${status} ${STATUS_TEXT[status]}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
}

function jsonRpcLogger(log: Log | undefined): Logger {
  return {
    error: (message) => log?.('error', `ws json-rpc: ${message}`),
    warn: (message) => log?.('warn', `ws json-rpc: ${message}`),
    info: (message) => log?.('debug', `ws json-rpc: ${message}`),
    log: (message) => log?.('debug', `ws json-rpc: ${message}`),
  };
}

function checkPort(port: number): void {
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`Port ${port} is not a TCP port: use 0 (any free port) or 1-65535.`);
  }
}

/**
 * Starts the server, then writes the token file. Refuses to start when the token file belongs to another live
 * sidecar, so two servers never fight over one file.
 */
export async function startWsServer(options: WsServerOptions): Promise<WsServer> {
  const { api, log, tokenFile } = options;
  const host = options.host ?? LOOPBACK_HOST;
  if (host !== LOOPBACK_HOST) {
    throw new Error(
      `The sidecar's WebSocket API listens on ${LOOPBACK_HOST} only, not on ${host}: it must not be reachable from ` +
        'other machines. To use it from elsewhere, forward the port over SSH.',
    );
  }
  const requestedPort = options.port ?? 0;
  checkPort(requestedPort);
  const maxConnections = options.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
  const allowedOrigins = new Set((options.allowedOrigins ?? []).map(normalizeOrigin));

  const existing = await readTokenFile(tokenFile).catch(() => undefined);
  if (existing && existing.pid !== process.pid && isProcessAlive(existing.pid)) {
    throw new Error(
      `Another sidecar (pid ${existing.pid}) serves on port ${existing.port} with the token file ${tokenFile}. ` +
        'Stop it or pass --token-file with another path. If no sidecar runs, delete that file.',
    );
  }

  const token = randomBytes(32).toString('base64url');
  const http = createServer((_request, response) => {
    // Plain HTTP gets nothing: this server only speaks WebSocket.
    response.writeHead(426, { Connection: 'close', 'Content-Length': '0' }).end();
  });
  // A TCP-level cap as well, for sockets that never finish their handshake.
  http.maxConnections = maxConnections + 8;
  const wss = new WebSocketServer({ noServer: true, maxPayload: options.maxPayload ?? DEFAULT_MAX_PAYLOAD, perMessageDeflate: false });

  let port = requestedPort;
  http.on('upgrade', (request: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', (error) => log?.('debug', `ws handshake socket: ${error.message}`));
    const refusal =
      refusalFor(request, port, token, allowedOrigins) ??
      (wss.clients.size >= maxConnections ? { status: 503 as const, reason: `already ${wss.clients.size} connections` } : undefined);
    if (refusal) {
      log?.('warn', `refused a WebSocket client from ${request.socket.remoteAddress}: ${refusal.reason}`);
      refuse(socket, refusal.status);
      return;
    }
    wss.handleUpgrade(request, socket, head, (ws) => serveClient(ws));
  });

  function serveClient(ws: WebSocket): void {
    ws.on('error', (error) => log?.('debug', `ws client: ${error.message}`));
    // toSocket is typed for the DOM WebSocket; ws implements the same onmessage/onerror/onclose attributes.
    const socket = toSocket(ws as unknown as Parameters<typeof toSocket>[0]);
    const connection = createMessageConnection(
      new WebSocketMessageReader(socket),
      new WebSocketMessageWriter(socket),
      jsonRpcLogger(log),
    );
    const binding = bindApi(connection, api, { log });
    connection.onClose(() => {
      binding.dispose();
      connection.dispose();
      log?.('info', `WebSocket client left (${wss.clients.size} connected)`);
    });
    connection.listen();
    log?.('info', `WebSocket client connected (${wss.clients.size} connected)`);
  }

  await new Promise<void>((resolve, reject) => {
    http.once('error', reject);
    http.listen(requestedPort, LOOPBACK_HOST, () => {
      http.off('error', reject);
      resolve();
    });
  });
  const address = http.address();
  port = typeof address === 'object' && address ? address.port : requestedPort;
  http.on('error', (error) => log?.('error', `WebSocket server: ${error.message}`));

  try {
    await writeTokenFile(tokenFile, { port, token, pid: process.pid });
  } catch (error) {
    await new Promise<void>((resolve) => http.close(() => resolve()));
    throw new Error(`Could not write the token file ${tokenFile}: ${(error as Error).message}`);
  }

  let closing: Promise<void> | undefined;
  async function close(): Promise<void> {
    const clients = [...wss.clients];
    await Promise.all(
      clients.map(
        (client) =>
          new Promise<void>((resolve) => {
            if (client.readyState === client.CLOSED) return resolve();
            // Give each client a moment for the closing handshake, then cut it.
            const timer = setTimeout(() => {
              client.terminate();
              resolve();
            }, 1000);
            client.once('close', () => {
              clearTimeout(timer);
              resolve();
            });
            client.close(1001, 'sidecar shutting down');
          }),
      ),
    );
    wss.close();
    http.closeAllConnections();
    await new Promise<void>((resolve) => http.close(() => resolve()));
    await removeTokenFile(tokenFile, token);
    log?.('info', 'WebSocket server closed');
  }

  return {
    port,
    url: `ws://${LOOPBACK_HOST}:${port}`,
    tokenFile,
    connectionCount: () => wss.clients.size,
    close: () => (closing ??= close()),
  };
}
