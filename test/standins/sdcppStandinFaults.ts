/**
 * The stand-in's knobs for fault tests: time spent in each stage (so that a test can kill the process from outside
 * while it is in that stage), a crash that happens in the first run only (so that the rerun can succeed), and
 * saving the way sd.cpp saves.
 *
 * sd.cpp saves with stb_image_write: `stbi_write_png` opens the file, writes it with `fwrite` and closes it without
 * checking either, and returns 1. So a file that cannot be opened (read-only or deleted folder) is reported as
 * `save result image 0 to '...' (failure)` and, in current sd-cli, `0/1 images saved` and exit 1; a disk that fills
 * up during the write still logs `(success)` and leaves a truncated file. Older `sd` logs
 * `save result image to '...'` whatever happened and exits 0.
 *
 * Knobs (environment):
 *   SDCPP_STANDIN_STAGE_MS=<ms>     time spent in model loading, text encoding, VAE decode and encoding the image
 *                                   before saving (default 0)
 *   SDCPP_STANDIN_SAVE_MS=<ms>      each image is written in 4 pieces spread over this time, so that a process
 *                                   killed meanwhile leaves a partly written file (default 0: one write)
 *   SDCPP_STANDIN_CRASH_ONCE=<file> SDCPP_STANDIN_CRASH_AT applies only to the run that creates <file>
 *   SDCPP_STANDIN_DISK_FREE=<bytes> a simulated full disk, for machines where a test cannot mount a small one: no
 *                                   more than this many bytes of each image reach the file, the log still says success
 */

import { closeSync, openSync, writeSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

const SAVE_PIECES = 4;

export interface SdcppStandinFaultOptions {
  /** SDCPP_STANDIN_STAGE_MS */
  stageMs?: number;
  /** SDCPP_STANDIN_SAVE_MS */
  saveMs?: number;
  /** SDCPP_STANDIN_CRASH_ONCE: a file that does not exist yet. */
  crashOnce?: string;
  /** SDCPP_STANDIN_DISK_FREE */
  diskFree?: number;
}

/** The environment for these knobs, to merge with sdcppStandinEnv(). */
export function sdcppStandinFaultEnv(o: SdcppStandinFaultOptions): Record<string, string> {
  const env: Record<string, string> = {};
  if (o.stageMs !== undefined) env.SDCPP_STANDIN_STAGE_MS = String(o.stageMs);
  if (o.saveMs !== undefined) env.SDCPP_STANDIN_SAVE_MS = String(o.saveMs);
  if (o.crashOnce) env.SDCPP_STANDIN_CRASH_ONCE = o.crashOnce;
  if (o.diskFree !== undefined) env.SDCPP_STANDIN_DISK_FREE = String(o.diskFree);
  return env;
}

function millis(value: string | undefined): number {
  const n = Number(value ?? 0);
  return Number.isFinite(n) && n > 0 ? n : 0;
}

/** Drops SDCPP_STANDIN_CRASH_AT from `env` unless this run is the first since CRASH_ONCE's file was removed. */
export function applyCrashOnce(env: NodeJS.ProcessEnv): void {
  const marker = env.SDCPP_STANDIN_CRASH_ONCE;
  if (!marker || !env.SDCPP_STANDIN_CRASH_AT) return;
  try {
    closeSync(openSync(marker, 'wx'));
  } catch {
    delete env.SDCPP_STANDIN_CRASH_AT;
  }
}

/** The simulated work of one stage (not of sampling steps, which SDCPP_STANDIN_STEP_MS times). */
export async function stageWork(env: NodeJS.ProcessEnv, step: number | undefined): Promise<void> {
  const ms = millis(env.SDCPP_STANDIN_STAGE_MS);
  if (ms > 0 && step === undefined) await sleep(ms);
}

/**
 * Writes `data` to `path` as stb_image_write does: false only when the file cannot be opened; write errors
 * (a full disk) are ignored and leave a truncated file.
 */
export async function writeImageLikeSdcpp(env: NodeJS.ProcessEnv, path: string, data: Buffer): Promise<boolean> {
  let fd: number;
  try {
    fd = openSync(path, 'w');
  } catch {
    return false;
  }
  const saveMs = millis(env.SDCPP_STANDIN_SAVE_MS);
  const pieces = saveMs > 0 ? SAVE_PIECES : 1;
  const size = Math.ceil(data.length / pieces);
  const room = env.SDCPP_STANDIN_DISK_FREE !== undefined ? Math.max(0, Math.floor(Number(env.SDCPP_STANDIN_DISK_FREE))) : Infinity;
  let offset = 0;
  try {
    for (let i = 0; i < pieces && offset < data.length; i++) {
      if (i > 0) await sleep(saveMs / pieces);
      const end = Math.min(data.length, (i + 1) * size, room);
      if (end <= offset) return true;
      while (offset < end) {
        // fwrite's result is not checked: after a failed write the rest of the file is simply missing.
        const written = tryWrite(fd, data, offset, end - offset);
        if (written <= 0) return true;
        offset += written;
      }
    }
  } finally {
    try {
      closeSync(fd);
    } catch {
      // fclose's result is not checked either.
    }
  }
  return true;
}

function tryWrite(fd: number, data: Buffer, offset: number, length: number): number {
  try {
    return writeSync(fd, data, offset, length);
  } catch {
    return 0;
  }
}
