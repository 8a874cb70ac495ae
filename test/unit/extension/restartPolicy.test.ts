import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RestartBudget } from '../../../src/restartPolicy';

describe('RestartBudget', () => {
  it('allows a few restarts in the window, then stops and says why', () => {
    const budget = new RestartBudget(4, 3 * 60_000);
    for (let i = 1; i <= 4; i++) {
      assert.equal(budget.allowRestart(i * 1000), true, `restart ${i}`);
      assert.equal(budget.used, i);
    }
    assert.equal(budget.allowRestart(5000), false);
    assert.equal(budget.describeExhausted(), 'the sidecar stopped 5 times in 3 minutes and was not restarted again');
  });

  it('forgets crashes older than the window, and all of them on a manual restart', () => {
    const budget = new RestartBudget(2, 60_000);
    budget.allowRestart(0);
    budget.allowRestart(1000);
    assert.equal(budget.allowRestart(61_000), true, 'old crashes still counted');
    assert.equal(budget.used, 2);
    budget.reset();
    assert.equal(budget.used, 0);
    assert.equal(budget.allowRestart(62_000), true);
  });
});
