import assert from 'node:assert/strict';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ERROR_ACTIONS, errorButtons, FIND_ENGINES, SHOW_LOGS } from '../../../src/errorActions';
import { probeSdBinary, SdBinaryError } from '../../../sidecar/workers/sd/sdHelp';

describe('error buttons', () => {
  it('offers Find Engines for the image engine when the failure names the binary setting', () => {
    const message =
      'The stable-diffusion.cpp binary /opt/sd/sd-cli was not found: set vramRelay.image.binaryPath to the sd-cli (or sd / sd-server) binary of a stable-diffusion.cpp release.';
    assert.deepEqual(errorButtons(message, ['Show Budget Panel']), ['Show Budget Panel', FIND_ENGINES, SHOW_LOGS]);
    assert.deepEqual(ERROR_ACTIONS[FIND_ENGINES], { command: 'vramRelay.findEngines', args: ['image'] });
  });

  it('offers it for what the sidecar says about a missing or unset binary', { timeout: 15_000 }, async () => {
    for (const binary of ['', join(tmpdir(), 'vram-relay-no-such-dir', 'sd-cli')]) {
      const error = await probeSdBinary(binary, { timeoutMs: 5_000 }).then(
        () => assert.fail(`${binary} was accepted`),
        (e: unknown) => e,
      );
      assert.ok(error instanceof SdBinaryError);
      assert.ok(errorButtons(error.message).includes(FIND_ENGINES), error.message);
    }
  });

  it('leaves other failures with the caller buttons and Show Logs', () => {
    assert.deepEqual(errorButtons('The model file is missing: set vramRelay.image.modelPath.', ['Show Budget Panel']), ['Show Budget Panel', SHOW_LOGS]);
    assert.deepEqual(errorButtons('out of memory'), [SHOW_LOGS]);
    assert.deepEqual(errorButtons('set vramRelay.image.binaryPath', [FIND_ENGINES]), [FIND_ENGINES, SHOW_LOGS]);
  });

  it('runs a command for every button a caller passes', () => {
    for (const button of ['Show Budget Panel', 'Restart Sidecar', 'Select Models', FIND_ENGINES]) assert.ok(ERROR_ACTIONS[button], button);
    assert.equal(ERROR_ACTIONS[SHOW_LOGS], undefined);
  });
});
