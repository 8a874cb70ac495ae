/** Whether test processes still exist, for tests that check engines were stopped. */

import { readFileSync } from 'node:fs';

/** The pid still names a process (a zombie not yet reaped by its parent counts). */
export function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The process exists and is not a zombie waiting for its parent (Linux: read from /proc; elsewhere: exists). */
export function isRunning(pid: number): boolean {
  if (!processExists(pid)) return false;
  try {
    return !/^\d+ \(.*\) Z/s.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return true;
  }
}
