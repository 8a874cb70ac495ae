import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { after, describe, it } from 'node:test';
import { writeFileExclusive } from '../../../src/exclusiveWrite';
import { isInside, outputFilesFor, promptSlug, resolveOutputFolder, uniqueBaseName } from '../../../src/outputPath';

const root = path.resolve('/work/space');

describe('output folder', () => {
  it('resolves relative folders inside the workspace', () => {
    assert.deepEqual(resolveOutputFolder(root, 'assets/generated'), { folder: path.join(root, 'assets', 'generated') });
    assert.deepEqual(resolveOutputFolder(root, ''), { folder: path.join(root, 'assets', 'generated') });
  });

  it('refuses folders outside the workspace, with what to do', () => {
    for (const bad of ['../elsewhere', '/tmp/out', 'a/../../b']) {
      const result = resolveOutputFolder(root, bad);
      assert.ok('error' in result, bad);
      assert.match(result.error, /outside the workspace.*vramRelay\.output\.imageFolder/);
    }
  });

  it('knows a sibling with the same prefix is outside', () => {
    assert.equal(isInside('/work/space', '/work/space-2/a.png'), false);
    assert.equal(isInside('/work/space', '/work/space/a/b.png'), true);
  });
});

describe('file names', () => {
  it('makes a short slug from the prompt', () => {
    assert.equal(promptSlug('A red fox, in the SNOW!'), 'a-red-fox-in-the-snow');
    assert.equal(promptSlug('!!!'), 'image');
    assert.ok(promptSlug('word '.repeat(50)).length <= 40);
    assert.equal(promptSlug('Café crème'), 'cafe-creme');
  });

  it('names batch images the way sd.cpp does', () => {
    assert.deepEqual(outputFilesFor('fox', 3), { images: ['fox.png', 'fox_1.png', 'fox_2.png'], parameters: 'fox.json' });
  });

  it('never reuses a name any file of the run would overwrite', () => {
    const taken = new Set(['fox.png', 'fox-2.json', 'fox-3_1.png']);
    // fox.png and fox-2.json exist, so a single image goes to fox-3; a batch of two would also need fox-3_1.png.
    assert.equal(uniqueBaseName('fox', 1, (n) => taken.has(n)), 'fox-3');
    assert.equal(uniqueBaseName('fox', 2, (n) => taken.has(n)), 'fox-4');
    assert.equal(uniqueBaseName('cat', 1, () => false), 'cat');
  });
});

describe('writeFileExclusive', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'vram-relay-out-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('writes a new file and leaves no temporary file', async () => {
    const target = path.join(dir, 'a.json');
    await writeFileExclusive(target, '{"ok":true}');
    assert.equal(readFileSync(target, 'utf8'), '{"ok":true}');
    assert.deepEqual(readdirSync(dir), ['a.json']);
  });

  it('refuses to replace an existing file and keeps its content', async () => {
    const target = path.join(dir, 'b.json');
    writeFileSync(target, 'original');
    await assert.rejects(writeFileExclusive(target, 'new'), /already exists/);
    assert.equal(readFileSync(target, 'utf8'), 'original');
    assert.deepEqual(readdirSync(dir).sort(), ['a.json', 'b.json']);
  });
});
