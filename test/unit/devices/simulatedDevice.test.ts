import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { SimulatedDevice, SimulatedOutOfMemoryError } from '../../../sidecar/devices/simulatedDevice';
import type { Clock } from '../../../sidecar/core/ports';
import { GiB, MiB } from '../../../sidecar/core/types';

/** A clock the test moves by hand. */
function manualClock(start = 1_000_000): Clock & { advance(ms: number): void } {
  let now = start;
  return {
    now: () => now,
    sleep: async (ms) => {
      now += ms;
    },
    advance(ms) {
      now += ms;
    },
  };
}

describe('SimulatedDevice allocation', () => {
  it('fits exactly at capacity after rounding to the granularity, and fails one page above', () => {
    const device = new SimulatedDevice({ capacity: 100 * MiB, granularity: 2 * MiB });
    device.allocate('1', 99 * MiB + 1); // rounds up to 100 MiB: exactly the capacity
    assert.equal(device.usage(), 100 * MiB);
    assert.equal(device.trueFree(), 0);
    assert.throws(() => device.allocate('1', 1), SimulatedOutOfMemoryError);
  });

  it('fails when the rounded size exceeds free memory although the raw size would fit', () => {
    const device = new SimulatedDevice({ capacity: 10 * MiB, granularity: 2 * MiB, otherUse: 1 * MiB });
    assert.equal(device.trueFree(), 9 * MiB);
    assert.throws(
      () => device.allocate('1', 9 * MiB),
      (e: unknown) =>
        e instanceof SimulatedOutOfMemoryError &&
        e.requested === 10 * MiB &&
        e.free === 9 * MiB &&
        /^CUDA error: out of memory \(tried to allocate 10\.00 MiB, 9\.00 MiB free\)/.test(e.message),
    );
    assert.equal(device.usage(), 0, 'a failed allocation holds nothing');
    device.allocate('1', 8 * MiB);
    assert.equal(device.trueFree(), 1 * MiB);
  });

  it('rounds with a granularity of one byte exactly', () => {
    const device = new SimulatedDevice({ capacity: 1000, granularity: 1 });
    device.allocate('a', 999);
    device.allocate('a', 1);
    assert.throws(() => device.allocate('a', 1), SimulatedOutOfMemoryError);
    device.allocate('a', 0); // a zero-byte allocation succeeds, as cudaMalloc(0) does
  });

  it('refuses a single allocation above maxAllocation even with room to spare', () => {
    const device = new SimulatedDevice({ capacity: 16 * GiB, maxAllocation: 4 * GiB });
    assert.throws(() => device.allocate('1', 4 * GiB + 1), /out of memory.*largest single allocation of 4096\.00 MiB/);
    device.allocate('1', 4 * GiB);
    assert.equal(device.snapshot().maxAllocation, 4 * GiB);
  });

  it('releases by id and by owner, and counts usage per owner', () => {
    const device = new SimulatedDevice({ capacity: GiB });
    const a = device.allocate('101', 100 * MiB, 'weights');
    device.allocate('101', 50 * MiB);
    device.allocate('202', 30 * MiB);
    assert.equal(device.usage('101'), 150 * MiB);
    assert.equal(device.usage('202'), 30 * MiB);
    assert.equal(device.release(a), true);
    assert.equal(device.release(a), false, 'a second release of the same id frees nothing');
    assert.equal(device.usage('101'), 50 * MiB);
    assert.equal(device.releaseOwner('101'), 50 * MiB);
    assert.equal(device.releaseOwner('101'), 0);
    assert.equal(device.usage(), 30 * MiB);
    assert.equal(device.trueFree(), GiB - 30 * MiB);
  });

  it('rejects nonsense sizes and configurations with a message that says what to give', () => {
    const device = new SimulatedDevice({ capacity: GiB });
    assert.throws(() => device.allocate('1', -1), /zero or more bytes/);
    assert.throws(() => device.allocate('1', Number.NaN), /zero or more bytes/);
    assert.throws(() => new SimulatedDevice({ capacity: 0 }), /capacity above zero/);
    assert.throws(() => new SimulatedDevice({ capacity: GiB, granularity: 0.5 }), /granularity/);
    assert.throws(() => new SimulatedDevice({ capacity: GiB, driverLagMs: -5 }), /lag/);
    assert.throws(() => device.setOtherUse(-1), /zero or more/);
  });
});

describe('SimulatedDevice reported figures', () => {
  it('is labelled as simulated whatever name it is given', () => {
    const device = new SimulatedDevice({ capacity: GiB, name: 'RTX 4090' });
    const snap = device.snapshot();
    assert.equal(snap.kind, 'simulated');
    assert.match(snap.name, /Simulated/);
    assert.equal(snap.id, 'sim:0');
    assert.equal(snap.total, GiB);
    assert.equal(snap.unified, false);
    assert.match(new SimulatedDevice({ capacity: GiB }).snapshot().name, /Simulated/);
  });

  it('reports the free figure as it was driverLagMs ago, after an allocation and after a free', () => {
    const clock = manualClock();
    const device = new SimulatedDevice({ capacity: 8 * GiB, driverLagMs: 500 }, clock);
    const id = device.allocate('1', 2 * GiB);
    assert.equal(device.trueFree(), 6 * GiB, 'the allocation is real at once');
    assert.equal(device.snapshot().free, 8 * GiB, 'the driver does not show it yet');
    clock.advance(499);
    assert.equal(device.snapshot().free, 8 * GiB);
    clock.advance(1);
    assert.equal(device.snapshot().free, 6 * GiB);
    assert.equal(device.snapshot().used, 2 * GiB);

    device.release(id);
    assert.equal(device.trueFree(), 8 * GiB, 'the memory is back at once');
    assert.equal(device.snapshot().free, 6 * GiB, 'the driver still shows it held');
    assert.deepEqual(device.snapshot().processes, [{ pid: 1, name: '1', used: 2 * GiB }]);
    clock.advance(500);
    assert.equal(device.snapshot().free, 8 * GiB);
    assert.deepEqual(device.snapshot().processes, []);
  });

  it('inflates the reported free figure by the lie while allocations still fail on the truth', () => {
    const device = new SimulatedDevice({ capacity: 8 * GiB, lieBytes: GiB });
    device.allocate('1', 4 * GiB);
    const snap = device.snapshot();
    assert.equal(snap.free, 5 * GiB);
    assert.equal(device.trueFree(), 4 * GiB);
    assert.throws(() => device.allocate('1', 4.5 * GiB), SimulatedOutOfMemoryError);
    device.setLie(0);
    assert.equal(device.snapshot().free, 4 * GiB);
    device.setLie(100 * GiB);
    assert.equal(device.snapshot().free, 8 * GiB, 'never more than the capacity');
  });

  it("follows other programs' use as it changes, with the same lag", () => {
    const clock = manualClock();
    const device = new SimulatedDevice({ capacity: 8 * GiB, driverLagMs: 100, otherUse: GiB }, clock);
    assert.equal(device.trueFree(), 7 * GiB);
    assert.deepEqual(device.snapshot().processes, [{ pid: 0, name: 'other programs (simulated)', used: GiB }]);
    device.setOtherUse(3 * GiB);
    assert.equal(device.trueFree(), 5 * GiB);
    assert.throws(() => device.allocate('1', 5 * GiB + 1), SimulatedOutOfMemoryError);
    assert.equal(device.snapshot().free, 7 * GiB);
    clock.advance(100);
    assert.equal(device.snapshot().free, 5 * GiB);
    assert.equal(device.config().otherUse, 3 * GiB);
  });

  it("applies a schedule of other programs' use from the clock", () => {
    const clock = manualClock();
    const device = new SimulatedDevice(
      {
        capacity: 10 * GiB,
        otherUse: 0,
        otherUseSchedule: [
          { atMs: 2000, bytes: GiB },
          { atMs: 1000, bytes: 4 * GiB },
        ],
      },
      clock,
    );
    assert.equal(device.trueFree(), 10 * GiB);
    clock.advance(1000);
    assert.equal(device.trueFree(), 6 * GiB);
    clock.advance(999);
    assert.equal(device.trueFree(), 6 * GiB);
    clock.advance(1);
    assert.equal(device.trueFree(), 9 * GiB);
    device.setOtherUse(2 * GiB);
    clock.advance(10_000);
    assert.equal(device.trueFree(), 8 * GiB, 'setOtherUse takes over from the schedule');
  });

  it("plans other programs' use from now on with scheduleOtherUse", () => {
    const clock = manualClock();
    const device = new SimulatedDevice({ capacity: 10 * GiB, otherUseSchedule: [{ atMs: 5000, bytes: 9 * GiB }] }, clock);
    clock.advance(1000);
    device.scheduleOtherUse([{ atMs: 500, bytes: 2 * GiB }]);
    assert.equal(device.trueFree(), 10 * GiB);
    clock.advance(500);
    assert.equal(device.trueFree(), 8 * GiB);
    clock.advance(10_000);
    assert.equal(device.trueFree(), 8 * GiB, 'the step planned at creation was replaced');
    assert.throws(() => device.scheduleOtherUse([{ atMs: -1, bytes: 0 }]), /zero or more/);
  });

  it('lists processes per owner, reading numeric owners as pids', () => {
    const device = new SimulatedDevice({ capacity: 8 * GiB });
    device.allocate('4242', GiB);
    device.allocate('4242', GiB);
    device.allocate('llm', 512 * MiB);
    const processes = device.snapshot().processes ?? [];
    assert.deepEqual(
      processes.sort((a, b) => a.pid - b.pid),
      [
        { pid: 0, name: 'llm', used: 512 * MiB },
        { pid: 4242, name: '4242', used: 2 * GiB },
      ],
    );
  });
});

describe('SimulatedDevice probe', () => {
  it('samples and watches the device until stopped', async () => {
    const device = new SimulatedDevice({ capacity: 4 * GiB });
    const probe = device.probe();
    assert.equal(probe.kind, 'simulated');
    const [first] = await probe.sample();
    assert.equal(first.free, 4 * GiB);

    device.allocate('1', GiB);
    const seen: number[] = [];
    await new Promise<void>((resolve, reject) => {
      const timeout = setTimeout(() => reject(new Error('no samples within 5 s')), 5000);
      const stop = probe.watch(5, (snaps) => {
        seen.push(snaps[0].free);
        if (seen.length === 3) {
          stop();
          clearTimeout(timeout);
          resolve();
        }
      });
    });
    assert.deepEqual(seen, [3 * GiB, 3 * GiB, 3 * GiB]);
    probe.dispose();
  });
});
