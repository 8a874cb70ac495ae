import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, describe, it } from 'node:test';
import type { ImageJobSpec } from '../../../../sidecar/core/types';
import { folderExists, imageDiskBytes, saveProblem, withAbsolutePaths } from '../../../../sidecar/workers/sd/sdRunSupport';

const dir = mkdtempSync(join(tmpdir(), 'vrelay-runsupport-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const job: ImageJobSpec = {
  kind: 'image',
  modelPath: 'models/sd15.safetensors',
  parts: { vae: 'models/vae.safetensors', clipL: '/abs/clip.safetensors' },
  prompt: 'p',
  width: 512,
  height: 512,
  batch: 1,
  steps: 4,
  seed: 1,
  outputPath: 'out/a.png',
};

describe('why a finished image could not be saved', () => {
  it('names a full disk and says to free space or choose another folder', async () => {
    const full = await saveProblem(dir, Number.MAX_SAFE_INTEGER, []);
    assert.equal(full?.failure, 'input', 'a slower plan cannot help: not retried');
    assert.match(full!.message, /disk that holds .* is full \(.* free\).*free some space there or choose another output folder/);
    const byCode = await saveProblem(dir, 0, [], 'ENOSPC');
    assert.match(byCode!.message, /is full/);
  });

  it('names a read-only file system and a folder that refuses writes', async () => {
    assert.match((await saveProblem(dir, 0, [], 'EROFS'))!.message, /read-only file system.*choose another output folder/);
    assert.match((await saveProblem(dir, 0, [], 'EACCES'))!.message, /cannot be written \(EACCES\).*choose another output folder, or allow writing to it/);
  });

  it('finds nothing wrong with a writable folder with room, and leaves a deleted folder to the runner', async () => {
    assert.equal(await saveProblem(dir, 1024, []), undefined);
    assert.equal(await saveProblem(join(dir, 'gone'), 1024, [], 'ENOENT'), undefined);
    assert.equal(await folderExists(dir), true);
    assert.equal(await folderExists(join(dir, 'gone')), false);
  });

  it('bounds the disk space of one image by its raw size', () => {
    assert.ok(imageDiskBytes({ width: 512, height: 512 }) >= 512 * 512 * 3);
  });
});

describe('job paths for a process that runs in its own folder', () => {
  it('makes relative paths absolute against the sidecar folder and keeps absolute ones', () => {
    const abs = withAbsolutePaths(job);
    assert.equal(abs.modelPath, resolve('models/sd15.safetensors'));
    assert.equal(abs.outputPath, resolve('out/a.png'));
    assert.deepEqual(abs.parts, { vae: resolve('models/vae.safetensors'), clipL: '/abs/clip.safetensors' });
    assert.equal(job.modelPath, 'models/sd15.safetensors', 'the job itself is left as it was');
  });
});
