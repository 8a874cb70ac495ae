/**
 * Finding engine binaries: a file that can be executed (not a folder, not a file without the execute bit), by path
 * or on a PATH (with PATHEXT on Windows). `which` does the lookup the way a shell would.
 */

import which from 'which';

/** `path` when it names an executable file, else undefined. */
export async function executableAt(path: string): Promise<string | undefined> {
  return (await which(path, { nothrow: true })) ?? undefined;
}

/** The first of `paths` that is an executable file. */
export async function firstExecutable(paths: readonly string[]): Promise<string | undefined> {
  for (const path of paths) {
    const found = await executableAt(path);
    if (found) return found;
  }
  return undefined;
}

/** `name` looked up on the PATH of `env` (PATHEXT on Windows), or undefined. */
export async function findOnPath(name: string, env: NodeJS.ProcessEnv = process.env): Promise<string | undefined> {
  const path = env.PATH ?? env.Path ?? '';
  return (await which(name, { path, ...(env.PATHEXT ? { pathExt: env.PATHEXT } : {}), nothrow: true })) ?? undefined;
}
