import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';

import { GiB } from '../../../sidecar/core/types';
import { imageSpec, llmSpec, makeRig, until, within, type Rig } from '../arbiterHarness';

let rig: Rig | undefined;
afterEach(() => {
  rig?.dispose();
  rig = undefined;
});

// Found by the workload benchmark (bench/workload.bench.ts).
describe('Arbiter admission and order, seen in the workload benchmark', () => {
  it('admits an image job that arrives while the LLM climbs back to hot: the climb counts as what the LLM can yield', async () => {
    rig = makeRig({ device: { capacity: 10 * GiB }, llmState: 'cold' });
    const { arbiter } = rig;
    const climbing = arbiter.setLlmState('hot');
    await until(() => arbiter.snapshot().accounted > 0 && arbiter.snapshot().llm.state === 'cold', 'the climb to be under way');
    const job = arbiter.submit(imageSpec());
    const done = await within(arbiter.waitFor(job.id));
    assert.equal(done.job.status, 'done', done.job.message);
    await within(climbing);
    assert.ok(!rig.kinds(job.id).includes('reject'));
  });

  it('lets queued LLM requests go before an image job that waits to make the LLM yield', async () => {
    rig = makeRig({ device: { capacity: 8 * GiB } });
    const { arbiter } = rig;
    const l1 = arbiter.submit(llmSpec({ prompt: 'first' }));
    const img = arbiter.submit(imageSpec(), 'normal');
    const l2 = arbiter.submit(llmSpec({ prompt: 'second' }));
    const l3 = arbiter.submit(llmSpec({ prompt: 'third' }));
    const done = await within(Promise.all([l1, img, l2, l3].map((j) => arbiter.waitFor(j.id))));
    assert.deepEqual(
      done.map((d) => d.job.status),
      ['done', 'done', 'done', 'done'],
    );
    const info = (id: string) => done.find((d) => d.job.id === id)!.job;
    assert.ok(rig.kinds(img.id).includes('yield'), 'the image job needed the LLM out of the way');
    assert.ok(info(l3.id).endedAt! <= info(img.id).startedAt!, 'every queued request ends before the image job starts');
  });
});
