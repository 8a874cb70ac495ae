/**
 * Finds model files (GGUF, safetensors, ckpt) below the configured folders: a bounded walk that skips
 * dependency and VCS folders, so a folder setting pointed at a home directory stays quick.
 */

import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { MODEL_EXTENSIONS } from './modelFiles';

const SKIP_DIRS = new Set(['node_modules', '.git', '.hg', '.svn', '__pycache__', '.venv', 'venv', '.cache']);

export interface ScanLimits {
  maxDepth: number;
  maxEntries: number;
}

/** `~` and relative folders resolved (relative ones against the workspace root, when there is one). */
export function resolveFolder(folder: string, workspaceRoot?: string): string | undefined {
  const trimmed = folder.trim();
  if (!trimmed) return undefined;
  if (trimmed === '~' || trimmed.startsWith('~/') || trimmed.startsWith('~\\')) return path.join(os.homedir(), trimmed.slice(1));
  if (path.isAbsolute(trimmed)) return path.normalize(trimmed);
  return workspaceRoot ? path.resolve(workspaceRoot, trimmed) : undefined;
}

export async function scanModelFolders(folders: readonly string[], limits: ScanLimits = { maxDepth: 4, maxEntries: 5000 }): Promise<string[]> {
  const found: string[] = [];
  let seen = 0;
  const walk = async (dir: string, depth: number): Promise<void> => {
    if (depth > limits.maxDepth || seen > limits.maxEntries) return;
    let entries: import('node:fs').Dirent[];
    try {
      entries = await fs.readdir(dir, { withFileTypes: true });
    } catch {
      return; // Missing or unreadable folders are skipped; the picker says where it looked.
    }
    for (const entry of entries) {
      if (++seen > limits.maxEntries) return;
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) {
        if (!SKIP_DIRS.has(entry.name) && !entry.name.startsWith('.')) await walk(full, depth + 1);
      } else if ((entry.isFile() || entry.isSymbolicLink()) && MODEL_EXTENSIONS.some((ext) => entry.name.toLowerCase().endsWith(`.${ext}`))) {
        found.push(full);
      }
    }
  };
  for (const folder of folders) await walk(folder, 0);
  return [...new Set(found)];
}
