/**
 * Command line of the sidecar entry point. Two ways to start it:
 * - by the extension (vscode-languageclient, TransportKind.ipc): `--node-ipc` and an IPC channel; other
 *   arguments belong to vscode-languageclient and are left alone;
 * - by hand or by another app: `--serve [--port N] [--token-file PATH] [--device auto|simulated] ...`.
 */

import { parseArgs } from 'node:util';
import type { LogLevel } from '../api';
import type { SidecarSettings } from '../protocol';
import { parseLogLevel } from './stderrLog';
import { defaultStateDir, defaultTokenFile } from './tokenFile';

export const USAGE = `Usage:
  node dist/sidecar.js --serve [options]   serve the API on a loopback WebSocket for local apps
  (started by the VS Code extension with --node-ipc, it speaks over the IPC channel instead)

Options:
  --port N                    TCP port on 127.0.0.1 (default 0: any free port)
  --token-file PATH           where {port, token, pid} is written, mode 0600 (default: ${defaultTokenFile()})
  --device auto|simulated     probe the real GPU, or use the simulated demo device (default auto)
  --simulated-capacity-mib N  capacity of the simulated device (default 12288)
  --allow-origin ORIGIN       let this browser origin connect (repeatable; default none)
  --log-level LEVEL           error, warn, info or debug (default info, or $VRAM_RELAY_LOG_LEVEL)
  -h, --help                  show this text`;

/** A command line mistake; the entry point prints the message and the usage and exits with status 2. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

export interface ServeOptions {
  port: number;
  tokenFile: string;
  device: SidecarSettings['device'];
  simulatedCapacityMiB: number;
  allowedOrigins: string[];
  logLevel: LogLevel;
}

export type Command = { mode: 'ipc'; logLevel: LogLevel } | { mode: 'serve'; options: ServeOptions } | { mode: 'help' };

function integer(value: string, flag: string, min: number, max: number): number {
  if (!/^\d+$/.test(value) || Number(value) < min || Number(value) > max) {
    throw new UsageError(`${flag} needs a whole number from ${min} to ${max}, not '${value}'.`);
  }
  return Number(value);
}

/**
 * @param argv the arguments after the script (`process.argv.slice(2)`)
 * @param hasIpcChannel whether the process was started with an IPC channel (`process.send` exists)
 */
export function parseCommand(argv: readonly string[], hasIpcChannel: boolean, env: NodeJS.ProcessEnv = process.env): Command {
  const envLevel = () => {
    try {
      return parseLogLevel(env.VRAM_RELAY_LOG_LEVEL);
    } catch (error) {
      throw new UsageError(`VRAM_RELAY_LOG_LEVEL: ${(error as Error).message}`);
    }
  };
  if (argv.includes('--node-ipc') || (hasIpcChannel && !argv.includes('--serve'))) {
    return { mode: 'ipc', logLevel: envLevel() };
  }

  let values;
  try {
    ({ values } = parseArgs({
      args: [...argv],
      strict: true,
      allowPositionals: false,
      options: {
        serve: { type: 'boolean' },
        port: { type: 'string' },
        'token-file': { type: 'string' },
        device: { type: 'string' },
        'simulated-capacity-mib': { type: 'string' },
        'allow-origin': { type: 'string', multiple: true },
        'log-level': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  if (values.help) return { mode: 'help' };
  if (!values.serve) throw new UsageError('Nothing to do: pass --serve to start the WebSocket API.');

  const device = values.device ?? 'auto';
  if (device !== 'auto' && device !== 'simulated') {
    throw new UsageError(`--device must be 'auto' or 'simulated', not '${device}'.`);
  }
  let logLevel: LogLevel;
  try {
    logLevel = values['log-level'] === undefined ? envLevel() : parseLogLevel(values['log-level']);
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  return {
    mode: 'serve',
    options: {
      port: values.port === undefined ? 0 : integer(values.port, '--port', 0, 65535),
      tokenFile: values['token-file'] || defaultTokenFile(),
      device,
      simulatedCapacityMiB:
        values['simulated-capacity-mib'] === undefined ? 12288 : integer(values['simulated-capacity-mib'], '--simulated-capacity-mib', 1024, 1 << 24),
      allowedOrigins: values['allow-origin'] ?? [],
      logLevel,
    },
  };
}

/** Settings of a standalone sidecar until a client sends its own with `vramRelay/configure`. */
export function standaloneSettings(options: ServeOptions): SidecarSettings {
  return {
    device: options.device,
    simulatedCapacityMiB: options.simulatedCapacityMiB,
    safetyMarginMiB: 512,
    pollIntervalMs: 1000,
    llm: { modelPath: '', engine: 'embedded', serverPath: '', contextSize: 4096, idleWarmSeconds: 0, idleColdSeconds: 0 },
    image: { binaryPath: '', modelPath: '', keepResident: false },
    storageDir: defaultStateDir(),
    // Started by the user, not by an untrusted workspace.
    allowBinaries: true,
  };
}
