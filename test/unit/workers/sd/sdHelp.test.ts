import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { backendFromPath, parseSdHelp, SdBinaryError } from '../../../../sidecar/workers/sd/sdHelp';
import { LLAMA_SERVER_HELP, SD_2024_HELP, SD_CLI_2025_HELP, SD_CLI_2026_HELP, SD_SERVER_2026_HELP } from './fixtures/helpSamples';

describe('parseSdHelp', () => {
  it('reads an old `sd` release: legacy CPU flags, tiling and flash attention, no offload or video', () => {
    const info = parseSdHelp(SD_2024_HELP, '/opt/sd-master-e71ddce-bin-Linux-cuda12/sd');
    assert.equal(info.kind, 'sd');
    assert.deepEqual(info.capabilities, {
      cpuPlacementFlags: 'legacy',
      vaeTiling: true,
      offloadToCpu: false,
      diffusionFlashAttention: true,
      vaeConvDirect: false,
      videoGeneration: false,
      temporalTiling: false,
      backend: 'cuda',
    });
    assert.deepEqual(info.legacyCpuFlags, { clip: true, vae: true });
    assert.equal(info.autoFit, false);
    assert.equal(info.outputPattern, false);
    // Entries written as `-s SEED, --seed SEED` and `--steps  STEPS` still count.
    assert.ok(info.flags.includes('--seed') && info.flags.includes('-s') && info.flags.includes('--steps'));
    // Words in descriptions are not flags.
    assert.ok(!info.flags.includes('--sampling'));
  });

  it('reads a 2025 sd-cli: grouped options, video, offload, conv-direct, still legacy CPU flags', () => {
    const info = parseSdHelp(SD_CLI_2025_HELP, 'C:\\tools\\sd-master-bin-win-vulkan-x64\\sd-cli.exe');
    assert.equal(info.kind, 'sd-cli');
    assert.equal(info.capabilities.cpuPlacementFlags, 'legacy');
    assert.equal(info.capabilities.offloadToCpu, true);
    assert.equal(info.capabilities.vaeConvDirect, true);
    assert.equal(info.capabilities.videoGeneration, true);
    assert.equal(info.capabilities.temporalTiling, false);
    assert.equal(info.capabilities.backend, 'vulkan');
    assert.equal(info.outputPattern, true);
  });

  it('reads a 2026 sd-cli: --backend assignments, auto-fit and temporal tiling', () => {
    const info = parseSdHelp(SD_CLI_2026_HELP, '/usr/local/bin/sd-cli');
    assert.equal(info.kind, 'sd-cli');
    assert.equal(info.capabilities.cpuPlacementFlags, 'backend');
    assert.equal(info.capabilities.temporalTiling, true);
    assert.equal(info.capabilities.videoGeneration, true);
    assert.equal(info.capabilities.backend, 'unknown');
    assert.equal(info.autoFit, true);
    assert.ok(info.flags.includes('--params-backend'));
  });

  it('recognises sd-server by its listen options', () => {
    const info = parseSdHelp(SD_SERVER_2026_HELP, '/opt/sd/sd-server');
    assert.equal(info.kind, 'sd-server');
    assert.equal(info.capabilities.cpuPlacementFlags, 'backend');
  });

  it('tells sd-cli from the old sd by the usage layout when the file name says neither', () => {
    assert.equal(parseSdHelp(SD_CLI_2026_HELP, '/opt/bin/stable-diffusion').kind, 'sd-cli');
    assert.equal(parseSdHelp(SD_2024_HELP, '/opt/bin/stable-diffusion').kind, 'sd');
  });

  it('rejects a binary that is not sd.cpp with a message naming the path and the setting', () => {
    assert.throws(
      () => parseSdHelp(LLAMA_SERVER_HELP, '/usr/bin/llama-server'),
      (error: unknown) =>
        error instanceof SdBinaryError &&
        error.reason === 'not-sdcpp' &&
        error.message.startsWith('/usr/bin/llama-server does not look like stable-diffusion.cpp (sd-cli)') &&
        error.message.includes('vramRelay.image.binaryPath'),
    );
    assert.throws(() => parseSdHelp('', '/bin/true'), SdBinaryError);
  });

  it('reports no CPU placement when the binary lists neither form', () => {
    const stripped = SD_2024_HELP.split('\n')
      .filter((l) => !/--(clip|vae)-on-cpu/.test(l))
      .join('\n');
    assert.equal(parseSdHelp(stripped, 'sd').capabilities.cpuPlacementFlags, 'none');
  });
});

describe('backendFromPath', () => {
  it('reads the backend from official release folder names', () => {
    assert.equal(backendFromPath('/x/sd-master-abc-bin-win-cuda12-x64/sd-cli.exe'), 'cuda');
    assert.equal(backendFromPath('/x/sd-master-abc-bin-Linux-Ubuntu-24.04-x86_64-vulkan/sd-cli'), 'vulkan');
    assert.equal(backendFromPath('/x/sd-master-abc-bin-win-rocm-x64/sd-cli.exe'), 'rocm');
    assert.equal(backendFromPath('/x/sd-master-abc-bin-Darwin-macOS-15-arm64/sd-cli'), 'metal');
    assert.equal(backendFromPath('/x/sd-master-abc-bin-win-avx2-x64/sd-cli.exe'), 'cpu');
    assert.equal(backendFromPath('/usr/local/bin/sd-cli'), 'unknown');
  });

  it('reads the ROCm release folders, as the archive names them and as Find Engines installs them', () => {
    assert.equal(backendFromPath('/home/ana/sd-master-889-c678dfe-bin-Linux-Ubuntu-24.04-x86_64-rocm-7.14.0/sd-cli'), 'rocm');
    assert.equal(backendFromPath('C:\\Users\\ana\\sd-master-889-c678dfe-bin-win-rocm-7.14.0-x64\\sd-cli.exe'), 'rocm');
    assert.equal(backendFromPath('/home/philip/.config/Code/User/globalStorage/x.vram-relay/engines/sd-master-889-c678dfe-rocm/sd-cli'), 'rocm');
    // An archive that nests the binary: the release folder above still counts.
    assert.equal(backendFromPath('/opt/engines/sd-master-889-c678dfe-vulkan/build/bin/sd-cli'), 'vulkan');
  });

  it('ignores words that only look like a backend inside user folders', () => {
    assert.equal(backendFromPath('/home/philip/bin/sd-cli'), 'unknown');
    assert.equal(backendFromPath('C:\\Users\\Philip\\tools\\sd-cli.exe'), 'unknown');
    assert.equal(backendFromPath('/home/chip/cuda-experiments/vulkan-notes/bin/sd-cli'), 'unknown');
    assert.equal(backendFromPath('/srv/metal/tools/sd'), 'unknown');
    assert.equal(backendFromPath('/home/philip/sd-cli'), 'unknown');
  });
});
