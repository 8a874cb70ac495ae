import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { AppleProbe, appleGpuWorkingSet, appleSnapshot, parseWiredLimit } from '../../../sidecar/devices/appleProbe';
import { CpuProbe, cpuSnapshot } from '../../../sidecar/devices/cpuProbe';
import { readSystemMemory } from '../../../sidecar/devices/systemMemory';
import { GiB, MiB } from '../../../sidecar/core/types';

describe('Apple unified memory', () => {
  it('lets the GPU use 2/3 of RAM up to 36 GiB and 3/4 above', () => {
    assert.equal(appleGpuWorkingSet(16 * GiB), Math.floor((16 * GiB * 2) / 3));
    assert.equal(appleGpuWorkingSet(36 * GiB), 24 * GiB);
    assert.equal(appleGpuWorkingSet(64 * GiB), 48 * GiB);
  });

  it('follows iogpu.wired_limit_mb when the user set it', () => {
    assert.equal(parseWiredLimit('0\n'), undefined);
    assert.equal(parseWiredLimit('57344\n'), 57344);
    assert.equal(parseWiredLimit('unknown oid'), undefined);
    assert.equal(appleGpuWorkingSet(64 * GiB, 57344), 56 * GiB);
    assert.equal(appleGpuWorkingSet(16 * GiB, 999_999), 16 * GiB, 'never more than the RAM');
  });

  it('reports free as the lower of available RAM and the working set', () => {
    const roomy = appleSnapshot({ total: 64 * GiB, available: 60 * GiB }, 48 * GiB, 'Apple M2 Max', 1);
    assert.equal(roomy.free, 48 * GiB);
    assert.equal(roomy.used, 0);
    const busy = appleSnapshot({ total: 64 * GiB, available: 10 * GiB }, 48 * GiB, 'Apple M2 Max', 1);
    assert.equal(busy.free, 10 * GiB);
    assert.equal(busy.used, 38 * GiB);
    assert.equal(busy.unified, true);
    assert.equal(busy.kind, 'apple');
  });

  it('samples through injected sources, asking the name and limit once', async () => {
    let asked = 0;
    const probe = new AppleProbe({
      readMemory: async () => ({ total: 32 * GiB, available: 20 * GiB }),
      gpuName: async () => {
        asked++;
        return 'Apple M1 Pro (unified memory)';
      },
      wiredLimitMiB: async () => undefined,
      now: () => 5,
    });
    const [a] = await probe.sample();
    await probe.sample();
    assert.equal(asked, 1);
    assert.equal(a.total, Math.floor((32 * GiB * 2) / 3));
    assert.equal(a.free, 20 * GiB);
    assert.equal(a.id, 'apple:0');
  });
});

describe('CPU only', () => {
  it('plans for system RAM and says there is no GPU', () => {
    const snapshot = cpuSnapshot({ total: 24 * GiB, available: 20 * GiB }, 'AMD EPYC', 3);
    assert.deepEqual(snapshot, {
      id: 'cpu',
      name: 'AMD EPYC (no GPU: system RAM)',
      kind: 'cpu',
      total: 24 * GiB,
      used: 4 * GiB,
      free: 20 * GiB,
      unified: true,
      at: 3,
    });
  });

  it('reads this machine', async () => {
    const memory = await readSystemMemory();
    assert.ok(memory.total > 256 * MiB);
    assert.ok(memory.available > 0 && memory.available <= memory.total);
    const [snapshot] = await new CpuProbe().sample();
    assert.equal(snapshot.kind, 'cpu');
    assert.match(snapshot.name, /no GPU/);
  });
});
