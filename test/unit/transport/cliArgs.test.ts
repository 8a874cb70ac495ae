import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseCommand, UsageError } from '../../../sidecar/transport/cliArgs';
import { createStderrLog } from '../../../sidecar/transport/stderrLog';
import { defaultStateDir, readTokenFile, removeTokenFile, writeTokenFile } from '../../../sidecar/transport/tokenFile';

describe('sidecar command line', () => {
  it('serves over IPC when started by vscode-languageclient', () => {
    assert.equal(parseCommand(['--node-ipc', '--clientProcessId=123'], true, {}).mode, 'ipc');
    // Forked without the flag but with an IPC channel: still the extension's child.
    assert.equal(parseCommand([], true, {}).mode, 'ipc');
    assert.equal(parseCommand(['--serve'], true, {}).mode, 'serve');
  });

  it('reads --serve options, with a random port and the per-user token file by default', () => {
    const command = parseCommand(['--serve'], false, {});
    assert.equal(command.mode, 'serve');
    if (command.mode !== 'serve') return;
    assert.equal(command.options.port, 0);
    assert.equal(command.options.device, 'auto');
    assert.equal(command.options.tokenFile, join(defaultStateDir(), 'sidecar.json'));
    assert.deepEqual(command.options.allowedOrigins, []);

    const given = parseCommand(
      ['--serve', '--port', '7077', '--token-file', '/tmp/t.json', '--device', 'simulated', '--allow-origin', 'a', '--allow-origin', 'b', '--log-level', 'debug'],
      false,
      {},
    );
    assert.deepEqual(given.mode === 'serve' && given.options, {
      port: 7077,
      tokenFile: '/tmp/t.json',
      device: 'simulated',
      simulatedCapacityMiB: 12288,
      allowedOrigins: ['a', 'b'],
      logLevel: 'debug',
    });
  });

  it('explains command line mistakes', () => {
    assert.throws(() => parseCommand([], false, {}), (e: unknown) => e instanceof UsageError && /pass --serve/.test(e.message));
    assert.throws(() => parseCommand(['--serve', '--port', '70000'], false, {}), /--port needs a whole number from 0 to 65535, not '70000'/);
    assert.throws(() => parseCommand(['--serve', '--device', 'gpu'], false, {}), /--device must be 'auto' or 'simulated'/);
    assert.throws(() => parseCommand(['--serve', '--frobnicate'], false, {}), UsageError);
    assert.throws(() => parseCommand(['--serve'], false, { VRAM_RELAY_LOG_LEVEL: 'loud' }), /Unknown log level 'loud'/);
    assert.equal(parseCommand(['--help'], false, {}).mode, 'help');
  });
});

describe('per-user state folder', () => {
  it('follows XDG on Linux, ignoring a relative XDG_STATE_HOME', () => {
    assert.equal(defaultStateDir('linux', {}, '/home/ada'), '/home/ada/.local/state/vram-relay');
    assert.equal(defaultStateDir('linux', { XDG_STATE_HOME: '/var/ada' }, '/home/ada'), '/var/ada/vram-relay');
    assert.equal(defaultStateDir('linux', { XDG_STATE_HOME: 'rel' }, '/home/ada'), '/home/ada/.local/state/vram-relay');
  });

  it('uses Application Support on macOS and LOCALAPPDATA on Windows', () => {
    assert.equal(defaultStateDir('darwin', {}, '/Users/ada'), '/Users/ada/Library/Application Support/vram-relay');
    assert.equal(defaultStateDir('win32', { LOCALAPPDATA: 'C:/Users/ada/AppData/Local' }, 'C:/Users/ada'), join('C:/Users/ada/AppData/Local', 'vram-relay'));
  });
});

describe('token file', () => {
  it('writes atomically (no temporary left), reads back, and is only removed by its owner', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vram-relay-token-'));
    try {
      const file = join(dir, 'a', 'b', 'sidecar.json');
      await writeTokenFile(file, { port: 1234, token: 'tok', pid: 42 });
      await writeTokenFile(file, { port: 1235, token: 'tok2', pid: 42 });
      assert.deepEqual(readdirSync(join(dir, 'a', 'b')), ['sidecar.json']);
      assert.deepEqual(await readTokenFile(file), { port: 1235, token: 'tok2', pid: 42 });
      await removeTokenFile(file, 'tok');
      assert.deepEqual(readdirSync(join(dir, 'a', 'b')), ['sidecar.json']);
      await removeTokenFile(file, 'tok2');
      assert.deepEqual(readdirSync(join(dir, 'a', 'b')), []);
      await assert.rejects(readTokenFile(file), /No sidecar token file at .*Start the sidecar/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('stderr log', () => {
  it('drops lines above the level and prefixes the level', () => {
    const lines: string[] = [];
    const log = createStderrLog({ level: 'info', timestamps: false, write: (line) => lines.push(line) });
    log('debug', 'hidden');
    log('info', 'shown');
    log('error', 'bad');
    assert.deepEqual(lines, ['[info] shown\n', '[error] bad\n']);
  });
});
