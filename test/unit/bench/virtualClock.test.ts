import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { DiscreteEventClock } from '../../../bench/workload/virtualClock';
import { GpuShare } from '../../../bench/workload/world';

describe('discrete-event clock', () => {
  it('fires timers in due order, equal due times in the order they were set', async () => {
    const clock = new DiscreteEventClock(100);
    const fired: string[] = [];
    const at = (name: string, ms: number) => clock.sleep(ms).then(() => fired.push(`${name}@${clock.now()}`));
    void at('c', 30);
    void at('a', 10);
    void at('b1', 20);
    void at('b2', 20);
    // Work a timer starts runs before later timers fire.
    void clock.sleep(5).then(() => clock.sleep(10).then(() => fired.push(`chained@${clock.now()}`)));
    const outcome = await clock.run(() => fired.length === 5);
    assert.equal(outcome, 'done');
    assert.deepEqual(fired, ['a@110', 'chained@115', 'b1@120', 'b2@120', 'c@130']);
    assert.equal(clock.now(), 130);
  });

  it('rejects an aborted sleep, forgets its timer and does not move time for it', async () => {
    const clock = new DiscreteEventClock(0);
    const abort = new AbortController();
    let outcome = '';
    clock.sleep(1000, abort.signal).then(
      () => (outcome = 'fired'),
      (e: Error) => (outcome = `rejected: ${e.message}`),
    );
    void clock.sleep(50).then(() => abort.abort(new Error('cancelled')));
    assert.equal(await clock.run(() => outcome !== ''), 'done');
    assert.equal(outcome, 'rejected: cancelled');
    assert.equal(clock.now(), 50);
    assert.equal(clock.pending, 0);
    await assert.rejects(clock.sleep(10, abort.signal), /cancelled/, 'an already aborted signal rejects at once');
  });

  it('tells a stalled simulation and a time limit from a finished one', async () => {
    const clock = new DiscreteEventClock(0);
    assert.equal(await clock.run(() => false), 'stalled');
    void clock.sleep(500);
    assert.equal(await clock.run(() => false, 100), 'timeLimit');
    assert.equal(clock.now(), 0);
  });

  it('shares the GPU: two jobs at once each run slower, a lone one at full speed', async () => {
    const clock = new DiscreteEventClock(0);
    const gpu = new GpuShare(clock, 0.5);
    const ends: Record<string, number> = {};
    void gpu.run(1000).then(() => (ends.long = clock.now()));
    void clock.sleep(200).then(() => gpu.run(300).then(() => (ends.short = clock.now())));
    await clock.run(() => Object.keys(ends).length === 2);
    // short: 300 ms of work at half speed from 200 -> 800; long: 200 alone + 300 shared (600 ms) + 500 alone.
    assert.equal(Math.round(ends.short), 800);
    assert.equal(Math.round(ends.long), 1300);
  });
});
