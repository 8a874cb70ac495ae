/**
 * Where generated images go: a folder inside the workspace (never outside it, not even through a symlink), and
 * names that never overwrite an existing file. Pure apart from resolving symlinks and the `exists` callback the
 * caller passes.
 */

import { realpathSync } from 'node:fs';
import * as path from 'node:path';
import { numberedOutputStem } from '../sidecar/core/outputNames';

/**
 * The path with every symlink resolved: the deepest part that exists goes through realpath and the parts that do
 * not exist yet are appended to it, so a folder that is about to be created resolves too.
 */
export function realPathOf(target: string, realpath: (p: string) => string = realpathSync.native): string {
  let existing = path.resolve(target);
  const missing: string[] = [];
  for (;;) {
    try {
      return path.join(realpath(existing), ...missing.reverse());
    } catch {
      const parent = path.dirname(existing);
      // The root itself cannot be resolved (or read): compare what was written.
      if (parent === existing) return path.resolve(target);
      missing.push(path.basename(existing));
      existing = parent;
    }
  }
}

/**
 * True when `candidate` is `root` or below it, after resolving `..` and symlinks on both sides (a folder inside
 * the workspace that links out of it is outside). Case-insensitive on Windows, where paths are.
 */
export function isInside(root: string, candidate: string): boolean {
  const fold = (p: string) => (process.platform === 'win32' ? p.toLowerCase() : p);
  return isBelow(fold(realPathOf(root)), fold(realPathOf(candidate)));
}

function isBelow(root: string, candidate: string): boolean {
  const relative = path.relative(root, candidate);
  return relative === '' || (relative !== '..' && !relative.startsWith(`..${path.sep}`) && !path.isAbsolute(relative));
}

/**
 * Resolves the output-folder setting against the workspace folder; refuses anything that leaves it, symlinks
 * included. The folder keeps the path as written (messages show what the user set); the check uses real paths.
 */
export function resolveOutputFolder(workspaceRoot: string, setting: string): { folder: string } | { error: string } {
  const value = setting.trim() || 'assets/generated';
  const folder = path.resolve(workspaceRoot, value);
  if (!isInside(workspaceRoot, folder)) {
    const where = isBelow(path.resolve(workspaceRoot), folder) ? ` (it links to ${realPathOf(folder)})` : '';
    return {
      error: `The image folder "${value}"${where} is outside the workspace (${workspaceRoot}). Set vramRelay.output.imageFolder to a folder inside it, such as assets/generated.`,
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
 * The files one run may write for a base name: `output`, the path the job is given (`name.png`); the images, named
 * as the sidecar names them (`name.png` for one, `name_1.png` ... `name_N.png` for a batch); and the parameters
 * file beside them. A batch also keeps `name.png` free, where the sidecar puts a batch that came out as one image.
 */
export function outputFilesFor(base: string, batch: number): { output: string; images: string[]; parameters: string; all: string[] } {
  const output = `${base}.png`;
  const images = Array.from({ length: batch }, (_, i) => `${numberedOutputStem(base, i, batch)}.png`);
  const parameters = `${base}.json`;
  return { output, images, parameters, all: [...new Set([output, ...images, parameters])] };
}

/**
 * The first base name (`stem`, `stem-2`, `stem-3`, ...) for which none of the files a run would write exist yet.
 */
export function uniqueBaseName(stem: string, batch: number, exists: (fileName: string) => boolean, limit = 10_000): string {
  for (let n = 1; n <= limit; n++) {
    const base = n === 1 ? stem : `${stem}-${n}`;
    if (!outputFilesFor(base, batch).all.some(exists)) return base;
  }
  throw new Error(`Could not find a free file name for "${stem}" after ${limit} tries: clean up the output folder.`);
}
