/**
 * Which archive of a stable-diffusion.cpp release fits this machine (pure).
 *
 * The release CI names every archive after the runner that built it (`.github/workflows/build.yml` upstream):
 *   sd-master-<hash>-bin-Linux-Ubuntu-24.04-x86_64.zip              Linux, CPU
 *   sd-master-<hash>-bin-Linux-Ubuntu-24.04-x86_64-vulkan.zip       Linux, Vulkan
 *   sd-master-<hash>-bin-Linux-Ubuntu-24.04-x86_64-rocm-7.14.0.zip  Linux, ROCm (needs ROCm installed)
 *   sd-master-<hash>-bin-Darwin-macOS-26.6.2-arm64.zip              macOS, Metal (built for arm64 and x86_64)
 *   sd-master-<hash>-bin-win-cpu-x64.zip                            Windows, CPU (older: win-avx2 / avx / avx512 / noavx)
 *   sd-master-<hash>-bin-win-cuda12-x64.zip                         Windows, CUDA 12, with its runtime in
 *   cudart-sd-bin-win-cu12-x64.zip                                  (the CUDA runtime DLLs, needed beside it)
 *   sd-master-<hash>-bin-win-vulkan-x64.zip                         Windows, Vulkan
 *   sd-master-<hash>-bin-win-rocm-7.14.0-x64.zip                    Windows, ROCm/HIP
 * There is no Linux CUDA archive: an NVIDIA card on Linux runs the Vulkan build. Names are parsed, never
 * guessed: a release that renames its archives yields no choice, and the user is sent to the releases page.
 */

export type SdBuildBackend = 'cuda' | 'vulkan' | 'rocm' | 'metal' | 'cpu';
export type ReleaseOs = 'linux' | 'windows' | 'macos';
export type ReleaseArch = 'x64' | 'arm64';

/** One downloadable file of a release, as the GitHub releases API lists it. */
export interface ReleaseAsset {
  name: string;
  size: number;
  /** `sha256:<hex>` since GitHub started publishing digests (June 2025); null or absent for older uploads. */
  digest: string | null;
  /** `browser_download_url`. */
  url: string;
}

export interface EngineRelease {
  tag: string;
  name: string;
  /** The release's page, for the user to read and to download by hand. */
  htmlUrl: string;
  publishedAt?: string;
  assets: ReleaseAsset[];
}

/** What an archive's name says about the build inside. */
export interface AssetBuild {
  os: ReleaseOs;
  arch: ReleaseArch;
  backend: SdBuildBackend;
  /** The name's own word for the build: `cuda12`, `rocm-7.14.0`, `avx2`, `Ubuntu-24.04`... */
  variant: string;
  /** A runtime-only archive (the CUDA DLLs) that goes beside a binary archive, never alone. */
  runtimeOnly: boolean;
}

/** One choice the user can make: the binary archive, plus the archives that must be unpacked beside it. */
export interface EngineDownloadChoice {
  asset: ReleaseAsset;
  build: AssetBuild;
  companions: ReleaseAsset[];
  /** Bytes to download (the archive and its companions). */
  totalBytes: number;
  /** Short words for a picker: `CUDA 12`, `Vulkan`, `CPU (AVX2)`. */
  label: string;
  /** What the user should know before picking it (a runtime it needs, where it runs). */
  note?: string;
}

export interface HostPlatform {
  /** `process.platform`. */
  platform: NodeJS.Platform;
  /** `process.arch`. */
  arch: string;
}

/** The release JSON is not what the API returns: a message that says what to do. */
export class ReleaseFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ReleaseFormatError';
  }
}

/** Reads the JSON of `GET /repos/{owner}/{repo}/releases/latest`; throws ReleaseFormatError when it is not one. */
export function parseRelease(json: unknown, releasesPage: string): EngineRelease {
  const bad = (what: string) =>
    new ReleaseFormatError(`The GitHub releases API answered without ${what}: download sd-cli by hand from ${releasesPage} and set vramRelay.image.binaryPath.`);
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw bad('a release');
  const r = json as Record<string, unknown>;
  if (typeof r.tag_name !== 'string' || r.tag_name.trim() === '') throw bad('a release tag');
  if (!Array.isArray(r.assets)) throw bad('a list of files');
  const assets: ReleaseAsset[] = [];
  for (const entry of r.assets) {
    if (typeof entry !== 'object' || entry === null) continue;
    const a = entry as Record<string, unknown>;
    if (typeof a.name !== 'string' || typeof a.browser_download_url !== 'string') continue;
    if (typeof a.size !== 'number' || !Number.isSafeInteger(a.size) || a.size < 0) continue;
    // Only finished uploads can be downloaded.
    if (a.state !== undefined && a.state !== 'uploaded') continue;
    assets.push({ name: a.name, size: a.size, digest: typeof a.digest === 'string' ? a.digest : null, url: a.browser_download_url });
  }
  return {
    tag: r.tag_name,
    name: typeof r.name === 'string' && r.name.trim() !== '' ? r.name : r.tag_name,
    htmlUrl: typeof r.html_url === 'string' ? r.html_url : releasesPage,
    ...(typeof r.published_at === 'string' ? { publishedAt: r.published_at } : {}),
    assets,
  };
}

const ARCH_WORDS: Record<string, ReleaseArch> = { x86_64: 'x64', x64: 'x64', amd64: 'x64', aarch64: 'arm64', arm64: 'arm64' };

const CPU_VARIANTS = ['cpu', 'avx2', 'avx', 'avx512', 'noavx'];

/** What an archive's name says about its build; undefined for names that follow none of the known patterns. */
export function describeAsset(name: string): AssetBuild | undefined {
  const runtime = /^cudart-.*-bin-win-cu(\d+)-(x64|arm64)\.zip$/i.exec(name);
  if (runtime) return { os: 'windows', arch: ARCH_WORDS[runtime[2].toLowerCase()], backend: 'cuda', variant: `cuda${runtime[1]}`, runtimeOnly: true };

  const bin = /^sd-.+?-bin-(.+)\.zip$/i.exec(name);
  if (!bin) return undefined;
  const rest = bin[1];

  const windows = /^win-(.+)-(x64|arm64)$/i.exec(rest);
  if (windows) {
    const backend = backendWord(windows[1]);
    return backend ? { os: 'windows', arch: ARCH_WORDS[windows[2].toLowerCase()], backend, variant: windows[1].toLowerCase(), runtimeOnly: false } : undefined;
  }

  const linux = /^Linux-(.+?)-(x86_64|aarch64|arm64)(?:-(.+))?$/i.exec(rest);
  if (linux) {
    const backend = linux[3] === undefined ? 'cpu' : backendWord(linux[3]);
    return backend
      ? { os: 'linux', arch: ARCH_WORDS[linux[2].toLowerCase()], backend, variant: linux[3]?.toLowerCase() ?? linux[1], runtimeOnly: false }
      : undefined;
  }

  const mac = /^Darwin-macOS-([\d.]+)-(arm64|x86_64)$/i.exec(rest);
  if (mac) return { os: 'macos', arch: ARCH_WORDS[mac[2].toLowerCase()], backend: 'metal', variant: `macOS-${mac[1]}`, runtimeOnly: false };
  return undefined;
}

function backendWord(word: string): SdBuildBackend | undefined {
  const w = word.toLowerCase();
  if (CPU_VARIANTS.includes(w)) return 'cpu';
  if (/^(cuda|cu)\d*/.test(w) || w === 'cublas') return 'cuda';
  if (w === 'vulkan') return 'vulkan';
  if (/^(rocm|hip)/.test(w)) return 'rocm';
  return undefined;
}

export function hostOs(platform: NodeJS.Platform): ReleaseOs | undefined {
  if (platform === 'linux') return 'linux';
  if (platform === 'win32') return 'windows';
  if (platform === 'darwin') return 'macos';
  return undefined;
}

/**
 * Every archive of the release that can run here, each with the archives it needs beside it, in the order a
 * picker should show them (GPU builds first, CPU last). Empty when the release has nothing for this platform.
 */
export function downloadChoices(release: EngineRelease, host: HostPlatform): EngineDownloadChoice[] {
  const os = hostOs(host.platform);
  const arch = ARCH_WORDS[host.arch];
  if (!os || !arch) return [];
  const described = release.assets.flatMap((asset) => {
    const build = describeAsset(asset.name);
    return build && build.os === os ? [{ asset, build }] : [];
  });
  const runtimes = described.filter((d) => d.build.runtimeOnly && d.build.arch === arch);
  const choices: EngineDownloadChoice[] = [];
  for (const { asset, build } of described) {
    if (build.runtimeOnly) continue;
    // The macOS archive is one universal build (arm64 and x86_64) named after the arm64 runner; the --help
    // check after unpacking confirms it starts on an Intel Mac.
    const universalMac = os === 'macos' && build.arch === 'arm64' && arch === 'x64' && !described.some((d) => d.build.arch === 'x64');
    if (build.arch !== arch && !universalMac) continue;
    // A Windows CUDA build needs the CUDA runtime archive of its major version beside it.
    const companions =
      os === 'windows' && build.backend === 'cuda' ? runtimes.filter((r) => cudaMajor(r.build.variant) === cudaMajor(build.variant)).map((r) => r.asset) : [];
    choices.push({
      asset,
      build,
      companions,
      totalBytes: asset.size + companions.reduce((sum, c) => sum + c.size, 0),
      label: choiceLabel(build),
      ...noteFor(build, companions.length > 0, universalMac),
    });
  }
  return choices.sort((a, b) => rank(a.build) - rank(b.build) || a.asset.name.localeCompare(b.asset.name));
}

function cudaMajor(variant: string): string {
  return /(\d+)/.exec(variant)?.[1] ?? '';
}

const BACKEND_ORDER: SdBuildBackend[] = ['cuda', 'metal', 'rocm', 'vulkan', 'cpu'];

function rank(build: AssetBuild): number {
  const backend = BACKEND_ORDER.indexOf(build.backend) * 10;
  // Among CPU builds, the one that picks its instruction set at run time comes first, then the safest ones.
  return build.backend === 'cpu' ? backend + Math.max(0, CPU_VARIANTS.indexOf(build.variant)) : backend;
}

function choiceLabel(build: AssetBuild): string {
  switch (build.backend) {
    case 'cuda':
      return `CUDA ${cudaMajor(build.variant)}`.trim();
    case 'vulkan':
      return 'Vulkan';
    case 'rocm': {
      const version = /(\d+(?:\.\d+)*)/.exec(build.variant)?.[1];
      return version ? `ROCm ${version}` : 'ROCm';
    }
    case 'metal':
      return 'Metal';
    case 'cpu':
      return build.variant === 'cpu' || build.os !== 'windows' ? 'CPU' : `CPU (${build.variant.toUpperCase()})`;
  }
}

function noteFor(build: AssetBuild, withRuntime: boolean, universalMac: boolean): { note?: string } {
  if (universalMac) return { note: 'Universal macOS build (arm64 and Intel); it is checked after unpacking.' };
  switch (build.backend) {
    case 'cuda':
      return { note: withRuntime ? 'NVIDIA GPUs; includes the CUDA runtime archive.' : 'NVIDIA GPUs; needs the CUDA runtime installed.' };
    case 'vulkan':
      return { note: 'NVIDIA, AMD and Intel GPUs through the graphics driver.' };
    case 'rocm':
      return { note: build.os === 'linux' ? 'AMD GPUs; needs ROCm installed.' : 'AMD GPUs; needs a current AMD driver.' };
    case 'metal':
      return { note: 'Apple silicon GPUs.' };
    case 'cpu':
      return { note: 'No GPU: slow, but runs anywhere.' };
  }
}

/** What the extension knows of the GPU, from the sidecar's device probe. */
export interface DeviceHint {
  /** `real` when a GPU tool (or the CPU fallback) answered; `simulated` is the demo device and says nothing. */
  source: 'real' | 'simulated' | 'cpu-only';
  /** Device kinds found: `nvidia`, `amd`, `apple`, `cpu`, `sim`... */
  kinds: string[];
}

/** Backends to suggest for each GPU maker, best first: the first one the release has a build of wins. */
const SUGGESTIONS: Record<string, SdBuildBackend[]> = {
  // No Linux CUDA build is published (yet): NVIDIA on Linux runs the Vulkan build.
  nvidia: ['cuda', 'vulkan'],
  // Vulkan works with the graphics driver alone; ROCm stays in the list for those who have it installed.
  amd: ['vulkan', 'rocm'],
  apple: ['metal'],
};

/**
 * The backend to suggest for the probed devices among those the release offers here (`available`, in any
 * order), or undefined when the probe says nothing useful.
 */
export function suggestedBackend(hint: DeviceHint | undefined, host: HostPlatform, available: readonly SdBuildBackend[]): SdBuildBackend | undefined {
  if (!hint || hint.source === 'simulated') return undefined;
  const maker = ['nvidia', 'amd', 'apple'].find((kind) => hint.kinds.includes(kind)) ?? (hostOs(host.platform) === 'macos' ? 'apple' : undefined);
  return maker ? SUGGESTIONS[maker].find((backend) => available.includes(backend)) : undefined;
}

/** The choice to offer first: the suggested backend's first archive, when there is exactly one kind of it. */
export function preferredChoice(choices: readonly EngineDownloadChoice[], backend: SdBuildBackend | undefined): EngineDownloadChoice | undefined {
  if (!backend) return undefined;
  return choices.find((choice) => choice.build.backend === backend);
}

/** A folder name for the release and build: only safe characters, whatever the API said. */
export function engineFolderName(tag: string, backend: SdBuildBackend): string {
  const safeTag = tag.replace(/[^A-Za-z0-9._-]+/g, '-').replace(/^[.-]+/, '').slice(0, 80) || 'release';
  // The backend in the path also tells the sidecar what the binary was built for (sdHelp's backendFromPath).
  return `sd-${safeTag}-${backend}`;
}
