/**
 * Number formatting shared by the status bar, the notifications and the budget panel (which bundles this file
 * too, so it stays free of `vscode` and Node imports).
 */

const GIB = 1024 * 1024 * 1024;
const MIB = 1024 * 1024;

/** `5.2 GB` from bytes; figures under 1 GiB are shown in MB so small buffers stay readable. */
export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes)) return '?';
  const sign = bytes < 0 ? '-' : '';
  const abs = Math.abs(bytes);
  if (abs >= GIB) return `${sign}${(abs / GIB).toFixed(1)} GB`;
  return `${sign}${Math.round(abs / MIB)} MB`;
}

/** `5.2` from bytes, in GiB with one decimal: the compact figure the status bar shows. */
export function formatGiB(bytes: number): string {
  return Number.isFinite(bytes) ? (bytes / GIB).toFixed(1) : '?';
}

/** `+1.8 s`, `+850 ms`, `+2 min 5 s`. */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms)) return '?';
  const abs = Math.abs(ms);
  if (abs < 1000) return `${Math.round(ms)} ms`;
  if (abs < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  const minutes = Math.floor(abs / 60_000);
  const seconds = Math.round((abs % 60_000) / 1000);
  return `${ms < 0 ? '-' : ''}${minutes} min ${seconds} s`;
}

/** `14:03:27` in local time, for decision logs. */
export function formatClock(at: number): string {
  const d = new Date(at);
  const pad = (n: number) => String(n).padStart(2, '0');
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}
