/**
 * The one error the model header readers throw: bad input the user must fix (retrying will not help).
 * `kind` lets a worker map it onto the `input` failure without parsing the message.
 */

import { stat } from 'node:fs/promises';

export type ModelFileProblem = 'missing' | 'notAFile' | 'notModel' | 'truncated' | 'unsupported';

export class ModelFileError extends Error {
  override readonly name = 'ModelFileError';

  constructor(
    readonly kind: ModelFileProblem,
    readonly path: string,
    message: string,
  ) {
    super(message);
  }
}

/** Size of a model file; a clear error when it is missing or a folder. */
export async function modelFileSize(path: string, expected: string): Promise<number> {
  try {
    const info = await stat(path);
    if (!info.isFile()) throw new ModelFileError('notAFile', path, `${path} is not a file: pick a ${expected} model file.`);
    return info.size;
  } catch (error) {
    if (error instanceof ModelFileError) throw error;
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') {
      throw new ModelFileError('missing', path, `Model file not found: ${path}. Check the path, or pick a ${expected} file that exists.`);
    }
    throw new ModelFileError('missing', path, `Cannot read the model file ${path} (${code ?? String(error)}): check its permissions.`);
  }
}

/** The message for a file that ends before its header says it should. */
export function truncatedMessage(path: string, fileSize: number, needed: number): string {
  return (
    `${path} is truncated: the file has ${fileSize} bytes but its header describes ${needed}. ` +
    'The download or copy did not finish: download the model again.'
  );
}
