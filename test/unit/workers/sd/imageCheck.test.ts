import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PNG } from 'pngjs';
import { checkImageFile, checkPngBuffer } from '../../../../sidecar/workers/sd/imageCheck';

/** A PNG whose RGB values come from `pixel(x, y)`. */
function png(width: number, height: number, pixel: (x: number, y: number) => [number, number, number]): Buffer {
  const image = new PNG({ width, height });
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const [r, g, b] = pixel(x, y);
      const i = (y * width + x) * 4;
      image.data[i] = r;
      image.data[i + 1] = g;
      image.data[i + 2] = b;
      image.data[i + 3] = 255;
    }
  }
  return PNG.sync.write(image);
}

/** A deterministic pseudo-random value 0-255 per pixel. */
const noise = (x: number, y: number, salt: number) => ((x * 73856093) ^ (y * 19349663) ^ (salt * 83492791)) >>> 0;

describe('checkPngBuffer', () => {
  it('accepts an image with content', () => {
    const result = checkPngBuffer(png(64, 48, (x, y) => [(x * 4) & 255, (y * 5) & 255, noise(x, y, 1) & 255]), false);
    assert.equal(result.verdict, 'ok');
    assert.equal(result.stats?.width, 64);
    assert.ok((result.stats?.stdDev ?? 0) > 10);
  });

  it('accepts a dark but real image (low mean, real variance)', () => {
    const result = checkPngBuffer(png(64, 64, (x, y) => [noise(x, y, 2) % 40, noise(x, y, 3) % 40, noise(x, y, 4) % 40]), false);
    assert.equal(result.verdict, 'ok');
  });

  it('rejects the uniform gray square of a silent VAE allocation failure', () => {
    const result = checkPngBuffer(png(64, 64, () => [127, 127, 127]), false);
    assert.equal(result.verdict, 'blank');
    assert.match(result.reason, /uniform gray/);
  });

  it('rejects a near-uniform image (tiny noise around gray)', () => {
    const result = checkPngBuffer(png(64, 64, (x, y) => {
      const v = 126 + (noise(x, y, 5) % 3);
      return [v, v, v];
    }), false);
    assert.equal(result.verdict, 'blank');
  });

  it('calls an all-zero image with a clean log an fp16 NaN VAE, not a memory failure', () => {
    const result = checkPngBuffer(png(32, 32, () => [0, 0, 0]), false);
    assert.equal(result.verdict, 'nan-black');
    assert.match(result.reason, /fp16/);
  });

  it('calls the same black image a memory failure when the log reported an allocation error', () => {
    const result = checkPngBuffer(png(32, 32, () => [0, 0, 0]), true);
    assert.equal(result.verdict, 'blank');
    assert.match(result.reason, /black/);
  });

  it('calls a nearly black image that is not exactly zero blank (not NaN)', () => {
    const result = checkPngBuffer(png(32, 32, (x) => [x % 2, 0, 0]), false);
    assert.equal(result.verdict, 'blank');
  });

  it('reports a truncated file as unreadable', () => {
    const whole = png(32, 32, (x, y) => [x * 8, y * 8, 0]);
    const result = checkPngBuffer(whole.subarray(0, whole.length >> 1), false);
    assert.equal(result.verdict, 'unreadable');
  });
});

describe('checkImageFile', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vrelay-imagecheck-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('reads the file from disk', async () => {
    const path = join(dir, 'gray.png');
    writeFileSync(path, png(16, 16, () => [128, 128, 128]));
    assert.equal((await checkImageFile(path, false)).verdict, 'blank');
  });

  it('reports a missing file as unreadable', async () => {
    assert.equal((await checkImageFile(join(dir, 'missing.png'), false)).verdict, 'unreadable');
  });
});
