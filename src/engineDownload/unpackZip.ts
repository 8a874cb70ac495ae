/**
 * Unpacks a release zip with yauzl into a folder. The whole listing is checked before anything is written: one
 * entry (or link) that would land outside the folder refuses the archive. Files are created exclusively, so a
 * repeated name cannot overwrite what an earlier entry (or link) put there.
 */

import { createWriteStream } from 'node:fs';
import { chmod, mkdir, symlink } from 'node:fs/promises';
import * as path from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import * as yauzl from 'yauzl';
import { EngineInstallError } from './installError';
import { isSymlinkMode, linkTargetInside, resolveEntryPath, unixMode } from './zipEntryPath';

export interface UnpackOptions {
  signal?: AbortSignal;
  /** Bytes the disk may take (free space less a margin); unpacking more is refused before it starts. */
  spaceAvailable?: number;
  releasePage: string;
  /** The archive's name for messages (default: the file's name). */
  archiveName?: string;
}

export interface UnpackResult {
  files: string[];
  bytes: number;
}

/** yauzl's own name checks, reworded: they are the same refusals as ours. */
const YAUZL_UNSAFE = /^(absolute path|invalid relative path|invalid characters in fileName)/;

/** Link targets are short relative names; anything longer is not a link a release would ship. */
const MAX_LINK_TARGET_BYTES = 4096;

export async function unpackZip(zipFile: string, destDir: string, options: UnpackOptions): Promise<UnpackResult> {
  const archive = options.archiveName ?? path.basename(zipFile);
  const unsafe = (why: string) =>
    new EngineInstallError(
      'unsafeArchive',
      `${archive} was refused: it contains ${why}, which would be written outside the engine folder. Nothing was installed; download sd-cli by hand from ${options.releasePage}.`,
    );
  const damaged = (error: unknown) =>
    error instanceof EngineInstallError
      ? error
      : YAUZL_UNSAFE.test((error as Error).message)
        ? unsafe(yauzlRefusal((error as Error).message))
        : new EngineInstallError(
            'archive',
            `${archive} could not be unpacked (${(error as Error).message}); nothing was installed. Try the download again, or get it by hand from ${options.releasePage}.`,
          );

  let zip: yauzl.ZipFile;
  try {
    zip = await yauzl.openPromise(zipFile, { lazyEntries: true, autoClose: false, validateEntrySizes: true, strictFileNames: false });
  } catch (error) {
    throw damaged(error);
  }
  try {
    const entries = await listEntries(zip).catch((error: unknown) => {
      throw damaged(error);
    });
    type Planned = { entry: yauzl.Entry; target: string; kind: 'dir' | 'file' | 'link'; mode: number };
    const planned: Planned[] = [];
    let bytes = 0;
    for (const entry of entries) {
      const resolved = resolveEntryPath(destDir, entry.fileName);
      if (!resolved.ok) {
        // A bare "./" or "/" directory entry names the folder itself: nothing to create.
        if (entry.fileName.endsWith('/') && resolved.reason === 'no file name') continue;
        throw unsafe(`"${entry.fileName}" (${resolved.reason})`);
      }
      const mode = unixMode(entry.externalFileAttributes);
      const kind = entry.fileName.endsWith('/') ? 'dir' : isSymlinkMode(mode) ? 'link' : 'file';
      if (kind === 'link' && process.platform === 'win32') throw unsafe(`a symbolic link ("${entry.fileName}")`);
      planned.push({ entry, target: resolved.path, kind, mode });
      bytes += entry.uncompressedSize;
    }
    if (options.spaceAvailable !== undefined && bytes > options.spaceAvailable) {
      throw new EngineInstallError(
        'disk',
        `${archive} unpacks to ${formatMiB(bytes)} but only ${formatMiB(options.spaceAvailable)} are free; nothing was installed. Free some space and run Find Engines again.`,
      );
    }

    await mkdir(destDir, { recursive: true });
    const files: string[] = [];
    for (const item of planned) {
      if (options.signal?.aborted) throw new EngineInstallError('cancelled', 'The download was cancelled; the partial files were deleted and nothing was installed.');
      if (item.kind === 'dir') {
        await mkdir(item.target, { recursive: true });
        continue;
      }
      await mkdir(path.dirname(item.target), { recursive: true });
      const stream = await zip.openReadStreamPromise(item.entry).catch((error: unknown) => {
        throw damaged(error);
      });
      if (item.kind === 'link') {
        const linkTarget = await readSmall(stream, MAX_LINK_TARGET_BYTES).catch((error: unknown) => {
          throw damaged(error);
        });
        // Only plain names below the link's own folder: a chain of links can then never climb out.
        if (linkTarget.split(/[\\/]/).includes('..') || !linkTargetInside(destDir, item.target, linkTarget)) {
          throw unsafe(`a link "${item.entry.fileName}" -> "${linkTarget}"`);
        }
        await symlink(linkTarget, item.target);
        continue;
      }
      const executable = (item.mode & 0o111) !== 0;
      await pipeline(stream, createWriteStream(item.target, { flags: 'wx', mode: executable ? 0o755 : 0o644 }), {
        ...(options.signal ? { signal: options.signal } : {}),
      }).catch((error: unknown) => {
        if (options.signal?.aborted) throw new EngineInstallError('cancelled', 'The download was cancelled; the partial files were deleted and nothing was installed.');
        const code = (error as NodeJS.ErrnoException).code;
        if (code && /^E[A-Z]+$/.test(code)) throw error;
        throw damaged(error);
      });
      // The umask may have masked the mode at creation.
      if (executable && process.platform !== 'win32') await chmod(item.target, 0o755);
      files.push(item.target);
    }
    return { files, bytes };
  } finally {
    zip.close();
  }
}

/** `invalid relative path: ../x` -> `an entry "../x" (invalid relative path)`. */
function yauzlRefusal(message: string): string {
  const split = /^([^:]+): (.*)$/s.exec(message);
  return split ? `an entry "${split[2]}" (${split[1]})` : `an entry with ${message}`;
}

function listEntries(zip: yauzl.ZipFile): Promise<yauzl.Entry[]> {
  return new Promise((resolve, reject) => {
    const entries: yauzl.Entry[] = [];
    zip.on('entry', (entry: yauzl.Entry) => {
      entries.push(entry);
      zip.readEntry();
    });
    zip.once('end', () => resolve(entries));
    zip.once('error', reject);
    zip.readEntry();
  });
}

async function readSmall(stream: Readable, limit: number): Promise<string> {
  const chunks: Buffer[] = [];
  let length = 0;
  for await (const chunk of stream) {
    length += (chunk as Buffer).length;
    if (length > limit) {
      stream.destroy();
      throw new Error(`a link entry longer than ${limit} bytes`);
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function formatMiB(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(0)} MiB`;
}
