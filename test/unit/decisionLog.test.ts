import { describe, it } from 'node:test';
import assert from 'node:assert/strict';

import { DecisionLog } from '../../sidecar/core/decisionLog';

describe('DecisionLog', () => {
  it('numbers events and drops the oldest when full', () => {
    let now = 100;
    const log = new DecisionLog(3, () => now++);
    for (let i = 1; i <= 5; i++) log.add({ kind: 'plan', jobId: `job-${i % 2}`, reason: `decision ${i}` });
    assert.equal(log.size, 3);
    assert.equal(log.lastSeq, 5);
    assert.deepEqual(
      log.list().map((e) => [e.seq, e.reason, e.at]),
      [
        [3, 'decision 3', 102],
        [4, 'decision 4', 103],
        [5, 'decision 5', 104],
      ],
    );
  });

  it('filters by job, by sequence number and by count, oldest first', () => {
    const log = new DecisionLog(10, () => 0);
    for (let i = 1; i <= 6; i++) log.add({ kind: i % 2 ? 'lease' : 'release', jobId: i <= 3 ? 'a' : 'b', reason: `r${i}` });
    assert.deepEqual(
      log.list({ jobId: 'a' }).map((e) => e.seq),
      [1, 2, 3],
    );
    assert.deepEqual(
      log.list({ sinceSeq: 4 }).map((e) => e.seq),
      [5, 6],
    );
    assert.deepEqual(
      log.list({ jobId: 'b', sinceSeq: 4 }).map((e) => e.seq),
      [5, 6],
    );
    assert.deepEqual(
      log.recent(2).map((e) => e.seq),
      [5, 6],
    );
    assert.deepEqual(log.list({ sinceSeq: 6 }), []);
  });

  it('keeps the numbers increasing across a clear, and refuses a capacity below one', () => {
    const log = new DecisionLog(2);
    log.add({ kind: 'wait', reason: 'x', at: 5 });
    log.clear();
    const next = log.add({ kind: 'wait', reason: 'y' });
    assert.equal(next.seq, 2);
    assert.equal(log.size, 1);
    assert.throws(() => new DecisionLog(0), /at least one event/);
  });
});
