/**
 * Where a zip entry may be written (pure): inside the destination folder, or nowhere.
 *
 * A zip names its entries with free text, so `../../.bashrc`, `/etc/passwd`, `C:\Windows\...` or a symbolic link
 * pointing out of the folder would write elsewhere ("zip slip"). Every entry and every link target is resolved
 * against the destination and refused when it leaves it.
 */

import * as path from 'node:path';

export type EntryPathCheck = { ok: true; path: string; relative: string } | { ok: false; reason: string };

/** `pathApi` is posix or win32 (the test checks both); default the running platform's. */
export function resolveEntryPath(destDir: string, entryName: string, pathApi: path.PlatformPath = path): EntryPathCheck {
  if (entryName === '' || entryName.includes('\0')) return { ok: false, reason: 'an empty or NUL-containing name' };
  // Zips from Windows tools may separate with backslashes; treat both as separators on every platform.
  const slashed = entryName.replace(/\\/g, '/');
  if (slashed.startsWith('/') || /^[A-Za-z]:/.test(slashed)) return { ok: false, reason: 'an absolute path' };
  const segments = slashed.split('/').filter((segment) => segment !== '' && segment !== '.');
  if (segments.includes('..')) return { ok: false, reason: 'a ".." path segment' };
  if (segments.length === 0) return { ok: false, reason: 'no file name' };
  const root = pathApi.resolve(destDir);
  const target = pathApi.resolve(root, ...segments);
  const relative = pathApi.relative(root, target);
  if (!isInside(relative, pathApi)) return { ok: false, reason: 'a path outside the folder' };
  return { ok: true, path: target, relative };
}

/** A symbolic link entry (`linkPath`, already checked) may point only at a relative place inside `destDir`. */
export function linkTargetInside(destDir: string, linkPath: string, target: string, pathApi: path.PlatformPath = path): boolean {
  if (target === '' || target.includes('\0')) return false;
  const slashed = target.replace(/\\/g, '/');
  if (slashed.startsWith('/') || /^[A-Za-z]:/.test(slashed)) return false;
  const root = pathApi.resolve(destDir);
  const resolved = pathApi.resolve(pathApi.dirname(linkPath), ...slashed.split('/'));
  return isInside(pathApi.relative(root, resolved), pathApi);
}

/** A path relative to the folder names something strictly below it. */
function isInside(relative: string, pathApi: path.PlatformPath): boolean {
  return relative !== '' && relative.split(pathApi.sep)[0] !== '..' && !pathApi.isAbsolute(relative);
}

/** Unix mode bits a zip made on Unix stores in the upper half of the external attributes (0 when absent). */
export function unixMode(externalFileAttributes: number): number {
  return (externalFileAttributes >>> 16) & 0xffff;
}

export function isSymlinkMode(mode: number): boolean {
  return (mode & 0o170000) === 0o120000;
}
