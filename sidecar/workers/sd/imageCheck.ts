/**
 * Checks an image sd.cpp wrote before anyone sees it. A uniform or near-uniform image is a failure even when the
 * log says success: older sd.cpp builds write a gray (or black) square when the VAE's compute buffer could not be
 * allocated.
 *
 * Telling the two black images apart (a safer plan fixes one and not the other):
 * - fp16 NaN in the VAE (SDXL's original VAE in half precision): every value of the decode is NaN and sd.cpp's
 *   float -> byte conversion turns each into exactly 0. The log shows no allocation error.
 * - a failed allocation: the decode never ran, so the pixels are whatever the untouched output held. That is
 *   mostly mid-gray (a zero latent decodes to 127/128), sometimes black, and the log usually names the failure.
 * Hence: every RGB value exactly 0 and no allocation error in the log -> `nan-black` (tell the user to use an
 * fp16-fixed VAE or run the VAE in fp32); any other uniform image, or black with an allocation error -> `blank`.
 */

import { readFile } from 'node:fs/promises';
import { PNG } from 'pngjs';

export interface ImageStats {
  width: number;
  height: number;
  /** Mean of the RGB values (0-255). */
  mean: number;
  /** Largest standard deviation of the three colour channels. */
  stdDev: number;
  min: number;
  max: number;
  /** Every RGB value is exactly 0. */
  allZero: boolean;
}

export type ImageVerdict = 'ok' | 'blank' | 'nan-black' | 'unreadable';

export interface ImageCheck {
  verdict: ImageVerdict;
  /** One sentence for the user and the decision log. */
  reason: string;
  stats?: ImageStats;
}

/** Below this channel standard deviation (out of 255) an image counts as uniform. Real images are above 10. */
export const BLANK_STDDEV = 2;
/** A value range this narrow also counts as uniform, whatever the deviation. */
export const BLANK_RANGE = 6;

/** Statistics of a decoded PNG (RGB channels; alpha is ignored). */
export function imageStats(png: PNG): ImageStats {
  const { width, height, data } = png;
  const pixels = width * height;
  const sum = [0, 0, 0];
  const sumSq = [0, 0, 0];
  let min = 255;
  let max = 0;
  for (let i = 0; i < pixels; i++) {
    for (let c = 0; c < 3; c++) {
      const v = data[i * 4 + c];
      sum[c] += v;
      sumSq[c] += v * v;
      if (v < min) min = v;
      if (v > max) max = v;
    }
  }
  const n = Math.max(1, pixels);
  const stdDev = Math.max(...[0, 1, 2].map((c) => Math.sqrt(Math.max(0, sumSq[c] / n - (sum[c] / n) ** 2))));
  return {
    width,
    height,
    mean: (sum[0] + sum[1] + sum[2]) / (3 * n),
    stdDev,
    min: pixels > 0 ? min : 0,
    max: pixels > 0 ? max : 0,
    allZero: pixels > 0 && max === 0,
  };
}

/** The verdict on an image's statistics; `allocationErrorInLog` is whether the run's log reported one. */
export function classifyImage(stats: ImageStats, allocationErrorInLog: boolean): ImageCheck {
  if (stats.width === 0 || stats.height === 0) return { verdict: 'unreadable', reason: 'the image has no pixels', stats };
  const uniform = stats.stdDev < BLANK_STDDEV || stats.max - stats.min <= BLANK_RANGE;
  if (!uniform) return { verdict: 'ok', reason: 'the image has content', stats };
  if (stats.allZero && !allocationErrorInLog) {
    return {
      verdict: 'nan-black',
      reason:
        'the image is entirely black (every value exactly 0) and sd.cpp reported no memory error: the VAE produced NaN ' +
        'in half precision, which a safer memory plan does not fix. Use an fp16-fixed VAE (e.g. sdxl-vae-fp16-fix) ' +
        'with the model',
      stats,
    };
  }
  const shade = stats.mean < 8 ? 'black' : stats.mean > 247 ? 'white' : 'gray';
  return {
    verdict: 'blank',
    reason: `the image is a uniform ${shade} square (mean ${stats.mean.toFixed(1)}, deviation ${stats.stdDev.toFixed(2)}): ` +
      `the VAE decode ran out of memory without saying so${allocationErrorInLog ? ' (the log reports an allocation failure)' : ''}`,
    stats,
  };
}

/** Decodes a PNG buffer and classifies it. */
export function checkPngBuffer(buffer: Buffer, allocationErrorInLog: boolean): ImageCheck {
  let png: PNG;
  try {
    png = PNG.sync.read(buffer);
  } catch (error) {
    return { verdict: 'unreadable', reason: `the file is not a readable PNG (${(error as Error).message})` };
  }
  return classifyImage(imageStats(png), allocationErrorInLog);
}

/** Reads and classifies a PNG file. */
export async function checkImageFile(path: string, allocationErrorInLog: boolean): Promise<ImageCheck> {
  let buffer: Buffer;
  try {
    buffer = await readFile(path);
  } catch (error) {
    return { verdict: 'unreadable', reason: `the file could not be read (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})` };
  }
  return checkPngBuffer(buffer, allocationErrorInLog);
}
