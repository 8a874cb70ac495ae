/**
 * Installs a stable-diffusion.cpp release build into `<engines>/sd-<tag>-<backend>/`: download every archive of
 * the choice into a staging folder, verify each against its published sha256, unpack, make the binaries
 * executable, run the binary's `--help` through the sd.cpp check, and only then rename the staging folder into
 * place. Whatever fails (network, cancel, digest, disk, a binary that does not run) removes the staging folder:
 * the engines folder never holds a half-written engine. No VS Code here, so tests drive it against a local server.
 */

import { randomBytes } from 'node:crypto';
import { chmod, mkdir, mkdtemp, readdir, rename, rm, stat, statfs } from 'node:fs/promises';
import * as path from 'node:path';
import { ENGINE_NAMES } from '../engineLocator';
import { downloadAsset } from './downloadAsset';
import { EngineInstallError, fileSystemFailure } from './installError';
import { engineFolderName, type EngineDownloadChoice, type EngineRelease } from './releaseAssets';
import type { ReleaseSource } from './releaseSource';
import { unpackZip } from './unpackZip';
import { noDigestMessage, parseAssetDigest } from './assetDigest';

export type InstallPhase = 'download' | 'unpack' | 'check' | 'finish';

export interface InstallProgress {
  phase: InstallPhase;
  /** Bytes downloaded so far, over every archive of the choice. */
  received: number;
  total: number;
  /** The archive being downloaded or unpacked. */
  file?: string;
}

export interface InstallEngineOptions {
  release: EngineRelease;
  choice: EngineDownloadChoice;
  /** `<globalStorage>/engines`. */
  enginesDir: string;
  source: ReleaseSource;
  /**
   * Runs the unpacked binary's `--help` and throws when it does not run or is not sd.cpp; the error's message
   * (one sentence, why) goes into the user's message. The extension passes `checkDownloadedSd`.
   */
  checkBinary: (binaryPath: string) => Promise<unknown>;
  signal?: AbortSignal;
  fetchImpl?: typeof fetch;
  onProgress?: (progress: InstallProgress) => void;
  /** A connection that delivers nothing for this long is given up (default 60 s). */
  stallMs?: number;
}

export interface InstalledEngine {
  folder: string;
  binaryPath: string;
}

/** Staging folders start with these; the ones an earlier window left behind (a crash) are removed later. */
const STAGING_PREFIX = '.partial-';
const RETIRED_PREFIX = '.old-';
const STALE_MS = 24 * 60 * 60_000;
/** Kept free on the disk beyond what the download and the unpacked files take. */
const DISK_MARGIN = 64 * 1024 * 1024;

const cancelled = () => new EngineInstallError('cancelled', 'The download was cancelled; the partial files were deleted and nothing was installed.');

export async function installEngine(options: InstallEngineOptions): Promise<InstalledEngine> {
  const { release, choice, enginesDir, source } = options;
  const page = release.htmlUrl;
  const assets = [choice.asset, ...choice.companions];
  // Refuse before any byte is downloaded: nothing unverifiable is ever fetched.
  for (const asset of assets) {
    if (!parseAssetDigest(asset.digest)) throw new EngineInstallError('noDigest', noDigestMessage(asset.name, page));
  }

  try {
    await mkdir(enginesDir, { recursive: true });
  } catch (error) {
    throw fileSystemFailure(error, `creating ${enginesDir}`, page);
  }
  await removeStale(enginesDir);
  const free = await freeBytes(enginesDir);
  if (free !== undefined && free - DISK_MARGIN < choice.totalBytes) {
    throw new EngineInstallError(
      'disk',
      `The download needs ${mib(choice.totalBytes)} but only ${mib(Math.max(0, free))} are free on the disk that holds ${enginesDir}; nothing was downloaded. Free some space and run Find Engines again.`,
    );
  }

  const staging = await mkdtemp(path.join(enginesDir, STAGING_PREFIX)).catch((error: unknown) => {
    throw fileSystemFailure(error, `creating a staging folder in ${enginesDir}`, page);
  });
  try {
    const downloads = path.join(staging, 'downloads');
    const unpacked = path.join(staging, 'engine');
    await mkdir(downloads);

    const total = choice.totalBytes;
    let done = 0;
    const archives: string[] = [];
    for (const [i, asset] of assets.entries()) {
      if (options.signal?.aborted) throw cancelled();
      const file = path.join(downloads, `${i}-${safeFileName(asset.name)}`);
      options.onProgress?.({ phase: 'download', received: done, total, file: asset.name });
      await downloadAsset(asset, file, {
        source,
        releasePage: page,
        signal: options.signal,
        fetchImpl: options.fetchImpl,
        stallMs: options.stallMs,
        onBytes: (received) => options.onProgress?.({ phase: 'download', received: done + received, total, file: asset.name }),
      });
      done += asset.size;
      archives.push(file);
    }

    for (const [i, archive] of archives.entries()) {
      options.onProgress?.({ phase: 'unpack', received: total, total, file: assets[i].name });
      const space = await freeBytes(enginesDir);
      await unpackZip(archive, unpacked, {
        signal: options.signal,
        releasePage: page,
        archiveName: assets[i].name,
        ...(space !== undefined ? { spaceAvailable: space - DISK_MARGIN } : {}),
      }).catch((error: unknown) => {
        throw error instanceof EngineInstallError ? error : fileSystemFailure(error, `unpacking ${assets[i].name}`, page);
      });
      // The archive is no longer needed: give its space back before the next one unpacks.
      await rm(archive, { force: true });
    }

    const binaries = await findEngineBinaries(unpacked);
    if (binaries.length === 0) {
      throw new EngineInstallError(
        'noBinary',
        `${choice.asset.name} contains no ${ENGINE_NAMES.image.join(', ')} binary; nothing was installed. The release may have renamed it: download it by hand from ${page} and set vramRelay.image.binaryPath.`,
      );
    }
    if (process.platform !== 'win32') for (const binary of binaries) await chmod(binary, 0o755);

    if (options.signal?.aborted) throw cancelled();
    options.onProgress?.({ phase: 'check', received: total, total });
    const binary = binaries[0];
    try {
      await options.checkBinary(binary);
    } catch (error) {
      const why = ((error as Error | undefined)?.message ?? String(error)).split(binary).join(path.basename(binary));
      throw new EngineInstallError(
        'check',
        `The downloaded ${path.basename(binary)} (${choice.label}) does not run on this machine: ${why} ` +
          `Nothing was installed. Pick another build in Find Engines (the CPU build needs no GPU runtime), or download one by hand from ${page} and set vramRelay.image.binaryPath.`,
      );
    }

    options.onProgress?.({ phase: 'finish', received: total, total });
    await rm(downloads, { recursive: true, force: true });
    const folder = path.join(enginesDir, engineFolderName(release.tag, choice.build.backend));
    await moveIntoPlace(unpacked, folder, page);
    return { folder, binaryPath: path.join(folder, path.relative(unpacked, binary)) };
  } catch (error) {
    if (error instanceof EngineInstallError) throw error;
    if (options.signal?.aborted) throw cancelled();
    throw fileSystemFailure(error, `installing ${choice.asset.name}`, page);
  } finally {
    await rm(staging, { recursive: true, force: true }).catch(() => undefined);
  }
}

/**
 * Renames the staged engine to its final name. An engine already there (the same release and build, installed
 * before) is renamed away first and deleted after, and put back if the new one cannot take its place.
 */
async function moveIntoPlace(staged: string, folder: string, page: string): Promise<void> {
  const existing = await stat(folder).catch(() => undefined);
  const retired = existing ? path.join(path.dirname(folder), `${RETIRED_PREFIX}${randomBytes(4).toString('hex')}`) : undefined;
  try {
    if (retired) await rename(folder, retired);
  } catch (error) {
    throw fileSystemFailure(error, `replacing ${folder} (an image job may be using it: stop it or restart the sidecar, then try again)`, page);
  }
  try {
    await rename(staged, folder);
  } catch (error) {
    if (retired) await rename(retired, folder).catch(() => undefined);
    throw fileSystemFailure(error, `moving the engine into ${folder}`, page);
  }
  if (retired) await rm(retired, { recursive: true, force: true }).catch(() => undefined);
}

/** sd.cpp binaries below `dir`, the preferred name first (sd-cli, then sd, then sd-server), shallowest first. */
export async function findEngineBinaries(dir: string, maxDepth = 4): Promise<string[]> {
  const found: { file: string; rank: number; depth: number }[] = [];
  const names = ENGINE_NAMES.image;
  const walk = async (current: string, depth: number): Promise<void> => {
    const entries = await readdir(current, { withFileTypes: true }).catch(() => []);
    for (const entry of entries) {
      const full = path.join(current, entry.name);
      if (entry.isDirectory() && depth < maxDepth) await walk(full, depth + 1);
      if (!entry.isFile()) continue;
      const rank = names.indexOf(entry.name.toLowerCase().replace(/\.exe$/, ''));
      if (rank >= 0) found.push({ file: full, rank, depth });
    }
  };
  await walk(dir, 0);
  return found.sort((a, b) => a.rank - b.rank || a.depth - b.depth || a.file.localeCompare(b.file)).map((f) => f.file);
}

/** Removes staging and retired folders an earlier window left behind (a crash or a killed VS Code). */
async function removeStale(enginesDir: string): Promise<void> {
  const entries = await readdir(enginesDir, { withFileTypes: true }).catch(() => []);
  const now = Date.now();
  for (const entry of entries) {
    if (!entry.isDirectory() || !(entry.name.startsWith(STAGING_PREFIX) || entry.name.startsWith(RETIRED_PREFIX))) continue;
    const full = path.join(enginesDir, entry.name);
    const info = await stat(full).catch(() => undefined);
    // Another window may be installing right now: only folders untouched for a day are left over.
    if (info && now - info.mtimeMs > STALE_MS) await rm(full, { recursive: true, force: true }).catch(() => undefined);
  }
}

async function freeBytes(dir: string): Promise<number | undefined> {
  try {
    const info = await statfs(dir);
    return Number(info.bavail) * Number(info.bsize);
  } catch {
    return undefined;
  }
}

/** The asset's name as a plain file name (the API's name is free text). */
function safeFileName(name: string): string {
  return path.basename(name.replace(/\\/g, '/')).replace(/[^A-Za-z0-9._-]+/g, '_') || 'download.zip';
}

function mib(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(0)} MiB`;
}
