import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { effectiveFree, otherProgramsUse } from '../../sidecar/core/effectiveFree';
import { SimulatedDevice } from '../../sidecar/devices/simulatedDevice';
import type { Clock } from '../../sidecar/core/ports';
import type { DeviceSnapshot } from '../../sidecar/core/types';
import { GiB, MiB } from '../../sidecar/core/types';

function snapshot(used: number, extra: Partial<DeviceSnapshot> = {}): DeviceSnapshot {
  const total = 8 * GiB;
  return { id: 'nvidia:0', name: 'test GPU', kind: 'nvidia', total, used, free: total - used, unified: false, at: 0, ...extra };
}

describe('effectiveFree without a process list', () => {
  it("subtracts our account, other programs' use and the margin", () => {
    // 3 GiB used: 2 GiB ours, 1 GiB someone else's.
    assert.equal(otherProgramsUse(snapshot(3 * GiB), 2 * GiB), GiB);
    assert.equal(effectiveFree(snapshot(3 * GiB), 2 * GiB, 512 * MiB), 4.5 * GiB);
  });

  it('does not trust the stale free figure right after an allocation', () => {
    // We hold 2 GiB that the driver does not show yet: it still reports 8 GiB free.
    assert.equal(effectiveFree(snapshot(0), 2 * GiB, 0), 6 * GiB);
  });

  it('waits for the driver right after a free', () => {
    // We released 2 GiB (our account is 0) but the driver still shows it used.
    assert.equal(effectiveFree(snapshot(2 * GiB), 0, 0), 6 * GiB);
  });

  it('never goes below zero', () => {
    assert.equal(effectiveFree(snapshot(7 * GiB), 0, 2 * GiB), 0);
    assert.equal(effectiveFree(snapshot(0), 10 * GiB, 0), 0);
  });

  it('ignores the process list when it does not know which pids are ours', () => {
    const snap = snapshot(3 * GiB, { processes: [{ pid: 10, used: 2 * GiB }, { pid: 20, used: GiB }] });
    assert.equal(otherProgramsUse(snap, 2 * GiB), GiB);
  });
});

describe('effectiveFree with a process list', () => {
  const processes = [
    { pid: 100, name: 'llm worker', used: 2 * GiB },
    { pid: 200, name: 'game', used: GiB },
  ];

  it('counts only the processes that are not ours as other use', () => {
    const snap = snapshot(3 * GiB, { processes });
    assert.equal(otherProgramsUse(snap, 2 * GiB, [100]), GiB);
    assert.equal(effectiveFree(snap, 2 * GiB, 256 * MiB, [100]), 5 * GiB - 256 * MiB);
  });

  it('uses our account, not the listed figure, for our own processes', () => {
    // Our worker is about to grow to 3 GiB; the driver still lists 2 GiB for it.
    const snap = snapshot(3 * GiB, { processes });
    assert.equal(effectiveFree(snap, 3 * GiB, 0, [100]), 4 * GiB);
  });

  it('does not trust a stale list right after an allocation', () => {
    // Only the game is listed yet; we already hold 2 GiB.
    const snap = snapshot(GiB, { processes: [processes[1]] });
    assert.equal(effectiveFree(snap, 2 * GiB, 0, [100]), 5 * GiB);
  });

  it('waits for the driver right after a free', () => {
    // Our worker freed everything; the driver still lists it and reports 5 GiB free.
    const snap = snapshot(3 * GiB, { processes });
    assert.equal(effectiveFree(snap, 0, 0, [100]), 5 * GiB);
  });

  it('counts programs it cannot see through the reported free figure', () => {
    // A container sees no processes, but the driver's free figure includes everyone's use.
    const snap = snapshot(4 * GiB, { processes: [] });
    assert.equal(effectiveFree(snap, GiB, 0, [100]), 4 * GiB);
  });
});

describe('effectiveFree against a lagging simulated device', () => {
  it('matches the real free memory while the driver figure lags', () => {
    let now = 0;
    const clock: Clock = { now: () => now, sleep: async () => undefined };
    const device = new SimulatedDevice({ capacity: 8 * GiB, driverLagMs: 1000, otherUse: GiB }, clock);
    const ours = [4242];
    now = 2000; // let the other programs' use show

    const id = device.allocate('4242', 3 * GiB);
    assert.equal(device.snapshot().free, 7 * GiB, 'the driver has not seen the allocation');
    assert.equal(effectiveFree(device.snapshot(), 3 * GiB, 0, ours), device.trueFree());
    // Without the pids the other programs' use hides behind our unseen allocation: the estimate is high by it.
    assert.equal(effectiveFree(device.snapshot(), 3 * GiB, 0), device.trueFree() + GiB);

    now += 1000;
    device.release(id);
    assert.equal(device.trueFree(), 7 * GiB);
    assert.equal(effectiveFree(device.snapshot(), 0, 0, ours), 4 * GiB, 'the freed memory counts once the driver shows it');
    now += 1000;
    assert.equal(effectiveFree(device.snapshot(), 0, 0, ours), 7 * GiB);
  });
});
