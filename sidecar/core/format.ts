/**
 * How sizes and durations read in every message a person sees (decision reasons, suggestions, errors, the panel).
 * One formatter so that `6.5 GB` means the same thing everywhere. Units are binary (1 GB = 1024^3 bytes), the way
 * llama.cpp and sd.cpp print their `MiB`/`MB` buffer sizes.
 */

import type { Bytes, Millis } from './types';
import { GiB, KiB, MiB } from './types';

/** `6.5 GB`, `300 MB`, `12 KB`, `0 B`. One decimal in GB; whole MB below 1 GB. Negative sizes keep their sign. */
export function formatBytes(bytes: Bytes): string {
  if (!Number.isFinite(bytes)) return `${bytes} B`;
  const sign = bytes < 0 ? '-' : '';
  const abs = Math.abs(bytes);
  // Round first, so that 1023.7 MB reads as 1.0 GB rather than 1024 MB.
  if (abs >= GiB - MiB / 2) return `${sign}${(abs / GiB).toFixed(1)} GB`;
  if (abs >= MiB - KiB / 2) return `${sign}${Math.round(abs / MiB)} MB`;
  if (abs >= KiB) return `${sign}${Math.round(abs / KiB)} KB`;
  return `${sign}${Math.round(abs)} B`;
}

/** `1.8 s`, `250 ms`, `2 min 5 s`. */
export function formatDuration(ms: Millis): string {
  if (!Number.isFinite(ms)) return `${ms} ms`;
  const sign = ms < 0 ? '-' : '';
  const abs = Math.abs(ms);
  if (abs < 1000) return `${sign}${Math.round(abs)} ms`;
  if (abs < 60_000) return `${sign}${(abs / 1000).toFixed(1)} s`;
  const minutes = Math.floor(abs / 60_000);
  const seconds = Math.round((abs - minutes * 60_000) / 1000);
  return `${sign}${minutes} min${seconds ? ` ${seconds} s` : ''}`;
}

/** `+1.8 s`: an extra time, as plans and decisions state it. */
export function formatExtraTime(ms: Millis): string {
  return ms <= 0 ? '+0 s' : `+${formatDuration(ms)}`;
}

/** `1024x1024`, with `, batch 4` and `, 33 frames` when they apply. */
export function formatImageSize(size: { width: number; height: number; batch?: number; frames?: number }): string {
  let text = `${size.width}x${size.height}`;
  if (size.batch !== undefined && size.batch > 1) text += `, batch ${size.batch}`;
  if (size.frames !== undefined && size.frames > 1) text += `, ${size.frames} frames`;
  return text;
}
