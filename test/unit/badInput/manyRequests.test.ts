/**
 * 500 requests at once through the arbiter (the in-process fakes of arbiterHarness on a simulated 24 GB device):
 * images of several sizes and priorities, LLM requests, and malformed ones, all submitted in the same tick. Each
 * must end exactly once, done or refused with a message that says what to do; none may be lost or left queued,
 * and no memory may stay allocated for a job that ended.
 */

import { afterEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { JobDoneParams } from '../../../sidecar/protocol';
import type { JobPriority, JobSpec } from '../../../sidecar/core/types';
import { imageSpec, llmSpec, makeRig, SD_PID, within, type Rig } from '../arbiterHarness';
import { ADVICE } from './advice';
import { Random } from '../fuzz/fuzzKit';

let rig: Rig | undefined;
afterEach(() => {
  rig?.dispose();
  rig = undefined;
});

type Kind = 'image' | 'llm' | 'bad';

function request(random: Random, index: number): { kind: Kind; spec: JobSpec; priority?: JobPriority } {
  const roll = random.next();
  if (roll < 0.1) {
    const bad: JobSpec[] = [
      imageSpec({ width: 0 }),
      imageSpec({ height: 1001 }),
      imageSpec({ batch: 1000 }),
      imageSpec({ steps: 0 }),
      imageSpec({ prompt: 'nul\0inside' }),
      llmSpec({ task: 'dance' as never }),
      llmSpec({ contextSize: -4 }),
      { kind: 'video' } as unknown as JobSpec,
    ];
    return { kind: 'bad', spec: random.pick(bad) };
  }
  const priority = random.pick<JobPriority | undefined>([undefined, 'interactive', 'normal', 'batch']);
  if (roll < 0.4) return { kind: 'llm', spec: llmSpec({ prompt: `request ${index}` }), priority };
  const side = random.pick([512, 768, 1024]);
  return { kind: 'image', spec: imageSpec({ width: side, height: side, batch: 1 + random.int(2), seed: index }), priority };
}

describe('500 requests at once through the arbiter', () => {
  it('ends every one exactly once: done, or refused with what to do', { timeout: 120_000 }, async () => {
    rig = makeRig();
    const { arbiter, device } = rig;
    const random = new Random(500);
    const ended = new Map<string, number>();
    arbiter.on('jobDone', (event: JobDoneParams) => ended.set(event.job.id, (ended.get(event.job.id) ?? 0) + 1));

    const requests = Array.from({ length: 500 }, (_, index) => request(random, index));
    const jobs = requests.map((r) => arbiter.submit(r.spec, r.priority));
    assert.equal(new Set(jobs.map((job) => job.id)).size, 500, 'every request got its own job id');

    const outcomes = await within(Promise.all(jobs.map((job) => arbiter.waitFor(job.id))), 100_000, 'the 500 jobs');
    const kinds = { done: 0, refused: 0 };
    outcomes.forEach((outcome, index) => {
      const { kind } = requests[index];
      const where = `request ${index} (${kind}): ${JSON.stringify(outcome.job.message)}`;
      if (kind === 'bad') {
        assert.equal(outcome.job.status, 'failed', where);
        assert.match(outcome.job.message ?? '', ADVICE, where);
        kinds.refused++;
      } else {
        assert.equal(outcome.job.status, 'done', where);
        kinds.done++;
      }
    });
    assert.equal(kinds.done + kinds.refused, 500);
    assert.ok(kinds.refused > 0 && kinds.done > 400, JSON.stringify(kinds));

    // None lost, none reported twice, nothing left behind.
    assert.equal(ended.size, 500);
    assert.ok([...ended.values()].every((count) => count === 1), 'a job ended twice');
    const snapshot = arbiter.snapshot();
    assert.deepEqual(snapshot.queue, []);
    assert.deepEqual(snapshot.running, []);
    const images = requests.filter((r) => r.kind === 'image').length;
    assert.equal(rig.image.runs.length, images, 'every valid image ran once (no retries were needed)');
    assert.equal(rig.llm.served.length, requests.filter((r) => r.kind === 'llm').length);
    assert.equal(device.usage(String(SD_PID)), 0, 'no image memory is held once everything ended');
  });
});
