/**
 * The sidecar's log sink: one line per message on stderr, filtered by level. Under the extension stderr lands in
 * the LogOutputChannel (which adds its own timestamps); standalone it goes to the terminal. stdout stays free for
 * the one "listening" line.
 */

import type { Log, LogLevel } from '../api';

export const LOG_LEVELS: readonly LogLevel[] = ['error', 'warn', 'info', 'debug'];

export function parseLogLevel(value: string | undefined, fallback: LogLevel = 'info'): LogLevel {
  if (value === undefined || value === '') return fallback;
  const level = value.toLowerCase() as LogLevel;
  if (!LOG_LEVELS.includes(level)) {
    throw new Error(`Unknown log level '${value}': use one of ${LOG_LEVELS.join(', ')}.`);
  }
  return level;
}

export interface StderrLogOptions {
  level: LogLevel;
  /** Prefix lines with an ISO time (standalone); the extension's channel adds its own. */
  timestamps: boolean;
  write?: (line: string) => void;
}

export function createStderrLog(options: StderrLogOptions): Log {
  const threshold = LOG_LEVELS.indexOf(options.level);
  const write = options.write ?? ((line: string) => process.stderr.write(line));
  return (level, message) => {
    if (LOG_LEVELS.indexOf(level) > threshold) return;
    const time = options.timestamps ? `${new Date().toISOString()} ` : '';
    write(`${time}[${level}] ${message}\n`);
  };
}
