/**
 * Runs the vendor tools (nvidia-smi, rocm-smi, sysctl) without a shell, with a time limit so that a wedged driver
 * cannot block the sidecar, and says in words what went wrong.
 */

import type { Options, ResultPromise } from 'execa';

export interface ToolOptions {
  timeoutMs: number;
  /** Extra environment (merged over the sidecar's); PATH here decides where the tool is looked up. */
  env?: NodeJS.ProcessEnv;
  /** Ends the tool early (the probe was disposed): no vendor tool outlives the sidecar's interest in it. */
  signal?: AbortSignal;
}

export type ToolResult =
  | { ok: true; stdout: string; stderr: string }
  | { ok: false; stdout: string; stderr: string; problem: 'not found' | 'timed out' | 'failed'; message: string };

import { loadExeca } from '../loadExeca';

export async function runTool(command: string, args: string[], options: ToolOptions): Promise<ToolResult> {
  const execa = await loadExeca();
  const result = await execa(command, args, {
    timeout: options.timeoutMs,
    env: options.env,
    cancelSignal: options.signal,
    stdin: 'ignore',
    reject: false,
    windowsHide: true,
    forceKillAfterDelay: 1000,
    maxBuffer: 4 * 1024 * 1024,
  });
  const stdout = String(result.stdout ?? '');
  const stderr = String(result.stderr ?? '');
  if (!result.failed) return { ok: true, stdout, stderr };
  const shown = `${command} ${args.join(' ')}`;
  if (result.code === 'ENOENT') {
    return { ok: false, stdout, stderr, problem: 'not found', message: `${command} is not on PATH` };
  }
  if (result.isCanceled) {
    return { ok: false, stdout, stderr, problem: 'failed', message: `${command} was stopped: the device probe was closed` };
  }
  if (result.timedOut) {
    return { ok: false, stdout, stderr, problem: 'timed out', message: `${command} did not answer within ${options.timeoutMs} ms` };
  }
  const said = firstLine(stderr) || firstLine(stdout);
  const how = result.exitCode !== undefined ? `exit code ${result.exitCode}` : (result.signal ?? result.code ?? 'unknown error');
  return { ok: false, stdout, stderr, problem: 'failed', message: `${shown} failed (${how})${said ? `: ${said}` : ''}` };
}

/**
 * Starts a long-running tool whose stdout the caller reads line by line. Wrapped in an object because the
 * subprocess is itself a promise (of its end), which an `await` would wait for.
 */
export async function startTool(command: string, args: string[], env?: NodeJS.ProcessEnv): Promise<{ subprocess: ResultPromise<Options> }> {
  const execa = await loadExeca();
  const subprocess = execa(command, args, {
    env,
    stdin: 'ignore',
    reject: false,
    buffer: false,
    windowsHide: true,
    forceKillAfterDelay: 1000,
  }) as ResultPromise<Options>;
  return { subprocess };
}

export function firstLine(text: string): string {
  return (
    text
      .split(/\r?\n/)
      .map((l) => l.trim())
      .find((l) => l.length > 0) ?? ''
  );
}
