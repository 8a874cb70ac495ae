import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import * as path from 'node:path';
import { after, describe, it } from 'node:test';
import { resolveFolder, scanModelFolders } from '../../../src/modelScan';

describe('model folders', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'vram-relay-models-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('finds model files below the folders, skipping dependency folders and too-deep ones', async () => {
    const files = ['llm/a.gguf', 'img/sdxl.safetensors', 'img/old.CKPT', 'img/readme.txt', 'node_modules/x.gguf', 'a/b/c/d/e/f/deep.gguf'];
    for (const file of files) {
      mkdirSync(path.dirname(path.join(dir, file)), { recursive: true });
      writeFileSync(path.join(dir, file), '');
    }
    const found = (await scanModelFolders([dir, path.join(dir, 'missing')])).map((f) => path.relative(dir, f).split(path.sep).join('/')).sort();
    assert.deepEqual(found, ['img/old.CKPT', 'img/sdxl.safetensors', 'llm/a.gguf']);
  });

  it('resolves ~ and workspace-relative folders', () => {
    assert.equal(resolveFolder('~/models'), path.join(homedir(), 'models'));
    assert.equal(resolveFolder('models', '/work/space'), path.resolve('/work/space', 'models'));
    assert.equal(resolveFolder('models'), undefined);
    assert.equal(resolveFolder('  '), undefined);
  });
});
