/**
 * Taking one device reading for a decision: with a time limit of its own (a wedged driver must not stall the
 * queue), a few attempts (one failed nvidia-smi run should not fail a job), and a check that the figures make
 * sense (a NaN or negative "free" must never reach the planner, which would then blame the model). Pure apart
 * from the timer; the sleep between attempts comes from the caller's clock.
 */

import { formatBytes, formatDuration } from './format';
import type { Bytes, DeviceSnapshot, Millis } from './types';

/** A reading that could not be taken or made no sense: the device's fault, never the model's. */
export class DeviceReadingError extends Error {
  override readonly name = 'DeviceReadingError';
}

export interface ReadingPolicy {
  /** Longest wait for one reading. */
  timeoutMs: Millis;
  /** Readings tried before giving up (at least 1). */
  attempts: number;
  /** Pause between attempts. */
  retryDelayMs: Millis;
  sleep: (ms: Millis) => Promise<void>;
}

export const DEFAULT_READING_TIMEOUT_MS = 10_000;
export const DEFAULT_READING_ATTEMPTS = 3;

/** Why a reading cannot be planned with, or undefined when its figures are plausible. */
export function readingProblem(s: DeviceSnapshot): string | undefined {
  const figures: [string, Bytes][] = [
    ['total', s.total],
    ['used', s.used],
    ['free', s.free],
  ];
  const bad = figures.filter(([, v]) => typeof v !== 'number' || !Number.isFinite(v) || v < 0);
  if (bad.length) return `it gave ${bad.map(([name, v]) => `${name} = ${String(v)}`).join(', ')}`;
  if (s.total === 0) return 'it gave a total of 0 bytes';
  // Drivers round and lag a little; a free or used figure far beyond the total is not a reading.
  const slack = Math.max(s.total * 0.05, 64 * 2 ** 20);
  if (s.free > s.total + slack) return `it gave ${formatBytes(s.free)} free of ${formatBytes(s.total)}`;
  if (s.used > s.total + slack) return `it gave ${formatBytes(s.used)} used of ${formatBytes(s.total)}`;
  return undefined;
}

function withTimeLimit<T>(promise: Promise<T>, ms: Millis): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new DeviceReadingError(`no reading within ${formatDuration(ms)}`)), ms);
  });
  return Promise.race([promise, limit]).finally(() => clearTimeout(timer));
}

/**
 * One plausible reading from `read`, or a DeviceReadingError that says what went wrong on the last attempt and
 * what to do about it.
 */
export async function takeReading(read: () => Promise<DeviceSnapshot>, policy: ReadingPolicy): Promise<DeviceSnapshot> {
  const attempts = Math.max(1, Math.floor(policy.attempts));
  let last = '';
  for (let attempt = 1; attempt <= attempts; attempt++) {
    if (attempt > 1) await policy.sleep(policy.retryDelayMs);
    try {
      const snapshot = await withTimeLimit(Promise.resolve().then(read), policy.timeoutMs);
      const problem = readingProblem(snapshot);
      if (!problem) return snapshot;
      last = `the figures make no sense (${problem})`;
    } catch (error) {
      last = (error as Error).message || String(error);
    }
  }
  const tries = attempts > 1 ? ` (${attempts} tries)` : '';
  return Promise.reject(
    new DeviceReadingError(
      `Could not read the GPU memory${tries}: ${last}. Check that the GPU driver answers (run nvidia-smi or rocm-smi in a terminal), then run the job again; vramRelay.memory.device = "simulated" runs the demo device instead.`,
    ),
  );
}
