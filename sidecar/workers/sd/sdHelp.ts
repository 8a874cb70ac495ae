/**
 * What a stable-diffusion.cpp binary supports, read from its `--help` output.
 *
 * sd.cpp changes its flags often (`--clip-on-cpu` became `--backend te=cpu`, `sd` became `sd-cli`), so the worker
 * never assumes a version: it asks the binary once and plans with what it finds.
 */

import { basename } from 'node:path';
import { loadExeca } from '../../loadExeca';
import type { SdCapabilities } from '../../core/types';

export type SdBinaryKind = 'sd-cli' | 'sd' | 'sd-server';

/** Everything the worker learns from one binary's usage text. */
export interface SdHelpInfo {
  binaryPath: string;
  kind: SdBinaryKind;
  capabilities: SdCapabilities;
  /** Every option name the usage text lists (`--vae-tiling`, `-M`...), sorted. */
  flags: string[];
  /** `--auto-fit on|off`: newer builds place weights themselves unless told not to. */
  autoFit: boolean;
  /** `-o` accepts printf-style `%d` patterns (numbered images, video frames as separate files). */
  outputPattern: boolean;
  /** The legacy per-part CPU flags the binary lists (old builds may lack one of them). */
  legacyCpuFlags: { clip: boolean; vae: boolean };
}

/** The binary is missing, cannot run, or is not sd.cpp: the user must point the setting elsewhere. */
export class SdBinaryError extends Error {
  constructor(
    message: string,
    readonly reason: 'missing' | 'not-executable' | 'not-sdcpp' | 'failed',
  ) {
    super(message);
    this.name = 'SdBinaryError';
  }
}

const SETTING_HINT = 'set vramRelay.image.binaryPath to the sd-cli (or sd / sd-server) binary of a stable-diffusion.cpp release';

/** Options that only sd.cpp's usage text lists together; a binary showing fewer than three is something else. */
const SDCPP_MARKERS = [
  '--sampling-method',
  '--cfg-scale',
  '--diffusion-model',
  '--vae-tiling',
  '--clip_l',
  '--t5xxl',
  '--taesd',
  '--batch-count',
  '--negative-prompt',
  '--lora-model-dir',
];

/**
 * Reads a usage text. Throws SdBinaryError('not-sdcpp') when the text is not sd.cpp's.
 * `binaryPath` names the binary in messages and breaks ties between `sd` and `sd-cli`.
 */
export function parseSdHelp(helpText: string, binaryPath: string): SdHelpInfo {
  const text = helpText.replace(/\r\n?/g, '\n');
  const flags = listedFlags(text);
  const markers = SDCPP_MARKERS.filter((m) => flags.has(m));
  if (markers.length < 3 || !/usage:/i.test(text)) {
    const firstLine = text.split('\n').find((l) => l.trim() !== '')?.trim().slice(0, 120) ?? '(no output)';
    throw new SdBinaryError(
      `${binaryPath} does not look like stable-diffusion.cpp (sd-cli): its --help output lists none of the usual ` +
        `sd.cpp options (--sampling-method, --cfg-scale, --diffusion-model) and begins with "${firstLine}". ` +
        `Check the path and ${SETTING_HINT}.`,
      'not-sdcpp',
    );
  }

  const has = (flag: string) => flags.has(flag);
  const legacyCpuFlags = { clip: has('--clip-on-cpu'), vae: has('--vae-on-cpu') };
  const capabilities: SdCapabilities = {
    cpuPlacementFlags: has('--backend') ? 'backend' : legacyCpuFlags.clip || legacyCpuFlags.vae ? 'legacy' : 'none',
    vaeTiling: has('--vae-tiling'),
    offloadToCpu: has('--offload-to-cpu'),
    diffusionFlashAttention: has('--diffusion-fa'),
    vaeConvDirect: has('--vae-conv-direct'),
    videoGeneration: /\bvid_gen\b/.test(text),
    temporalTiling: has('--temporal-tiling'),
    backend: backendFromPath(binaryPath),
  };

  return {
    binaryPath,
    kind: binaryKind(text, flags, binaryPath),
    capabilities,
    flags: [...flags].sort(),
    autoFit: has('--auto-fit'),
    outputPattern: /printf-style|%d|%0\dd/.test(text) && has('--output'),
    legacyCpuFlags,
  };
}

/**
 * Option names at the start of usage entries. Entries look like `  -s SEED, --seed SEED   desc` (old) or
 * `  -s, --seed <int>   desc` (new); descriptions are separated from names by two or more spaces.
 */
function listedFlags(text: string): Set<string> {
  const flags = new Set<string>();
  for (const line of text.split('\n')) {
    const entry = /^\s{1,8}(-\S.*)$/.exec(line);
    if (!entry) continue;
    const names = entry[1].split(/\s{2,}/)[0];
    for (const match of names.matchAll(/(?:^|[\s,])(--?[A-Za-z][\w-]*)/g)) flags.add(match[1]);
  }
  return flags;
}

function binaryKind(text: string, flags: Set<string>, binaryPath: string): SdBinaryKind {
  const oldServer = flags.has('--port') && flags.has('--host');
  if (flags.has('--listen-port') || flags.has('--listen-ip') || oldServer || /^Server Options:/m.test(text)) return 'sd-server';
  const name = basename(binaryPath).toLowerCase().replace(/\.exe$/, '');
  if (name === 'sd') return 'sd';
  if (name.startsWith('sd-cli')) return 'sd-cli';
  // Releases that ship `sd-cli` group their usage into sections; the old `sd` printed one `arguments:` list.
  return /^CLI Options:/m.test(text) ? 'sd-cli' : 'sd';
}

/**
 * Official release archives name the backend (`...-bin-win-cuda12-x64`, `...-vulkan`), and Find Engines installs
 * into `engines/sd-<tag>-<backend>/`; the usage text never names it. Only the names those create are read: the
 * binary, its folder, and the folders up to the nearest `sd-...` release folder (an archive may nest the binary
 * a few levels down). Whole words only, so a user folder such as `/home/philip/bin` says nothing.
 */
export function backendFromPath(binaryPath: string): SdCapabilities['backend'] {
  const words = releasePathParts(binaryPath)
    .flatMap((part) => part.toLowerCase().split(/[-_.\s]+/))
    .filter(Boolean);
  const has = (pattern: RegExp) => words.some((word) => pattern.test(word));
  if (has(/^(cuda\d*|cu\d+|cublas)$/)) return 'cuda';
  if (has(/^vulkan$/)) return 'vulkan';
  if (has(/^(rocm\d*|hip|hipblas)$/)) return 'rocm';
  if (has(/^(metal|macos|darwin)$/)) return 'metal';
  if (has(/^(avx\d*|noavx|cpu)$/)) return 'cpu';
  return 'unknown';
}

/** How many folders above the binary may still belong to an unpacked release. */
const RELEASE_DEPTH = 4;

/** The binary's name, its folder, and the folders above it up to the nearest `sd-...` one (within RELEASE_DEPTH). */
function releasePathParts(binaryPath: string): string[] {
  // Both separators: the path may be a Windows one whatever platform reads it.
  const parts = binaryPath.split(/[\\/]+/).filter(Boolean);
  const name = parts.pop();
  if (name === undefined) return [];
  const folders = parts.slice(-RELEASE_DEPTH).reverse();
  const release = folders.findIndex((folder) => folder.toLowerCase().startsWith('sd-'));
  return [name, ...(release >= 0 ? folders.slice(0, release + 1) : folders.slice(0, 1))];
}

export interface ProbeOptions {
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
}

/**
 * Runs `<binary> --help` (no shell) and reads the result. sd.cpp prints usage on stdout and exits 0; some builds
 * exit 1 after printing it, so the exit code alone decides nothing.
 */
export async function probeSdBinary(binaryPath: string, options: ProbeOptions = {}): Promise<SdHelpInfo> {
  if (binaryPath.trim() === '') {
    throw new SdBinaryError(`No stable-diffusion.cpp binary is configured: ${SETTING_HINT}, or put sd-cli on PATH.`, 'missing');
  }
  const execa = await loadExeca();
  const result = await execa(binaryPath, ['--help'], {
    reject: false,
    timeout: options.timeoutMs ?? 15_000,
    env: options.env,
    stdin: 'ignore',
    all: true,
  });
  const code = (result as { code?: string }).code;
  if (code === 'ENOENT') {
    throw new SdBinaryError(`The stable-diffusion.cpp binary ${binaryPath} was not found: ${SETTING_HINT}.`, 'missing');
  }
  if (code === 'EACCES' || code === 'ENOEXEC') {
    throw new SdBinaryError(
      `${binaryPath} cannot be run (${code}): make it executable (chmod +x) or ${SETTING_HINT}.`,
      'not-executable',
    );
  }
  if (result.timedOut) {
    throw new SdBinaryError(`${binaryPath} --help did not answer within ${options.timeoutMs ?? 15_000} ms: ${SETTING_HINT}.`, 'failed');
  }
  if (result.failed && result.exitCode === undefined) {
    throw new SdBinaryError(`${binaryPath} could not be started: ${result.shortMessage}. Check the path, or ${SETTING_HINT}.`, 'failed');
  }
  return parseSdHelp(String(result.all ?? ''), binaryPath);
}

/**
 * A binary's `--help`, probed once and kept; a probe that fails is forgotten so that the next call tries again
 * (the user may be fixing the path). `forget()` after the binary was replaced.
 */
export class SdHelpCache {
  private promise: Promise<SdHelpInfo> | undefined;

  /** `env` is read at each probe: the environment the binary would run with now. */
  constructor(
    private readonly binaryPath: string,
    private readonly env: () => NodeJS.ProcessEnv | undefined,
    known?: SdHelpInfo,
  ) {
    if (known) this.promise = Promise.resolve(known);
  }

  get(): Promise<SdHelpInfo> {
    if (!this.promise) {
      const probe = probeSdBinary(this.binaryPath, { env: this.env() });
      this.promise = probe;
      probe.catch(() => {
        if (this.promise === probe) this.promise = undefined;
      });
    }
    return this.promise;
  }

  forget(): void {
    this.promise = undefined;
  }
}
