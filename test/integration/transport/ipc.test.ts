import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { fork } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { createMessageConnection, IPCMessageReader, IPCMessageWriter } from 'vscode-languageserver/node';
import type { MessageConnection } from 'vscode-languageserver/node';
import { PROTOCOL_VERSION } from '../../../sidecar/protocol';

const repoRoot = fileURLToPath(new URL('../../..', import.meta.url));
const children: ChildProcess[] = [];

/** Starts the sidecar the way vscode-languageclient does with TransportKind.ipc, and speaks to it from this side. */
function startOverIpc(): { child: ChildProcess; connection: MessageConnection; output: { stdout: string; stderr: string; logMessages: string[] } } {
  const child = fork('sidecar/main.ts', ['--node-ipc', `--clientProcessId=${process.pid}`], {
    cwd: repoRoot,
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  });
  children.push(child);
  const output = { stdout: '', stderr: '', logMessages: [] as string[] };
  child.stdout?.on('data', (chunk: Buffer) => (output.stdout += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (output.stderr += chunk.toString()));
  const connection = createMessageConnection(new IPCMessageReader(child), new IPCMessageWriter(child));
  // Log lines come as window/logMessage (type 1 error .. 4 log), so the extension shows each at its level.
  connection.onNotification('window/logMessage', (params: { type: number; message: string }) => {
    output.logMessages.push(`${params.type} ${params.message}`);
  });
  connection.listen();
  return { child, connection, output };
}

function exitCode(child: ChildProcess, ms = 30_000): Promise<number | null> {
  if (child.exitCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the sidecar did not exit within ${ms} ms`)), ms);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve(code);
    });
  });
}

function initialize(connection: MessageConnection) {
  return connection.sendRequest('initialize', {
    processId: process.pid,
    clientInfo: { name: 'ipc-test', version: '1' },
    rootUri: null,
    capabilities: {},
  }) as Promise<{ capabilities: Record<string, unknown>; serverInfo?: { name: string; version?: string } }>;
}

describe('sidecar over IPC (the extension link)', () => {
  after(() => {
    for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
  });

  it('answers initialize and vramRelay requests, keeps stdout clean, and exits 0 after shutdown + exit', { timeout: 120_000 }, async () => {
    const { child, connection, output } = startOverIpc();
    const init = await initialize(connection);
    assert.equal(init.serverInfo?.name, 'vram-relay-sidecar');
    // No language features: only the text sync default that vscode-languageserver always fills in.
    assert.deepEqual(Object.keys(init.capabilities).filter((key) => key !== 'textDocumentSync'), []);
    await connection.sendNotification('initialized', {});

    const version = (await connection.sendRequest('vramRelay/version')) as { protocol: number; sidecar: string };
    assert.equal(version.protocol, PROTOCOL_VERSION);
    assert.equal(version.sidecar, init.serverInfo?.version);
    const snapshot = (await connection.sendRequest('vramRelay/getSnapshot')) as { at: number; devices: unknown[] };
    assert.equal(typeof snapshot.at, 'number');
    assert.ok(Array.isArray(snapshot.devices));

    await connection.sendRequest('shutdown');
    await connection.sendNotification('exit');
    assert.equal(await exitCode(child), 0, output.stderr);
    connection.dispose();
    assert.equal(output.stdout, '');
    assert.ok(
      output.logMessages.some((line) => /^3 connected to ipc-test 1 over IPC/.test(line)),
      `log messages: ${output.logMessages.join(' | ')}`,
    );
    assert.doesNotMatch(output.stderr, /connected to ipc-test/);
  });

  it('exits on its own when the IPC channel closes (the extension host died)', { timeout: 120_000 }, async () => {
    const { child, connection, output } = startOverIpc();
    await initialize(connection);
    connection.dispose();
    child.disconnect();
    assert.equal(await exitCode(child), 1, output.stderr);
    assert.match(output.stderr, /IPC channel closed/);
  });
});
