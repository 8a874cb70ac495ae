/**
 * Where generated images go: a folder inside the workspace (never outside it), and names that never overwrite
 * an existing file. Pure apart from the `exists` callback the caller passes.
 */

import * as path from 'node:path';

/** True when `candidate` is `root` or below it (after resolving `..`). */
export function isInside(root: string, candidate: string): boolean {
  const relative = path.relative(path.resolve(root), path.resolve(candidate));
  return relative === '' || (!relative.startsWith('..') && !path.isAbsolute(relative));
}

/** Resolves the output-folder setting against the workspace folder; refuses anything that leaves it. */
export function resolveOutputFolder(workspaceRoot: string, setting: string): { folder: string } | { error: string } {
  const value = setting.trim() || 'assets/generated';
  const folder = path.resolve(workspaceRoot, value);
  if (!isInside(workspaceRoot, folder)) {
    return {
      error: `The image folder "${value}" is outside the workspace (${workspaceRoot}). Set vramRelay.output.imageFolder to a folder inside it, such as assets/generated.`,
    };
  }
  return { folder };
}

/** A short file-name stem from a prompt: `a-red-fox-in-the-snow`. */
export function promptSlug(prompt: string, maxLength = 40): string {
  const words = prompt
    .normalize('NFKD')
    .replace(/[\u0300-\u036f]/g, '')
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, ' ')
    .trim()
    .split(/\s+/)
    .filter(Boolean);
  let slug = '';
  for (const word of words) {
    const next = slug ? `${slug}-${word}` : word;
    if (next.length > maxLength) break;
    slug = next;
  }
  return slug || 'image';
}

/**
 * The files one run writes for a base name: the images (sd.cpp names a batch `name.png`, `name_1.png`, ...) and
 * the parameters file beside them.
 */
export function outputFilesFor(base: string, batch: number): { images: string[]; parameters: string } {
  const images = [`${base}.png`];
  for (let i = 1; i < batch; i++) images.push(`${base}_${i}.png`);
  return { images, parameters: `${base}.json` };
}

/**
 * The first base name (`stem`, `stem-2`, `stem-3`, ...) for which none of the files a run would write exist yet.
 */
export function uniqueBaseName(stem: string, batch: number, exists: (fileName: string) => boolean, limit = 10_000): string {
  for (let n = 1; n <= limit; n++) {
    const base = n === 1 ? stem : `${stem}-${n}`;
    const { images, parameters } = outputFilesFor(base, batch);
    if (![...images, parameters].some(exists)) return base;
  }
  throw new Error(`Could not find a free file name for "${stem}" after ${limit} tries: clean up the output folder.`);
}
