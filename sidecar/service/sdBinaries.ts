/**
 * Which stable-diffusion.cpp binaries the image worker has: `sd-cli` (or `sd`) for a process per job, and
 * `sd-server` to keep the model loaded between jobs. Releases ship them side by side, so one configured path (or
 * one found on PATH) leads to the other in the same folder.
 */

import { basename, dirname, extname, isAbsolute, join, resolve as resolvePath } from 'node:path';
import { findOnPath, firstExecutable } from '../workers/executables';

export interface SdBinaries {
  /** `sd-cli` or `sd`: one process per job. */
  cli?: string;
  /** `sd-server`: stays resident between jobs. */
  server?: string;
}

/** Names tried on PATH when no binary is configured, newest release first. */
const CLI_NAMES = ['sd-cli', 'sd'];
const SERVER_NAME = 'sd-server';

/**
 * The binaries to use. `configured` (a path, or a bare name looked up on PATH) is taken as sd-cli unless it is
 * named sd-server; its sibling of the other kind is added when it exists. Nothing configured: PATH is searched.
 * A configured path that does not exist is still returned, so that jobs fail with the message saying what to set.
 */
export async function findSdBinaries(configured: string, env: NodeJS.ProcessEnv = process.env): Promise<SdBinaries> {
  const path = configured.trim();
  if (path) {
    const full = hasDirectory(path) ? resolvePath(path) : ((await findOnPath(path, env)) ?? path);
    const ext = extname(full).toLowerCase() === '.exe' ? extname(full) : '';
    if (baseName(full) === SERVER_NAME) {
      return { server: full, ...optional('cli', await firstExecutable(CLI_NAMES.map((n) => join(dirname(full), n + ext)))) };
    }
    return { cli: full, ...optional('server', await firstExecutable([join(dirname(full), SERVER_NAME + ext)])) };
  }
  for (const name of CLI_NAMES) {
    const cli = await findOnPath(name, env);
    if (!cli) continue;
    const ext = extname(cli).toLowerCase() === '.exe' ? extname(cli) : '';
    const server = (await firstExecutable([join(dirname(cli), SERVER_NAME + ext)])) ?? (await findOnPath(SERVER_NAME, env));
    return { cli, ...optional('server', server) };
  }
  return optional('server', await findOnPath(SERVER_NAME, env));
}

function optional<K extends keyof SdBinaries>(key: K, value: string | undefined): Pick<SdBinaries, K> | Record<string, never> {
  return value ? ({ [key]: value } as Pick<SdBinaries, K>) : {};
}

function baseName(path: string): string {
  return basename(path).toLowerCase().replace(/\.exe$/, '');
}

function hasDirectory(path: string): boolean {
  return isAbsolute(path) || path.includes('/') || path.includes('\\');
}

