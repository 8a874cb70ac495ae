import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { selectProbe } from '../../../sidecar/devices/selectProbe';
import { SIM_DEVICE_ENV, SimulatedDevice } from '../../../sidecar/devices/simulatedDevice';
import { GiB } from '../../../sidecar/core/types';
import { fakeTools } from './fakeTools';

const noGraphics = async () => [] as string[];

describe('selectProbe simulated', () => {
  it('uses a new labelled demo device of the given capacity', async () => {
    const selection = await selectProbe('simulated', { simulatedCapacity: 8 * GiB, env: {} });
    assert.equal(selection.kind, 'simulated');
    assert.equal(selection.probe.kind, 'simulated');
    assert.match(selection.reason, /Simulated demo device \(8\.0 GiB\): no real GPU memory/);
    assert.equal(selection.snapshots[0].total, 8 * GiB);
    assert.ok(selection.simulated);
    selection.probe.dispose();
  });

  it('joins the shared device named by VRAM_RELAY_SIM_DEVICE', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vram-relay-sim-select-'));
    try {
      const device = SimulatedDevice.createShared(dir, { capacity: 4 * GiB });
      device.allocate(String(process.pid), GiB);
      const selection = await selectProbe('simulated', { env: { [SIM_DEVICE_ENV]: dir } });
      assert.equal(selection.snapshots[0].free, 3 * GiB);
      assert.match(selection.reason, new RegExp(`shared through ${SIM_DEVICE_ENV}`));
      device.releaseOwner(String(process.pid));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('selectProbe auto', { skip: process.platform === 'win32' && 'needs a POSIX shell' }, () => {
  it('picks NVIDIA when nvidia-smi answers, and names what it found', async () => {
    const tools = fakeTools(['nvidia-smi', 'rocm-smi'], 'ok');
    try {
      const selection = await selectProbe('auto', { env: tools.env, platform: 'linux', listGraphics: noGraphics });
      assert.equal(selection.kind, 'nvidia');
      assert.equal(selection.probe.kind, 'nvidia');
      assert.match(selection.reason, /nvidia-smi found 2 GPUs: NVIDIA GeForce RTX 4090 \(24\.0 GiB, 22\.4 GiB free\), NVIDIA L40S/);
      assert.equal(selection.snapshots.length, 2);
      selection.probe.dispose();
    } finally {
      tools.cleanup();
    }
  });

  it('does not wait on a hanging nvidia-smi past the time limit and falls through to rocm-smi', async () => {
    const tools = fakeTools(['nvidia-smi', 'rocm-smi'], 'ok', { 'nvidia-smi': 'hang' });
    try {
      const selection = await selectProbe('auto', { env: tools.env, platform: 'linux', timeoutMs: 3000, listGraphics: noGraphics });
      assert.equal(selection.kind, 'amd');
      assert.match(selection.reason, /rocm-smi found 1 GPU: Radeon RX 7900 XT/);
      assert.match(selection.reason, /nvidia-smi did not answer within 3000 ms/);
      selection.probe.dispose();
    } finally {
      tools.cleanup();
    }
  });

  it('falls back to the CPU and says what it tried and what it saw', async () => {
    const tools = fakeTools(['nvidia-smi'], 'no-driver');
    try {
      const selection = await selectProbe('auto', {
        env: tools.env,
        platform: 'linux',
        listGraphics: async () => ['NVIDIA Corporation GA106 [GeForce RTX 3060]'],
      });
      assert.equal(selection.kind, 'cpu');
      assert.equal(selection.snapshots[0].kind, 'cpu');
      assert.match(selection.reason, /^No GPU found: planning for system RAM/);
      assert.match(selection.reason, /exit code 9\): NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver/);
      assert.match(selection.reason, /rocm-smi is not on PATH/);
      assert.match(selection.reason, /Graphics seen: NVIDIA Corporation GA106/);
      selection.probe.dispose();
    } finally {
      tools.cleanup();
    }
  });

  it('picks unified memory on Apple silicon when no GPU tool answers', async () => {
    const tools = fakeTools([], 'ok');
    try {
      const selection = await selectProbe('auto', { env: tools.env, platform: 'darwin', arch: 'arm64', listGraphics: noGraphics });
      assert.equal(selection.kind, 'apple');
      assert.match(selection.reason, /Apple silicon: the GPU uses unified memory/);
      selection.probe.dispose();
    } finally {
      tools.cleanup();
    }
  });
});
