import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { buildPickItems, consentText } from '../../../src/engineDownload/consentText';
import { downloadChoices, parseRelease } from '../../../src/engineDownload/releaseAssets';

const release = parseRelease(
  JSON.parse(readFileSync(path.join(__dirname, '../../fixtures/releases/sd-master-889-c678dfe.json'), 'utf8')),
  'https://github.com/leejet/stable-diffusion.cpp/releases',
);
const windows = downloadChoices(release, { platform: 'win32', arch: 'x64' });

describe('download consent text', () => {
  it('names the release, every file with its size and URL, the total and the destination folder', () => {
    const cuda = windows[0];
    const destination = path.join('/storage', 'engines', 'sd-master-889-c678dfe-cuda');
    const text = consentText(release, cuda, destination, false);
    assert.match(text.message, /master-889-c678dfe \(CUDA 12, 855 MB\)/);
    for (const needle of [
      'Release: master-889-c678dfe',
      'File: sd-master-c678dfe-bin-win-cuda12-x64.zip, 318 MB',
      'https://github.com/leejet/stable-diffusion.cpp/releases/download/master-889-c678dfe/sd-master-c678dfe-bin-win-cuda12-x64.zip',
      'File: cudart-sd-bin-win-cu12-x64.zip, 537 MB',
      'Total: 855 MB',
      `Destination: ${destination}${path.sep}`,
      'sha256',
    ]) {
      assert.ok(text.detail.includes(needle), `${needle} missing from:\n${text.detail}`);
    }
    assert.ok(!text.detail.includes('already'), 'a fresh install says nothing of replacing');
    assert.match(consentText(release, cuda, destination, true).detail, /already in the destination folder/);
  });

  it('lists one file and no total for a single-archive build', () => {
    const vulkan = windows.find((choice) => choice.build.backend === 'vulkan')!;
    const text = consentText(release, vulkan, '/d', false);
    assert.equal(text.detail.match(/^File: /gm)?.length, 1);
    assert.ok(!text.detail.includes('Total:'));
  });
});

describe('build picker rows', () => {
  it('puts the suggested build first and says why', () => {
    const items = buildPickItems(windows, 'vulkan', 'NVIDIA GeForce RTX 4070');
    assert.equal(items[0].label, 'Vulkan');
    assert.match(items[0].description, /suggested for NVIDIA GeForce RTX 4070/);
    assert.equal(items.length, windows.length);
    assert.ok(items.slice(1).every((item) => !item.description.includes('suggested')));
    assert.match(items.find((item) => item.label === 'CUDA 12')!.detail, /cudart-sd-bin-win-cu12-x64\.zip/);
  });

  it('keeps the release order without a suggestion', () => {
    assert.deepEqual(
      buildPickItems(windows, undefined).map((item) => item.label),
      windows.map((choice) => choice.label),
    );
  });
});
