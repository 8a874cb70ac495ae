import { after, afterEach, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';
import { ResponseError } from 'vscode-languageserver/node';
import { SIDECAR_VERSION } from '../../../sidecar/api';
import { PROTOCOL_VERSION, SnapshotNotification } from '../../../sidecar/protocol';
import type { SidecarSnapshot } from '../../../sidecar/protocol';
import { connectSidecar, SidecarRefusedError } from '../../../sidecar/transport/wsClient';
import type { SidecarClient } from '../../../sidecar/transport/wsClient';
import { startWsServer } from '../../../sidecar/transport/wsServer';
import type { WsServer, WsServerOptions } from '../../../sidecar/transport/wsServer';
import { createFakeSidecarApi, FAKE_SNAPSHOT, until } from './fakeSidecarApi';
import type { FakeSidecarApi } from './fakeSidecarApi';

const posix = process.platform !== 'win32';

/** Outcome of one raw handshake: 101 when the server accepted, else the HTTP status it answered. */
function handshake(port: number, headers: Record<string, string>): Promise<number> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}`, { headers, handshakeTimeout: 5000 });
    ws.once('unexpected-response', (_request, response) => {
      resolve(response.statusCode ?? 0);
      ws.terminate();
    });
    ws.once('open', () => {
      resolve(101);
      ws.close();
    });
    ws.on('error', (error) => reject(error));
  });
}

describe('WebSocket server', () => {
  let root: string;
  let api: FakeSidecarApi;
  let server: WsServer;
  let tokenFile: string;
  let token: string;
  const clients: SidecarClient[] = [];
  const servers: WsServer[] = [];

  async function start(options: Partial<WsServerOptions> = {}): Promise<WsServer> {
    const started = await startWsServer({ api, tokenFile: join(root, `state-${servers.length}`, 'sidecar.json'), ...options });
    servers.push(started);
    return started;
  }

  before(async () => {
    root = mkdtempSync(join(tmpdir(), 'vram-relay-ws-'));
    api = createFakeSidecarApi();
    server = await start();
    tokenFile = server.tokenFile;
    token = (JSON.parse(readFileSync(tokenFile, 'utf8')) as { token: string }).token;
  });

  afterEach(async () => {
    await Promise.all(clients.splice(0).map((client) => client.dispose()));
  });

  after(async () => {
    await Promise.all(servers.map((s) => s.close()));
    rmSync(root, { recursive: true, force: true });
  });

  it('writes {port, token, pid} to a user-only token file', { skip: !posix && 'file modes are POSIX only' }, () => {
    const content = JSON.parse(readFileSync(tokenFile, 'utf8')) as { port: number; token: string; pid: number };
    assert.equal(content.port, server.port);
    assert.equal(content.pid, process.pid);
    // 32 random bytes in base64url.
    assert.match(content.token, /^[A-Za-z0-9_-]{43}$/);
    assert.equal(statSync(tokenFile).mode & 0o777, 0o600);
    assert.equal(statSync(join(tokenFile, '..')).mode & 0o777, 0o700);
  });

  it('refuses a client without a token with a bare 401', { timeout: 20_000 }, async () => {
    assert.equal(await handshake(server.port, {}), 401);
    assert.equal(server.connectionCount(), 0);
  });

  it('refuses a wrong token with 401, whatever its length', { timeout: 20_000 }, async () => {
    assert.equal(await handshake(server.port, { Authorization: 'Bearer nope' }), 401);
    const sameLength = token.slice(0, -1) + (token.endsWith('A') ? 'B' : 'A');
    assert.equal(await handshake(server.port, { Authorization: `Bearer ${sameLength}` }), 401);
    assert.equal(await handshake(server.port, { Authorization: `Basic ${token}` }), 401);
  });

  it('accepts the right token and serves version and getSnapshot over JSON-RPC', { timeout: 20_000 }, async () => {
    const client = await connectSidecar({ tokenFile });
    clients.push(client);
    assert.deepEqual(await client.version(), { protocol: PROTOCOL_VERSION, sidecar: SIDECAR_VERSION });
    assert.deepEqual(await client.getSnapshot(), FAKE_SNAPSHOT);
    assert.equal(server.connectionCount(), 1);
  });

  it('refuses a browser page: an Origin header gets 403 even with the right token', { timeout: 20_000 }, async () => {
    const auth = { Authorization: `Bearer ${token}` };
    assert.equal(await handshake(server.port, { ...auth, Origin: 'https://evil.example' }), 403);
    assert.equal(await handshake(server.port, { ...auth, Origin: 'null' }), 403);
    assert.equal(await handshake(server.port, { ...auth, Origin: 'http://127.0.0.1' }), 403);
  });

  it('refuses a Host that is not the loopback (DNS rebinding) with 403', { timeout: 20_000 }, async () => {
    const auth = { Authorization: `Bearer ${token}` };
    assert.equal(await handshake(server.port, { ...auth, Host: 'evil.example' }), 403);
    assert.equal(await handshake(server.port, { ...auth, Host: `evil.example:${server.port}` }), 403);
    assert.equal(await handshake(server.port, { ...auth, Host: `127.0.0.1:${server.port + 1}` }), 403);
    assert.equal(await handshake(server.port, { ...auth, Host: `localhost:${server.port}` }), 101);
  });

  it('reports a refusal to wsClient callers as SidecarRefusedError with the status', { timeout: 20_000 }, async () => {
    await assert.rejects(connectSidecar({ port: server.port, token: 'wrong' }), (error: unknown) => {
      assert.ok(error instanceof SidecarRefusedError);
      assert.equal(error.status, 401);
      return true;
    });
    await assert.rejects(connectSidecar({ tokenFile, headers: { Origin: 'https://evil.example' } }), (error: unknown) => {
      assert.ok(error instanceof SidecarRefusedError);
      assert.equal(error.status, 403);
      return true;
    });
  });

  it('lets an allowlisted origin in and no other', { timeout: 20_000 }, async () => {
    const allowing = await start({ allowedOrigins: ['vscode-webview://panel'] });
    const { token: allowingToken } = JSON.parse(readFileSync(allowing.tokenFile, 'utf8')) as { token: string };
    const auth = { Authorization: `Bearer ${allowingToken}` };
    assert.equal(await handshake(allowing.port, { ...auth, Origin: 'vscode-webview://panel' }), 101);
    assert.equal(await handshake(allowing.port, { ...auth, Origin: 'vscode-webview://other' }), 403);
  });

  it('refuses to bind to anything but 127.0.0.1', { timeout: 20_000 }, async () => {
    await assert.rejects(startWsServer({ api, host: '0.0.0.0', tokenFile: join(root, 'never', 'sidecar.json') }), /127\.0\.0\.1 only/);
    await assert.rejects(startWsServer({ api, host: 'localhost', tokenFile: join(root, 'never', 'sidecar.json') }), /127\.0\.0\.1 only/);
    assert.equal(existsSync(join(root, 'never')), false);
  });

  it('answers plain HTTP with 426 and nothing else', { timeout: 20_000 }, async () => {
    const { status, body } = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port: server.port, path: '/' }, (response) => {
        let body = '';
        response.on('data', (chunk: Buffer) => (body += chunk.toString()));
        response.on('end', () => resolve({ status: response.statusCode ?? 0, body }));
      });
      req.on('error', reject);
      req.end();
    });
    assert.equal(status, 426);
    assert.equal(body, '');
  });

  it('forwards notifications to connected clients', { timeout: 20_000 }, async () => {
    const client = await connectSidecar({ tokenFile });
    clients.push(client);
    const received: SidecarSnapshot[] = [];
    client.on(SnapshotNotification, (snapshot) => received.push(snapshot));
    api.emit(SnapshotNotification, { ...FAKE_SNAPSHOT, at: 42 });
    await until(() => received.length === 1, 5000, 'snapshot notification');
    assert.equal(received[0].at, 42);
  });

  it('answers errors as JSON-RPC errors: unknown method, bad params, a failing call', { timeout: 20_000 }, async () => {
    const client = await connectSidecar({ tokenFile });
    clients.push(client);
    const unknown = (client as unknown as { request(method: string): Promise<unknown> }).request('vramRelay/noSuchThing');
    await assert.rejects(unknown, (error: unknown) => error instanceof ResponseError && error.code === -32601);
    await assert.rejects(
      client.request('vramRelay/cancelJob', { jobId: 42 } as unknown as { jobId: string }),
      (error: unknown) => error instanceof ResponseError && error.code === -32602 && /jobId must be a string/.test(error.message),
    );
    const spec = { kind: 'image', modelPath: '/models/missing.gguf', prompt: 'a cat', width: 512, height: 512, batch: 1, steps: 20, seed: 1, outputPath: '/tmp/x.png' } as const;
    await assert.rejects(
      client.previewPlan({ spec }),
      (error: unknown) => error instanceof ResponseError && error.code === -32803 && /No model at \/models\/missing\.gguf/.test(error.message),
    );
  });

  it('aborts a pending waitJob when its client goes away', { timeout: 20_000 }, async () => {
    const client = await connectSidecar({ tokenFile });
    const waiting = client.waitJob({ jobId: 'job-1' });
    waiting.catch(() => undefined);
    await until(() => api.waitSignals.length === 1, 5000, 'waitJob call');
    await client.dispose();
    await until(() => api.waitSignals[0]?.aborted === true, 5000, 'abort of the wait');
    await until(() => server.connectionCount() === 0, 5000, 'server noticing the close');
  });

  it('limits the number of connections (503) and the message size', { timeout: 20_000 }, async () => {
    const small = await start({ maxConnections: 1, maxPayload: 1024 });
    const first = await connectSidecar({ tokenFile: small.tokenFile });
    clients.push(first);
    await assert.rejects(connectSidecar({ tokenFile: small.tokenFile }), (error: unknown) => error instanceof SidecarRefusedError && error.status === 503);
    // An oversized message closes that connection (1009) instead of being parsed.
    await first.request('vramRelay/getDecisions', { jobId: 'x'.repeat(4096) }).catch(() => undefined);
    await first.closed;
    await until(() => small.connectionCount() === 0, 5000, 'oversized client dropped');
  });

  it('refuses to take over the token file of another live sidecar, and replaces a stale one', { timeout: 20_000 }, async () => {
    const dir = join(root, 'taken');
    mkdirSync(dir, { recursive: true });
    const file = join(dir, 'sidecar.json');
    // Our parent process is alive and is not us.
    writeFileSync(file, JSON.stringify({ port: 1, token: 'x', pid: process.ppid }));
    await assert.rejects(start({ tokenFile: file }), /Another sidecar \(pid \d+\)/);
    const dead = spawnSync(process.execPath, ['-e', '0']).pid;
    writeFileSync(file, JSON.stringify({ port: 1, token: 'x', pid: dead }));
    const replacing = await start({ tokenFile: file });
    assert.equal((JSON.parse(readFileSync(file, 'utf8')) as { pid: number }).pid, process.pid);
    await replacing.close();
  });

  it('removes the token file on close, closes its clients, and can be closed twice', { timeout: 20_000 }, async () => {
    const closing = await start();
    const client = await connectSidecar({ tokenFile: closing.tokenFile });
    assert.equal(existsSync(closing.tokenFile), true);
    await closing.close();
    await closing.close();
    assert.equal(existsSync(closing.tokenFile), false);
    await client.closed;
    await client.dispose();
    await assert.rejects(connectSidecar({ port: closing.port, token: 'x', timeoutMs: 2000 }), /No sidecar listens/);
  });
});
