/**
 * Finds engine binaries the user already has: sd.cpp (`sd-cli`, older `sd`, `sd-server`) and llama.cpp's
 * `llama-server` on PATH. Pure apart from the `isFile` callback, so it is tested with a fake file system.
 * Downloading an official sd.cpp build is `engineDownload/`'s job; the names below are what it looks for too.
 */

import * as path from 'node:path';

export type EngineKind = 'image' | 'llmServer';

export const ENGINE_NAMES: Record<EngineKind, readonly string[]> = {
  image: ['sd-cli', 'sd', 'sd-server'],
  llmServer: ['llama-server'],
};

/** Where official builds are published: for downloading by hand (llama-server) and in every download message. */
export const ENGINE_RELEASES: Record<EngineKind, string> = {
  image: 'https://github.com/leejet/stable-diffusion.cpp/releases',
  llmServer: 'https://github.com/ggml-org/llama.cpp/releases',
};

/** Every existing file named like the engine in the PATH directories, in PATH order. */
export function findOnPath(
  kind: EngineKind,
  pathEnv: string,
  platform: NodeJS.Platform,
  isFile: (candidate: string) => boolean,
  pathExt = '.EXE;.CMD;.BAT',
): string[] {
  const separator = platform === 'win32' ? ';' : ':';
  const join = platform === 'win32' ? path.win32.join : path.posix.join;
  const extensions = platform === 'win32' ? ['', ...pathExt.split(';').filter(Boolean).map((e) => e.toLowerCase())] : [''];
  const found: string[] = [];
  for (const dir of pathEnv.split(separator).filter(Boolean)) {
    for (const name of ENGINE_NAMES[kind]) {
      for (const ext of extensions) {
        const candidate = join(dir, name + ext);
        if (!found.includes(candidate) && isFile(candidate)) found.push(candidate);
      }
    }
  }
  return found;
}
