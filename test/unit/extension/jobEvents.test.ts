import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { JobEventRouter } from '../../../src/jobEvents';
import type { JobDoneParams, JobProgressParams } from '../../../sidecar/protocol';
import { imageJob } from './fixtures';

const progress = (jobId: string, step: number): JobProgressParams => ({ jobId, stage: 'diffusion', step, totalSteps: 20 });
const done = (jobId: string): JobDoneParams => ({ job: imageJob({ id: jobId, status: 'done' }), outputs: ['/w/a.png'] });

describe('JobEventRouter', () => {
  it('replays events that arrived before the watcher', () => {
    const router = new JobEventRouter();
    router.progress(progress('a', 1));
    router.progress(progress('a', 2));
    const seen: number[] = [];
    router.watch('a', { onProgress: (p) => seen.push(p.step ?? -1) });
    router.progress(progress('a', 3));
    assert.deepEqual(seen, [1, 2, 3]);
    assert.deepEqual(router.pendingJobIds(), []);
  });

  it('delivers only the watched job, and the end', () => {
    const router = new JobEventRouter();
    const steps: number[] = [];
    let ended: string | undefined;
    const stop = router.watch('a', { onProgress: (p) => steps.push(p.step ?? -1), onDone: (d) => (ended = d.job.id) });
    router.progress(progress('b', 9));
    router.progress(progress('a', 1));
    router.done(done('a'));
    assert.deepEqual(steps, [1]);
    assert.equal(ended, 'a');
    stop();
    router.progress(progress('a', 2));
    assert.deepEqual(steps, [1]);
  });

  it('keeps a bounded number of unclaimed jobs and events', () => {
    const router = new JobEventRouter(2, 3);
    router.progress(progress('a', 1));
    router.progress(progress('b', 1));
    router.progress(progress('c', 1));
    assert.deepEqual(router.pendingJobIds(), ['b', 'c']);
    for (let i = 2; i <= 6; i++) router.progress(progress('c', i));
    const seen: number[] = [];
    router.watch('c', { onProgress: (p) => seen.push(p.step ?? -1) });
    assert.deepEqual(seen, [4, 5, 6]);
  });

  it('forgets a dead process: its kept events and watchers, without touching watchers of the next one', () => {
    const router = new JobEventRouter();
    const old: number[] = [];
    const stopOld = router.watch('job-1', { onProgress: (p) => old.push(p.step ?? -1) });
    router.progress(progress('job-2', 4));
    router.reset();
    assert.deepEqual(router.pendingJobIds(), []);
    // The next process reuses job-1 for another job.
    const fresh: number[] = [];
    router.watch('job-1', { onProgress: (p) => fresh.push(p.step ?? -1) });
    stopOld();
    router.progress(progress('job-1', 1));
    assert.deepEqual(old, []);
    assert.deepEqual(fresh, [1]);
  });
});
