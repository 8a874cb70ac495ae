/**
 * The check a downloaded sd.cpp binary must pass before it is installed: the sidecar's own `--help` probe, with
 * its failure reworded for a file that is about to be deleted (no staging path, no advice to fix the setting).
 */

import * as path from 'node:path';
import { probeSdBinary, SdBinaryError, type SdHelpInfo } from '../../sidecar/workers/sd/sdHelp';

export async function checkDownloadedSd(binaryPath: string): Promise<SdHelpInfo> {
  try {
    return await probeSdBinary(binaryPath);
  } catch (error) {
    throw new Error(checkFailureWords(error, binaryPath));
  }
}

/** Why the probe failed, in a few words (a missing library or an old C library shows in the printed line). */
export function checkFailureWords(error: unknown, binaryPath: string): string {
  const message = error instanceof Error ? error.message : String(error);
  if (error instanceof SdBinaryError && error.reason === 'not-sdcpp') {
    const printed = /begins with "(.*)"\.\s/s.exec(message)?.[1];
    return printed ? `its --help printed "${printed}" instead of sd.cpp's usage.` : `its --help output is not sd.cpp's usage.`;
  }
  const name = path.basename(binaryPath);
  const sentence = message.split(binaryPath).join(name).split(/:\s+(?:make it executable|set vramRelay|Check the path)/)[0];
  return sentence.endsWith('.') ? sentence : `${sentence}.`;
}
