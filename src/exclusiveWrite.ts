/**
 * Writes a file that must not replace anything: the content goes to a temporary name first and is then linked
 * into place, which fails if the name exists. A crash never leaves a half-written file under the final name.
 */

import { promises as fs } from 'node:fs';
import * as path from 'node:path';

export async function writeFileExclusive(target: string, content: string | Uint8Array): Promise<void> {
  const temp = path.join(path.dirname(target), `.${path.basename(target)}.${process.pid}.${Date.now()}.tmp`);
  await fs.writeFile(temp, content, { flag: 'wx' });
  try {
    await fs.link(temp, target);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') throw new Error(`${target} already exists; it was left untouched.`);
    // File systems without hard links: rename after checking, the next best thing.
    if (code === 'EPERM' || code === 'ENOTSUP' || code === 'EXDEV' || code === 'ENOSYS') {
      try {
        await fs.access(target);
        throw new Error(`${target} already exists; it was left untouched.`);
      } catch (accessError) {
        if ((accessError as NodeJS.ErrnoException).code !== 'ENOENT') throw accessError;
      }
      await fs.rename(temp, target);
      return;
    }
    throw error;
  } finally {
    await fs.rm(temp, { force: true });
  }
}
