/**
 * Requests that are well formed but point at the wrong things: a model file that is missing, a folder, or not a
 * model at all; an engine binary that is not sd.cpp; an output folder outside the workspace. Each ends as a failed
 * job (or a refusal) whose message names the culprit and says what to do.
 */

import { after, afterEach, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FULL_SD_CAPABILITIES, type Plan } from '../../../sidecar/core/types';
import { ModelCosts } from '../../../sidecar/service/costs';
import { SdCliRunner } from '../../../sidecar/workers/sd/sdCliRunner';
import { isInside, resolveOutputFolder } from '../../../src/outputPath';
import { imageSpec, makeRig, within, type Rig } from '../arbiterHarness';
import { ADVICE } from './advice';

const posix = process.platform !== 'win32';

let root: string;
before(() => {
  root = mkdtempSync(join(tmpdir(), 'vram-relay-bad-files-'));
});
after(() => {
  rmSync(root, { recursive: true, force: true });
});

describe('bad model files, through the arbiter and the real header readers', () => {
  let rig: Rig | undefined;
  afterEach(() => {
    rig?.dispose();
    rig = undefined;
  });

  /** An arbiter whose image figures come from the real model readers (the runner is the in-process fake). */
  function rigWithRealCosts(): Rig {
    const costs = new ModelCosts(() => undefined);
    return makeRig({ arbiter: { costs: { image: (spec) => costs.image(spec, FULL_SD_CAPABILITIES), llm: async () => null } } });
  }

  const cases: [string, () => string, RegExp][] = [
    ['a missing model file', () => join(root, 'absent.safetensors'), /Model file not found: .*absent\.safetensors\. Check the path/],
    ['a folder', () => (mkdirSync(join(root, 'folder.gguf'), { recursive: true }), join(root, 'folder.gguf')), /folder\.gguf is not a file: pick a/],
    ['a text file renamed .safetensors', () => write('notes.safetensors', 'Shopping list: eggs, milk.\n'), /notes\.safetensors is not a safetensors model file .*: pick a \.safetensors or \.gguf/],
    ['a text file renamed .gguf', () => write('notes.gguf', 'Shopping list: eggs, milk.\n'), /notes\.gguf is not a safetensors model file/],
    ['an empty .gguf', () => write('empty.gguf', ''), /empty\.gguf is not a safetensors model file/],
    ['a GGUF cut after its magic', () => write('cut.gguf', Buffer.from('GGUF\x03\x00\x00\x00')), /cut\.gguf is truncated: .*download the model again/],
    ['a pickled checkpoint', () => write('old.ckpt', Buffer.from('PK\x03\x04 pickled torch zip')), /pickled PyTorch checkpoint .*: use the \.safetensors or \.gguf version/],
  ];

  function write(name: string, content: string | Buffer): string {
    const path = join(root, name);
    writeFileSync(path, content);
    return path;
  }

  for (const [what, make, expected] of cases) {
    it(`fails a job on ${what} with a message that says what to do`, { timeout: 20_000 }, async () => {
      const modelPath = make();
      rig = rigWithRealCosts();
      const job = rig.arbiter.submit(imageSpec({ modelPath }));
      const done = await within(rig.arbiter.waitFor(job.id), 10_000);
      assert.equal(done.job.status, 'failed');
      assert.match(done.job.message ?? '', expected);
      assert.match(done.job.message ?? '', ADVICE);
      assert.equal(rig.image.runs.length, 0, 'nothing was run');
    });
  }

  it('says which split part is missing', { timeout: 20_000 }, async () => {
    rig = rigWithRealCosts();
    const checkpoint = write('model.safetensors', 'not a model either');
    const job = rig.arbiter.submit(imageSpec({ modelPath: checkpoint, parts: { vae: join(root, 'no-vae.safetensors') } }));
    const done = await within(rig.arbiter.waitFor(job.id), 10_000);
    assert.equal(done.job.status, 'failed');
    assert.match(done.job.message ?? '', /model\.safetensors|no-vae\.safetensors/);
    assert.match(done.job.message ?? '', ADVICE);
  });
});

describe('an engine binary that is not sd.cpp', { skip: !posix && 'shell scripts and file modes are POSIX only' }, () => {
  const plan = { jobId: 'j', deviceId: 'sim:0', fits: true, yields: [], stages: [], peak: 0, available: 0, extraTimeMs: 0, reason: '', suggestions: [] } as Plan;

  function script(name: string, body: string, mode = 0o755): string {
    const path = join(root, name);
    writeFileSync(path, `#!/bin/sh\n${body}\n`);
    chmodSync(path, mode);
    return path;
  }

  async function failureOf(binaryPath: string): Promise<string> {
    const runner = new SdCliRunner({ binaryPath });
    const result = await within(runner.run(imageSpec({ outputPath: join(root, 'out', 'x.png') }), plan, () => undefined, new AbortController().signal), 20_000, 'the runner');
    assert.equal(result.ok, false);
    assert.ok(!result.ok && result.failure === 'input', JSON.stringify(result));
    return result.ok ? '' : result.message;
  }

  const binaries: [string, () => string, RegExp][] = [
    ['/bin/ls', () => '/bin/ls', /\/bin\/ls does not look like stable-diffusion\.cpp .*set vramRelay\.image\.binaryPath/],
    ['a script printing something else', () => script('fake-sd', 'echo "usage: fake-sd [--verbose]"; echo "  --verbose  say more"'), /fake-sd does not look like stable-diffusion\.cpp/],
    ['a script printing nothing and failing', () => script('silent', 'exit 3'), /silent does not look like stable-diffusion\.cpp .*"\(no output\)"/],
    ['a file that is not executable', () => script('not-exec', 'echo hi', 0o644), /not-exec cannot be run \(EACCES\): make it executable/],
    ['a path that does not exist', () => join(root, 'nowhere', 'sd-cli'), /sd-cli was not found: set vramRelay\.image\.binaryPath/],
    ['a folder', () => (mkdirSync(join(root, 'bin-folder'), { recursive: true }), join(root, 'bin-folder')), /bin-folder (cannot be run|could not be started|does not look like)/],
  ];

  for (const [what, make, expected] of binaries) {
    it(`fails the job on ${what}, naming the binary and the setting`, { timeout: 30_000 }, async () => {
      const message = await failureOf(make());
      assert.match(message, expected);
      assert.match(message, ADVICE);
    });
  }
});

describe('output folders that try to leave the workspace (the extension picks the folder)', () => {
  it('refuses .., absolute paths outside, and a sibling with the same prefix', () => {
    const workspace = join(root, 'ws');
    for (const setting of ['../elsewhere', '..', 'a/../../b', '/etc', join(root, 'ws-2'), `${workspace}/../x`]) {
      const result = resolveOutputFolder(workspace, setting);
      assert.ok('error' in result, `${setting} was accepted`);
      assert.match(result.error, /outside the workspace.*Set vramRelay\.output\.imageFolder to a folder inside it/);
    }
    assert.deepEqual(resolveOutputFolder(workspace, 'assets/../out'), { folder: join(workspace, 'out') });
  });

  it(
    'refuses a folder inside the workspace that is a symlink pointing out of it',
    { skip: !posix && 'symlinks need privileges on Windows' },
    () => {
      const workspace = join(root, 'ws-link');
      const outside = join(root, 'outside');
      mkdirSync(workspace, { recursive: true });
      mkdirSync(outside, { recursive: true });
      symlinkSync(outside, join(workspace, 'generated'));
      const result = resolveOutputFolder(workspace, 'generated');
      assert.ok('error' in result, 'a symlink out of the workspace was accepted');
      assert.match(result.error, /"generated" \(it links to .*outside\) is outside the workspace.*Set vramRelay\.output\.imageFolder/);
      // A folder below the link that does not exist yet is outside too, and so is a file in it.
      assert.ok('error' in resolveOutputFolder(workspace, 'generated/new/deeper'));
      assert.equal(isInside(workspace, join(workspace, 'generated', 'a.png')), false);
    },
  );

  it('accepts a symlink that stays inside the workspace, and a workspace reached through a symlink', { skip: !posix && 'symlinks need privileges on Windows' }, () => {
    const workspace = join(root, 'ws-inner');
    mkdirSync(join(workspace, 'real-out'), { recursive: true });
    symlinkSync(join(workspace, 'real-out'), join(workspace, 'out-link'));
    assert.deepEqual(resolveOutputFolder(workspace, 'out-link'), { folder: join(workspace, 'out-link') });
    const viaLink = join(root, 'ws-inner-link');
    symlinkSync(workspace, viaLink);
    assert.deepEqual(resolveOutputFolder(viaLink, 'assets/generated'), { folder: join(viaLink, 'assets', 'generated') });
    assert.equal(isInside(viaLink, join(workspace, 'real-out', 'a.png')), true);
  });
});
