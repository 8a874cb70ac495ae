import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DeviceReadingError, readingProblem, takeReading, type ReadingPolicy } from '../../sidecar/core/deviceReading';
import { GiB, MiB, type DeviceSnapshot } from '../../sidecar/core/types';

const good: DeviceSnapshot = { id: 'nvidia:0', name: 'GPU', kind: 'nvidia', total: 12 * GiB, used: 3 * GiB, free: 9 * GiB, unified: false, at: 0 };

function policy(over: Partial<ReadingPolicy> = {}): ReadingPolicy & { slept: number[] } {
  const slept: number[] = [];
  return { timeoutMs: 100, attempts: 3, retryDelayMs: 7, sleep: async (ms) => void slept.push(ms), slept, ...over };
}

describe('readingProblem', () => {
  it('accepts a plausible reading, including a driver that rounds a little past the total', () => {
    assert.equal(readingProblem(good), undefined);
    assert.equal(readingProblem({ ...good, free: 12 * GiB + 10 * MiB, used: 0 }), undefined);
  });

  it('names each figure that is not a finite, non-negative number', () => {
    assert.equal(readingProblem({ ...good, free: Number.NaN, used: -1 }), 'it gave used = -1, free = NaN');
    assert.equal(readingProblem({ ...good, total: Number.POSITIVE_INFINITY }), 'it gave total = Infinity');
    assert.equal(readingProblem({ ...good, free: undefined as unknown as number }), 'it gave free = undefined');
  });

  it('refuses a total of 0 and free or used far beyond the total', () => {
    assert.equal(readingProblem({ ...good, total: 0, used: 0, free: 0 }), 'it gave a total of 0 bytes');
    assert.match(readingProblem({ ...good, free: 40 * GiB }) ?? '', /free of 12/);
    assert.match(readingProblem({ ...good, used: 40 * GiB }) ?? '', /used of 12/);
  });
});

describe('takeReading', () => {
  it('returns the first plausible reading without sleeping', async () => {
    const p = policy();
    assert.deepEqual(await takeReading(async () => good, p), good);
    assert.deepEqual(p.slept, []);
  });

  it('retries a failure, a hang past the time limit and a nonsense reading, pausing between tries', async () => {
    let call = 0;
    const p = policy({ attempts: 4 });
    const reading = await takeReading(() => {
      call++;
      if (call === 1) return Promise.reject(new Error('nvidia-smi failed'));
      if (call === 2) return new Promise<DeviceSnapshot>(() => undefined);
      if (call === 3) return Promise.resolve({ ...good, free: Number.NaN });
      return Promise.resolve(good);
    }, p);
    assert.deepEqual(reading, good);
    assert.equal(call, 4);
    assert.deepEqual(p.slept, [7, 7, 7]);
  });

  it('gives up with a DeviceReadingError that blames the device, gives the last cause and what to check', async () => {
    const error = await takeReading(() => Promise.reject(new Error('nvidia-smi is not on PATH')), policy()).catch((e: unknown) => e);
    assert.ok(error instanceof DeviceReadingError);
    assert.match(error.message, /^Could not read the GPU memory \(3 tries\): nvidia-smi is not on PATH\. /);
    assert.match(error.message, /run nvidia-smi or rocm-smi in a terminal/);
  });

  it('counts a reading that throws synchronously as a failed attempt', async () => {
    const error = await takeReading(
      () => {
        throw new Error('probe disposed');
      },
      policy({ attempts: 1 }),
    ).then(
      () => assert.fail('no error'),
      (e: unknown) => e as Error,
    );
    assert.match(error.message, /^Could not read the GPU memory: probe disposed\./);
  });

  it('ends a hung reading at its time limit', async () => {
    const started = Date.now();
    const error = await takeReading(() => new Promise<DeviceSnapshot>(() => undefined), policy({ attempts: 1, timeoutMs: 50 })).then(
      () => assert.fail('no error'),
      (e: unknown) => e as Error,
    );
    assert.match(error.message, /^Could not read the GPU memory: no reading within 50 ms\./);
    assert.ok(Date.now() - started < 5000);
  });
});
