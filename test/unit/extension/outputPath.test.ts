import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { after, describe, it } from 'node:test';
import { finalNames } from '../../../sidecar/workers/sd/sdRunSupport';
import { writeFileExclusive } from '../../../src/exclusiveWrite';
import { isInside, outputFilesFor, promptSlug, realPathOf, resolveOutputFolder, uniqueBaseName } from '../../../src/outputPath';

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
    assert.equal(isInside('/work/space', '/work/space/..hidden/b.png'), true);
  });

  it('resolves links in the part that exists and keeps the part that does not', () => {
    const links: Record<string, string> = { [path.resolve('/ws/out')]: path.resolve('/elsewhere') };
    const realpath = (p: string) => {
      if (links[p]) return links[p];
      if (p === path.resolve('/ws') || p === path.parse(p).root) return p;
      throw Object.assign(new Error('missing'), { code: 'ENOENT' });
    };
    assert.equal(realPathOf('/ws/out/new/a.png', realpath), path.resolve('/elsewhere/new/a.png'));
    assert.equal(realPathOf('/ws/other/../b', realpath), path.resolve('/ws/b'));
  });
});

describe('file names', () => {
  it('makes a short slug from the prompt', () => {
    assert.equal(promptSlug('A red fox, in the SNOW!'), 'a-red-fox-in-the-snow');
    assert.equal(promptSlug('!!!'), 'image');
    assert.ok(promptSlug('word '.repeat(50)).length <= 40);
    assert.equal(promptSlug('Café crème'), 'cafe-creme');
  });

  it('names batch images the way the sidecar does', () => {
    assert.deepEqual(outputFilesFor('fox', 1), { output: 'fox.png', images: ['fox.png'], parameters: 'fox.json', all: ['fox.png', 'fox.json'] });
    const batch = outputFilesFor('fox', 3);
    assert.deepEqual(batch.images, ['fox_1.png', 'fox_2.png', 'fox_3.png']);
    assert.equal(batch.output, 'fox.png');
    assert.deepEqual(batch.all, ['fox.png', 'fox_1.png', 'fox_2.png', 'fox_3.png', 'fox.json']);
  });

  it('reserves exactly the names the sidecar moves finished images to', () => {
    const folder = path.resolve('/work/space/assets');
    for (const batch of [1, 2, 4]) {
      const { output, images, all } = outputFilesFor('fox', batch);
      // What sd.cpp wrote under its temporary stem, whatever its own numbering.
      const produced = Array.from({ length: batch }, (_, i) => path.join(folder, `.fox-tmp_${i}.png`));
      assert.deepEqual(finalNames(path.join(folder, output), produced, false), images.map((name) => path.join(folder, name)), `batch ${batch}`);
      // A batch that came out as one image lands on the job's own path, which is reserved too.
      const one = finalNames(path.join(folder, output), produced.slice(0, 1), false);
      assert.ok(all.includes(path.basename(one[0])), `batch ${batch}: ${one[0]}`);
    }
  });

  it('never reuses a name any file of the run would overwrite', () => {
    const taken = new Set(['fox.png', 'fox-2.json', 'fox-3_1.png']);
    // fox.png and fox-2.json exist, so a single image goes to fox-3; a batch of two would need fox-3_1.png too.
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
