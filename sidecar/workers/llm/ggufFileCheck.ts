/** The two mistakes users make most with model paths: a file that is not there, and one that is not GGUF. */

import { open } from 'node:fs/promises';

/** Says what is wrong with `modelPath` as a GGUF model, or undefined when it starts like one. */
export async function ggufFileProblem(modelPath: string): Promise<string | undefined> {
  if (!modelPath) return 'No LLM model is configured: set vramRelay.llm.modelPath to a .gguf model file.';
  let handle;
  try {
    handle = await open(modelPath, 'r');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'does not exist' : code === 'EISDIR' ? 'is a folder' : `cannot be read (${code ?? String(error)})`;
    return `The model file ${modelPath} ${why}: set vramRelay.llm.modelPath to a .gguf model file.`;
  }
  try {
    const magic = Buffer.alloc(4);
    const { bytesRead } = await handle.read(magic, 0, 4, 0);
    if (bytesRead < 4 || magic.toString('latin1') !== 'GGUF') {
      return `${modelPath} is not a GGUF model (it does not start with "GGUF"): choose a .gguf file for llama.cpp.`;
    }
    return undefined;
  } catch (error) {
    return `The model file ${modelPath} cannot be read: ${(error as Error).message}`;
  } finally {
    await handle.close();
  }
}
