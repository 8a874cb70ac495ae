import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { ResultPromise } from 'execa';
import { PROTOCOL_VERSION } from '../../../sidecar/protocol';
import { connectSidecar } from '../../../sidecar/transport/wsClient';

const repoRoot = fileURLToPath(new URL('../../..', import.meta.url));
const LISTENING = /^VRAM Relay sidecar listening on ws:\/\/127\.0\.0\.1:(\d+) \(token in (.+)\)$/;

const children: ResultPromise[] = [];

/** Wrapped in an object: the subprocess is itself a promise, which `await` would wait for. */
async function startSidecar(args: string[]): Promise<{ child: ResultPromise }> {
  // execa is ESM only: a dynamic import loads it whether tsx runs this file as CommonJS or as ESM.
  const { execa } = await import('execa');
  const child = execa(process.execPath, ['--import', 'tsx', 'sidecar/main.ts', ...args], {
    cwd: repoRoot,
    reject: false,
    timeout: 120_000,
    env: { VRAM_RELAY_LOG_LEVEL: 'debug' },
  });
  children.push(child);
  return { child };
}

/** The first stdout line, or a failure (with stderr) after `ms`. */
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

async function exited(child: ResultPromise, ms = 30_000): Promise<{ exitCode?: number; stderr: unknown }> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`the sidecar did not exit within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([child, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

describe('standalone sidecar (--serve) as a real process', () => {
  let root: string;
  before(() => {
    root = mkdtempSync(join(tmpdir(), 'vram-relay-serve-'));
  });
  after(async () => {
    for (const child of children) child.kill('SIGKILL');
    await Promise.allSettled(children);
    rmSync(root, { recursive: true, force: true });
  });

  it('serves version and getSnapshot to wsClient, then cleans up on SIGTERM', { timeout: 120_000 }, async () => {
    const tokenFile = join(root, 'state', 'sidecar.json');
    const { child } = await startSidecar(['--serve', '--port', '0', '--token-file', tokenFile, '--device', 'simulated']);
    const line = await firstLine(child);
    const match = LISTENING.exec(line);
    assert.ok(match, `unexpected first line: ${line}`);
    assert.equal(match[2], tokenFile);
    if (process.platform !== 'win32') assert.equal(statSync(tokenFile).mode & 0o777, 0o600);

    const client = await connectSidecar({ tokenFile, timeoutMs: 30_000 });
    assert.equal(client.url, `ws://127.0.0.1:${match[1]}`);
    const version = await client.version();
    assert.equal(version.protocol, PROTOCOL_VERSION);
    assert.match(version.sidecar, /^\d+\.\d+\.\d+/);
    const snapshot = await client.getSnapshot();
    assert.equal(snapshot.deviceSource, 'simulated');
    assert.equal(typeof snapshot.at, 'number');

    // A second server on the same token file must not take it over.
    const { child: second } = await startSidecar(['--serve', '--token-file', tokenFile]);
    const secondResult = await exited(second, 60_000);
    assert.equal(secondResult.exitCode, 1);
    assert.match(String(secondResult.stderr), /Another sidecar \(pid \d+\)/);
    assert.equal(existsSync(tokenFile), true);

    child.kill('SIGTERM');
    const result = await exited(child);
    assert.equal(result.exitCode, 0, String(result.stderr));
    assert.equal(existsSync(tokenFile), false);
    await client.closed;
    await client.dispose();
  });

  it('rejects a wrong command line with the usage and status 2', { timeout: 60_000 }, async () => {
    const { child } = await startSidecar(['--serve', '--port', 'many']);
    const result = await exited(child, 60_000);
    assert.equal(result.exitCode, 2);
    assert.match(String(result.stderr), /--port needs a whole number/);
    assert.match(String(result.stderr), /Usage:/);
  });
});
