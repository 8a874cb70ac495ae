/**
 * The file through which a standalone sidecar tells local apps where it listens and which token to present.
 * It is readable by the user only (0600, in a 0700 folder) and written atomically, so a reader never sees half a
 * file and another user never sees the token.
 */

import { randomBytes } from 'node:crypto';
import { mkdir, open, readFile, rename, unlink } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';

export interface TokenFileContent {
  port: number;
  token: string;
  /** The sidecar's process id, so a client can tell a stale file from a live server. */
  pid: number;
}

/**
 * The per-user state folder: `$XDG_STATE_HOME/vram-relay` (default `~/.local/state/vram-relay`) on Linux,
 * `~/Library/Application Support/vram-relay` on macOS, `%LOCALAPPDATA%\vram-relay` on Windows.
 */
export function defaultStateDir(
  platform: NodeJS.Platform = process.platform,
  env: NodeJS.ProcessEnv = process.env,
  home: string = homedir(),
): string {
  if (platform === 'win32') return join(env.LOCALAPPDATA || join(home, 'AppData', 'Local'), 'vram-relay');
  if (platform === 'darwin') return join(home, 'Library', 'Application Support', 'vram-relay');
  // The XDG spec says relative values are invalid and must be ignored.
  const xdg = env.XDG_STATE_HOME;
  return join(xdg && xdg.startsWith('/') ? xdg : join(home, '.local', 'state'), 'vram-relay');
}

export function defaultTokenFile(
  platform: NodeJS.Platform = process.platform,
  env: NodeJS.ProcessEnv = process.env,
  home: string = homedir(),
): string {
  return join(defaultStateDir(platform, env, home), 'sidecar.json');
}

/** Writes the file with mode 0600 through a temporary file and a rename, creating its folder with mode 0700. */
export async function writeTokenFile(path: string, content: TokenFileContent): Promise<void> {
  // `mode` applies to the folders this call creates; an existing folder keeps its permissions.
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const temporary = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    // `wx` refuses to follow a planted file or symlink at the temporary name.
    const handle = await open(temporary, 'wx', 0o600);
    try {
      // The umask could have removed bits from 0600; set it exactly (no effect on Windows, where the
      // per-user LOCALAPPDATA folder is what keeps the file private).
      await handle.chmod(0o600);
      await handle.writeFile(`${JSON.stringify(content)}\n`);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temporary, path);
  } catch (error) {
    await unlink(temporary).catch(() => undefined);
    throw error;
  }
}

/** Reads and checks the file; throws a message naming the file when it is missing or not a token file. */
export async function readTokenFile(path: string): Promise<TokenFileContent> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new Error(`No sidecar token file at ${path}. Start the sidecar with \`node dist/sidecar.js --serve\` first.`);
    }
    throw error;
  }
  let content: Partial<TokenFileContent>;
  try {
    content = JSON.parse(text) as Partial<TokenFileContent>;
  } catch {
    throw new Error(`${path} is not a sidecar token file (not JSON). Delete it and restart the sidecar.`);
  }
  if (
    typeof content !== 'object' || content === null ||
    !Number.isInteger(content.port) || typeof content.token !== 'string' || !Number.isInteger(content.pid)
  ) {
    throw new Error(`${path} is not a sidecar token file (it needs port, token and pid). Delete it and restart the sidecar.`);
  }
  return content as TokenFileContent;
}

/** Removes the file if it still holds `token` (another server may have replaced it since). */
export async function removeTokenFile(path: string, token: string): Promise<void> {
  try {
    const content = await readTokenFile(path);
    if (content.token !== token) return;
    await unlink(path);
  } catch {
    // Already gone or unreadable: nothing of ours to remove.
  }
}

/** True when a process with this id exists (EPERM: it exists but belongs to someone else). */
export function isProcessAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}
