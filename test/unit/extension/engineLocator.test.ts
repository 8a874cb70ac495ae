import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { findOnPath } from '../../../src/engineLocator';

describe('findOnPath', () => {
  it('lists sd-cli, sd and sd-server in PATH order, without duplicates', () => {
    const files = new Set(['/usr/local/bin/sd-cli', '/opt/sd/sd-server', '/opt/sd/sd-cli', '/usr/local/bin/llama-server']);
    const found = findOnPath('image', '/usr/local/bin:/opt/sd::/usr/local/bin', 'linux', (candidate) => files.has(candidate));
    assert.deepEqual(found, ['/usr/local/bin/sd-cli', '/opt/sd/sd-cli', '/opt/sd/sd-server']);
    assert.deepEqual(
      findOnPath('llmServer', '/usr/local/bin:/opt/sd', 'linux', (candidate) => files.has(candidate)),
      ['/usr/local/bin/llama-server'],
    );
  });

  it('tries the PATHEXT extensions on Windows', () => {
    const files = new Set(['C:\\sd\\sd-cli.exe']);
    assert.deepEqual(
      findOnPath('image', 'C:\\tools;C:\\sd', 'win32', (candidate) => files.has(candidate), '.COM;.EXE'),
      ['C:\\sd\\sd-cli.exe'],
    );
  });
});
