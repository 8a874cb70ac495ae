/**
 * The loopback API of a real standalone sidecar (`sidecar/main.ts --serve`, a child process) refuses everyone but
 * a local client with the token: no token, a wrong or misplaced token, a browser Origin, a Host that is not the
 * loopback (DNS rebinding), a handshake without Host. It listens on 127.0.0.1 only: the machine's other addresses
 * are closed, and neither the command line nor the server accepts another bind address.
 *
 * (test/unit/transport/wsServer.test.ts checks the same rules in-process; this runs them against the shipped entry
 * point, plus the cases it does not cover.)
 */

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { networkInterfaces, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { ResultPromise } from 'execa';
import WebSocket from 'ws';
import { createFakeSidecarApi } from '../../unit/transport/fakeSidecarApi';
import { connectSidecar } from '../../../sidecar/transport/wsClient';
import { startWsServer } from '../../../sidecar/transport/wsServer';

const repoRoot = fileURLToPath(new URL('../../..', import.meta.url));
const LISTENING = /^VRAM Relay sidecar listening on ws:\/\/127\.0\.0\.1:(\d+) \(token in (.+)\)$/;

/** Wrapped in an object: the subprocess is itself a promise, which `await` would wait for. */
async function startSidecar(args: string[]): Promise<{ child: ResultPromise }> {
  const { execa } = await import('execa');
  const child = execa(process.execPath, ['--import', 'tsx', 'sidecar/main.ts', ...args], { cwd: repoRoot, reject: false, timeout: 120_000 });
  return { child };
}

function firstLine(child: ResultPromise, ms = 60_000): Promise<string> {
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const lines = createInterface({ input: child.stdout! });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no listening line within ${ms} ms; stderr:\n${stderr}`)), ms);
    lines.once('line', (line) => {
      clearTimeout(timer);
      resolve(line);
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`sidecar exited with ${code} before listening; stderr:\n${stderr}`));
    });
  });
}

/** Outcome of one handshake: 101 when accepted, else the HTTP status of the refusal. */
function handshake(url: string, headers: Record<string, string>, protocols?: string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, protocols, { headers, handshakeTimeout: 10_000 });
    ws.once('unexpected-response', (_request, response) => {
      resolve(response.statusCode ?? 0);
      ws.terminate();
    });
    ws.once('open', () => {
      resolve(101);
      ws.close();
    });
    ws.on('error', reject);
  });
}

/** Sends a raw upgrade request and returns the status line of the answer. */
function rawHandshake(port: number, request: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => socket.write(request));
    let answer = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no answer to the raw handshake; got ${JSON.stringify(answer)}`));
    }, 10_000);
    socket.on('data', (chunk) => {
      answer += chunk.toString('latin1');
      if (answer.includes('\r\n')) {
        clearTimeout(timer);
        socket.destroy();
        resolve(answer.split('\r\n')[0]);
      }
    });
    socket.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
}

/** Whether a TCP connection to `host:port` is refused (nothing listens there). */
function connectionRefused(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port, timeout: 5000 });
    socket.once('connect', () => {
      socket.destroy();
      resolve(false);
    });
    socket.once('timeout', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(true));
  });
}

const lanAddresses = Object.values(networkInterfaces())
  .flat()
  .filter((address): address is NonNullable<typeof address> => !!address && !address.internal && address.family === 'IPv4')
  .map((address) => address.address);

describe('loopback API of a real standalone sidecar: who is refused', () => {
  let root: string;
  let child: ResultPromise;
  let port: number;
  let token: string;
  let url: string;

  before(async () => {
    root = mkdtempSync(join(tmpdir(), 'vram-relay-refusals-'));
    const tokenFile = join(root, 'state', 'sidecar.json');
    ({ child } = await startSidecar(['--serve', '--port', '0', '--token-file', tokenFile, '--device', 'simulated']));
    const match = LISTENING.exec(await firstLine(child));
    assert.ok(match, 'the sidecar announces where it listens');
    port = Number(match[1]);
    url = `ws://127.0.0.1:${port}`;
    token = (JSON.parse(readFileSync(tokenFile, 'utf8')) as { token: string }).token;
  });

  after(async () => {
    child?.kill('SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([child, new Promise((resolve) => (timer = setTimeout(resolve, 20_000)))]);
    clearTimeout(timer);
    child?.kill('SIGKILL');
    rmSync(root, { recursive: true, force: true });
  });

  it('accepts the right token from a local client (the baseline the refusals differ from)', { timeout: 30_000 }, async () => {
    assert.equal(await handshake(url, { Authorization: `Bearer ${token}` }), 101);
    const client = await connectSidecar({ port, token, timeoutMs: 20_000 });
    assert.equal((await client.getSnapshot()).deviceSource, 'simulated');
    await client.dispose();
  });

  it('refuses no token, a wrong token, and a token in the wrong place with 401', { timeout: 30_000 }, async () => {
    assert.equal(await handshake(url, {}), 401, 'no token');
    assert.equal(await handshake(url, { Authorization: 'Bearer ' }), 401, 'empty token');
    assert.equal(await handshake(url, { Authorization: `Bearer ${token}x` }), 401, 'token with a suffix');
    assert.equal(await handshake(url, { Authorization: `Bearer ${token.slice(1)}` }), 401, 'token without its first character');
    assert.equal(await handshake(url, { Authorization: `Bearer ${token} ${token}` }), 401, 'two tokens');
    assert.equal(await handshake(url, { Authorization: `Token ${token}` }), 401, 'another scheme');
    assert.equal(await handshake(`${url}/?token=${token}`, {}), 401, 'token in the query string');
    assert.equal(await handshake(url, {}, [token]), 401, 'token as a subprotocol');
  });

  it('refuses a browser Origin with 403, even with the right token', { timeout: 30_000 }, async () => {
    const auth = { Authorization: `Bearer ${token}` };
    for (const origin of ['https://evil.example', `http://127.0.0.1:${port}`, `http://localhost:${port}`, 'null', 'file://', 'vscode-webview://abc']) {
      assert.equal(await handshake(url, { ...auth, Origin: origin }), 403, origin);
    }
  });

  it('refuses a Host that is not the loopback and our port with 403, even with the right token', { timeout: 30_000 }, async () => {
    const auth = { Authorization: `Bearer ${token}` };
    const hosts = [
      `evil.example:${port}`,
      `127.0.0.1.evil.example:${port}`,
      `localhost.evil.example:${port}`,
      `0.0.0.0:${port}`,
      `127.0.0.2:${port}`,
      `${lanAddresses[0] ?? '192.168.1.10'}:${port}`,
      `user@127.0.0.1:${port}`,
      `127.0.0.1:${port + 1}`,
      '127.0.0.1',
    ];
    for (const host of hosts) assert.equal(await handshake(url, { ...auth, Host: host }), 403, host);
  });

  it('refuses a handshake without a Host header', { timeout: 30_000 }, async () => {
    const status = await rawHandshake(
      port,
      `GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer ${token}\r\n\r\n`,
    );
    assert.match(status, /^HTTP\/1\.1 4\d\d /);
  });

  it('is not reachable on the machine\'s other addresses, nor on IPv6 loopback', { timeout: 30_000 }, async () => {
    for (const address of lanAddresses) assert.equal(await connectionRefused(address, port), true, address);
    assert.equal(await connectionRefused('::1', port), true, '::1');
    assert.equal(await connectionRefused('127.0.0.1', port), false, 'but 127.0.0.1 answers');
  });
});

describe('loopback API: no bind address other than 127.0.0.1', () => {
  it('the command line has no way to name one', { timeout: 120_000 }, async () => {
    const root = mkdtempSync(join(tmpdir(), 'vram-relay-bind-'));
    try {
      for (const args of [['--host', '0.0.0.0'], ['--listen', '0.0.0.0:8080'], ['--bind', '192.168.1.10']]) {
        const { child } = await startSidecar(['--serve', '--token-file', join(root, 'sidecar.json'), ...args]);
        const result = await child;
        assert.equal(result.exitCode, 2, `${args.join(' ')}: ${String(result.stderr)}`);
        assert.match(String(result.stderr), /Unknown option '--(host|listen|bind)'/);
        assert.match(String(result.stderr), /Usage:/);
      }
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  it('the server refuses every other address, and writes no token file', { timeout: 30_000 }, async () => {
    const root = mkdtempSync(join(tmpdir(), 'vram-relay-bind-'));
    try {
      const api = createFakeSidecarApi();
      for (const host of ['0.0.0.0', '::', '::1', 'localhost', '::ffff:127.0.0.1', ...lanAddresses, '192.168.1.10', '']) {
        const tokenFile = join(root, 'sidecar.json');
        await assert.rejects(startWsServer({ api, host, tokenFile }), /listens on 127\.0\.0\.1 only.*forward the port over SSH/, JSON.stringify(host));
        assert.throws(() => readFileSync(tokenFile), /ENOENT/);
      }
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});
