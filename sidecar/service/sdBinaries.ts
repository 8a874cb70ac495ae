/**
 * Which stable-diffusion.cpp binaries the image worker has: `sd-cli` (or `sd`) for a process per job, and
 * `sd-server` to keep the model loaded between jobs. Releases ship them side by side, so one configured path (or
 * one found on PATH) leads to the other in the same folder.
 */

import { constants as fsConstants } from 'node:fs';
import { access, stat } from 'node:fs/promises';
import { basename, delimiter, dirname, extname, isAbsolute, join, resolve as resolvePath } from 'node:path';

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
    const full = hasDirectory(path) ? resolvePath(path) : ((await onPath(path, env)) ?? path);
    const ext = extname(full).toLowerCase() === '.exe' ? extname(full) : '';
    if (baseName(full) === SERVER_NAME) {
      return { server: full, ...optional('cli', await firstExecutable(CLI_NAMES.map((n) => join(dirname(full), n + ext)))) };
    }
    return { cli: full, ...optional('server', await firstExecutable([join(dirname(full), SERVER_NAME + ext)])) };
  }
  for (const name of CLI_NAMES) {
    const cli = await onPath(name, env);
    if (!cli) continue;
    const ext = extname(cli).toLowerCase() === '.exe' ? extname(cli) : '';
    const server = (await firstExecutable([join(dirname(cli), SERVER_NAME + ext)])) ?? (await onPath(SERVER_NAME, env));
    return { cli, ...optional('server', server) };
  }
  return optional('server', await onPath(SERVER_NAME, env));
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

async function firstExecutable(candidates: string[]): Promise<string | undefined> {
  for (const candidate of candidates) if (await isExecutableFile(candidate)) return candidate;
  return undefined;
}

async function onPath(name: string, env: NodeJS.ProcessEnv): Promise<string | undefined> {
  const pathValue = env.PATH ?? env.Path ?? '';
  const extensions = process.platform === 'win32' ? ['', ...(env.PATHEXT ?? '.EXE;.CMD;.BAT').split(';')] : [''];
  for (const dir of pathValue.split(delimiter).filter(Boolean)) {
    const found = await firstExecutable(extensions.map((e) => join(dir, name + e)));
    if (found) return found;
  }
  return undefined;
}

async function isExecutableFile(path: string): Promise<boolean> {
  try {
    if (!(await stat(path)).isFile()) return false;
    await access(path, process.platform === 'win32' ? fsConstants.F_OK : fsConstants.X_OK);
    return true;
  } catch {
    return false;
  }
}
