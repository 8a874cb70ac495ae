import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import {
  describeAsset,
  downloadChoices,
  engineFolderName,
  parseRelease,
  preferredChoice,
  ReleaseFormatError,
  suggestedBackend,
  type EngineRelease,
} from '../../../src/engineDownload/releaseAssets';
import { backendFromPath } from '../../../sidecar/workers/sd/sdHelp';

const PAGE = 'https://github.com/leejet/stable-diffusion.cpp/releases';
const fixture = (name: string): EngineRelease =>
  parseRelease(JSON.parse(readFileSync(path.join(__dirname, '../../fixtures/releases', name), 'utf8')), PAGE);

const current = fixture('sd-master-889-c678dfe.json');
const older = fixture('sd-master-525-d6dd6d7-no-digests.json');
const names = (release: EngineRelease, platform: NodeJS.Platform, arch: string) =>
  downloadChoices(release, { platform, arch }).map((choice) => [choice.label, choice.asset.name, ...choice.companions.map((c) => c.name)]);

describe('parseRelease', () => {
  it('reads tag, page and every uploaded asset with its size, digest and download URL', () => {
    assert.equal(current.tag, 'master-889-c678dfe');
    assert.equal(current.htmlUrl, 'https://github.com/leejet/stable-diffusion.cpp/releases/tag/master-889-c678dfe');
    assert.equal(current.assets.length, 9);
    const linux = current.assets.find((a) => a.name === 'sd-master-c678dfe-bin-Linux-Ubuntu-24.04-x86_64.zip');
    assert.deepEqual(linux, {
      name: 'sd-master-c678dfe-bin-Linux-Ubuntu-24.04-x86_64.zip',
      size: 25_417_929,
      digest: 'sha256:1d8dc3ecd046a666957b5775712a6f81fded1a5bc57a981e4c0c401a04fca28c',
      url: 'https://github.com/leejet/stable-diffusion.cpp/releases/download/master-889-c678dfe/sd-master-c678dfe-bin-Linux-Ubuntu-24.04-x86_64.zip',
    });
    assert.ok(older.assets.every((a) => a.digest === null));
  });

  it('skips assets still uploading or without a size, and refuses what is not a release', () => {
    const release = parseRelease(
      {
        tag_name: 'master-1-abc',
        assets: [
          { name: 'a.zip', size: 1, state: 'starter', browser_download_url: 'u' },
          { name: 'b.zip', browser_download_url: 'u' },
          { name: 'c.zip', size: 3, browser_download_url: 'u', digest: 'sha256:00' },
        ],
      },
      PAGE,
    );
    assert.deepEqual(
      release.assets.map((a) => a.name),
      ['c.zip'],
    );
    assert.equal(release.name, 'master-1-abc');
    assert.equal(release.htmlUrl, PAGE);
    assert.throws(() => parseRelease({ message: 'Not Found' }, PAGE), (error: unknown) => error instanceof ReleaseFormatError && error.message.includes(PAGE));
    assert.throws(() => parseRelease([], PAGE), ReleaseFormatError);
    assert.throws(() => parseRelease({ tag_name: 'x' }, PAGE), /list of files/);
  });
});

describe('describeAsset', () => {
  it('reads OS, architecture and backend from the names the release CI gives', () => {
    const cases: [string, ReturnType<typeof describeAsset>][] = [
      ['sd-master-c678dfe-bin-Linux-Ubuntu-24.04-x86_64.zip', { os: 'linux', arch: 'x64', backend: 'cpu', variant: 'Ubuntu-24.04', runtimeOnly: false }],
      ['sd-master-c678dfe-bin-Linux-Ubuntu-24.04-x86_64-vulkan.zip', { os: 'linux', arch: 'x64', backend: 'vulkan', variant: 'vulkan', runtimeOnly: false }],
      ['sd-master-c678dfe-bin-Linux-Ubuntu-24.04-x86_64-rocm-7.14.0.zip', { os: 'linux', arch: 'x64', backend: 'rocm', variant: 'rocm-7.14.0', runtimeOnly: false }],
      ['sd-master-c678dfe-bin-Darwin-macOS-26.6.2-arm64.zip', { os: 'macos', arch: 'arm64', backend: 'metal', variant: 'macOS-26.6.2', runtimeOnly: false }],
      ['sd-master-c678dfe-bin-win-cpu-x64.zip', { os: 'windows', arch: 'x64', backend: 'cpu', variant: 'cpu', runtimeOnly: false }],
      ['sd-master-d6dd6d7-bin-win-avx512-x64.zip', { os: 'windows', arch: 'x64', backend: 'cpu', variant: 'avx512', runtimeOnly: false }],
      ['sd-master-c678dfe-bin-win-cuda12-x64.zip', { os: 'windows', arch: 'x64', backend: 'cuda', variant: 'cuda12', runtimeOnly: false }],
      ['sd-master-c678dfe-bin-win-rocm-7.14.0-x64.zip', { os: 'windows', arch: 'x64', backend: 'rocm', variant: 'rocm-7.14.0', runtimeOnly: false }],
      ['cudart-sd-bin-win-cu12-x64.zip', { os: 'windows', arch: 'x64', backend: 'cuda', variant: 'cuda12', runtimeOnly: true }],
    ];
    for (const [name, expected] of cases) assert.deepEqual(describeAsset(name), expected, name);
  });

  it('knows nothing of names outside the pattern (source archives, other tools, unknown backends)', () => {
    for (const name of ['Source code (zip)', 'sd-master-abc-bin-win-sycl-x64.zip', 'llama-b5000-bin-win-cuda-x64.zip', 'sd-master-abc-bin-Linux-Ubuntu-24.04-riscv64.zip', 'sd-master-abc.tar.gz']) {
      assert.equal(describeAsset(name), undefined, name);
    }
  });
});

describe('downloadChoices', () => {
  it('Windows x64: CUDA with its runtime archive, then ROCm, Vulkan, CPU', () => {
    assert.deepEqual(names(current, 'win32', 'x64'), [
      ['CUDA 12', 'sd-master-c678dfe-bin-win-cuda12-x64.zip', 'cudart-sd-bin-win-cu12-x64.zip'],
      ['ROCm 7.14.0', 'sd-master-c678dfe-bin-win-rocm-7.14.0-x64.zip'],
      ['Vulkan', 'sd-master-c678dfe-bin-win-vulkan-x64.zip'],
      ['CPU', 'sd-master-c678dfe-bin-win-cpu-x64.zip'],
    ]);
    const cuda = downloadChoices(current, { platform: 'win32', arch: 'x64' })[0];
    assert.equal(cuda.totalBytes, 332_970_080 + 563_452_046);
  });

  it('Linux x64: ROCm, Vulkan and CPU (no CUDA build is published for Linux)', () => {
    assert.deepEqual(names(current, 'linux', 'x64'), [
      ['ROCm 7.14.0', 'sd-master-c678dfe-bin-Linux-Ubuntu-24.04-x86_64-rocm-7.14.0.zip'],
      ['Vulkan', 'sd-master-c678dfe-bin-Linux-Ubuntu-24.04-x86_64-vulkan.zip'],
      ['CPU', 'sd-master-c678dfe-bin-Linux-Ubuntu-24.04-x86_64.zip'],
    ]);
  });

  it('macOS: the Metal build on Apple silicon, and the same universal build on an Intel Mac', () => {
    assert.deepEqual(names(current, 'darwin', 'arm64'), [['Metal', 'sd-master-c678dfe-bin-Darwin-macOS-26.6.2-arm64.zip']]);
    const intel = downloadChoices(current, { platform: 'darwin', arch: 'x64' });
    assert.equal(intel.length, 1);
    assert.match(intel[0].note ?? '', /Universal/);
  });

  it('offers nothing where no build exists (Linux arm64, Windows arm64, FreeBSD)', () => {
    assert.deepEqual(names(current, 'linux', 'arm64'), []);
    assert.deepEqual(names(current, 'win32', 'arm64'), []);
    assert.deepEqual(names(current, 'freebsd', 'x64'), []);
  });

  it('older releases: the CPU builds by instruction set, the safest first after AVX2', () => {
    assert.deepEqual(
      names(older, 'win32', 'x64').map(([label]) => label),
      ['CUDA 12', 'Vulkan', 'CPU (AVX2)', 'CPU (AVX)', 'CPU (AVX512)', 'CPU (NOAVX)'],
    );
    assert.deepEqual(
      names(older, 'linux', 'x64').map(([label]) => label),
      ['ROCm', 'Vulkan', 'CPU'],
    );
  });
});

describe('suggestedBackend and preferredChoice', () => {
  const windows = { platform: 'win32' as const, arch: 'x64' };
  const linux = { platform: 'linux' as const, arch: 'x64' };
  const backends = (host: typeof windows | typeof linux) => downloadChoices(current, host).map((c) => c.build.backend);
  it('NVIDIA: CUDA where a CUDA build exists, else Vulkan; AMD: Vulkan; Apple: Metal', () => {
    assert.equal(suggestedBackend({ source: 'real', kinds: ['nvidia'] }, windows, backends(windows)), 'cuda');
    assert.equal(suggestedBackend({ source: 'real', kinds: ['nvidia'] }, linux, backends(linux)), 'vulkan');
    assert.equal(suggestedBackend({ source: 'real', kinds: ['nvidia'] }, linux, ['cpu', 'cuda', 'vulkan']), 'cuda');
    assert.equal(suggestedBackend({ source: 'real', kinds: ['amd'] }, linux, backends(linux)), 'vulkan');
    assert.equal(suggestedBackend({ source: 'real', kinds: ['amd'] }, linux, ['rocm', 'cpu']), 'rocm');
    assert.equal(suggestedBackend({ source: 'real', kinds: ['apple'] }, { platform: 'darwin', arch: 'arm64' }, ['metal']), 'metal');
    assert.equal(preferredChoice(downloadChoices(current, linux), 'vulkan')?.asset.name, 'sd-master-c678dfe-bin-Linux-Ubuntu-24.04-x86_64-vulkan.zip');
  });

  it('suggests nothing from the demo device, a CPU-only probe, no probe, or a release without a fitting build', () => {
    assert.equal(suggestedBackend({ source: 'simulated', kinds: ['simulated'] }, windows, backends(windows)), undefined);
    assert.equal(suggestedBackend({ source: 'cpu-only', kinds: ['cpu'] }, linux, backends(linux)), undefined);
    assert.equal(suggestedBackend(undefined, windows, backends(windows)), undefined);
    assert.equal(suggestedBackend({ source: 'real', kinds: ['nvidia'] }, linux, ['cpu']), undefined);
    assert.equal(preferredChoice(downloadChoices(current, linux), undefined), undefined);
    assert.equal(preferredChoice(downloadChoices(current, linux), 'cuda'), undefined);
  });
});

describe('engineFolderName', () => {
  it('names the release and backend, so the sidecar reads the backend from the binary path', () => {
    assert.equal(engineFolderName('master-889-c678dfe', 'cuda'), 'sd-master-889-c678dfe-cuda');
    for (const backend of ['cuda', 'vulkan', 'rocm', 'metal', 'cpu'] as const) {
      assert.equal(backendFromPath(`/storage/engines/${engineFolderName('master-889-c678dfe', backend)}/sd-cli`), backend);
    }
  });

  it('keeps a hostile tag inside the engines folder', () => {
    const name = engineFolderName('../../etc/x', 'cpu');
    assert.ok(!name.includes('/') && !name.includes('..'), name);
    assert.equal(engineFolderName('', 'cpu'), 'sd-release-cpu');
  });
});
