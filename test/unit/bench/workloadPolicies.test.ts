import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { runBothResident } from '../../../bench/workload/policies/bothResident';
import { runKeepAlive } from '../../../bench/workload/policies/keepAlive';
import { runOracle } from '../../../bench/workload/policies/oracle';
import { runStaticReservation } from '../../../bench/workload/policies/staticReservation';
import { runUnloadPerImage } from '../../../bench/workload/policies/unloadPerImage';
import { runRelay } from '../../../bench/workload/relay';
import { summarize } from '../../../bench/workload/metrics';
import { makeTrace, traceOf, type Arrival } from '../../../bench/workload/trace';
import { GiB } from '../../../sidecar/core/types';

const sdxl1024 = (id: string, at: number): Arrival => ({
  kind: 'image',
  id,
  at,
  model: 'sdxl',
  width: 1024,
  height: 1024,
  batch: 1,
  steps: 25,
  seed: 5,
  truthSeed: 11,
});
const completion = (id: string, at: number): Arrival => ({ kind: 'llm', id, at, task: 'completion', promptTokens: 1200, genTokens: 24 });
const question = (id: string, at: number): Arrival => ({ kind: 'llm', id, at, task: 'chat', promptTokens: 2000, genTokens: 300 });

describe('workload policies on the simulated device', () => {
  it('no arbitration fails an SDXL 1024x1024 image on 8 GB while the LLM is resident; the same job runs once the LLM is out of the way', async () => {
    const trace = traceOf(8 * GiB, [completion('llm-1', 0), sdxl1024('img-1', 1000), completion('llm-2', 2000)]);
    const both = await runBothResident(trace);
    const image = both.records.find((r) => r.id === 'img-1')!;
    assert.equal(image.outcome, 'failed');
    assert.match(image.message ?? '', /out of memory/);
    assert.equal(summarize(both).failedImages, 1);
    assert.ok(both.records.filter((r) => r.kind === 'llm').every((r) => r.outcome === 'done'), 'the LLM itself is fine');

    for (const run of [runUnloadPerImage, runRelay, runOracle]) {
      const result = await run(trace);
      assert.deepEqual(
        result.records.map((r) => r.outcome),
        ['done', 'done', 'done'],
        `${result.policy} runs the same trace without a failure`,
      );
    }
  });

  it('a context that holds the prompt before answers a completion typed further faster, until the LLM is unloaded', async () => {
    const at = (id: string, ms: number, cursor: number): Arrival => ({
      kind: 'llm',
      id,
      at: ms,
      task: 'completion',
      promptTokens: cursor + 375,
      genTokens: 24,
      place: { doc: 1, windowStart: 0, cursor, suffix: 375 },
    });
    const trace = traceOf(24 * GiB, [at('llm-1', 0, 1000), at('llm-2', 10_000, 1010), at('llm-3', 20_000, 1020), sdxl1024('img-1', 25_000), at('llm-4', 90_000, 1030)]);
    const run = await runUnloadPerImage(trace);
    const took = (id: string) => {
      const r = run.records.find((x) => x.id === id)!;
      return r.endedAt! - r.at;
    };
    assert.ok(took('llm-2') < took('llm-1') * 0.75, `held prefix: ${took('llm-2')} ms vs ${took('llm-1')} ms`);
    assert.ok(took('llm-4') > took('llm-1'), `after the image the server was restarted: nothing held (${took('llm-4')} ms)`);
    // The ideal counts the prefix the request before left, so the held prefix is not counted as saved waiting.
    assert.ok(Math.abs(took('llm-2') - run.records.find((x) => x.id === 'llm-2')!.idealMs!) < 5);
  });

  it('keep-alive unloads the LLM after 5 idle minutes and reloads it at the next request', async () => {
    const trace = traceOf(24 * GiB, [completion('llm-1', 0), completion('llm-2', 6 * 60_000)]);
    const run = await runKeepAlive(trace);
    assert.equal(run.llmReloads, 1);
    const late = summarize(run);
    assert.ok(late.waitP95Ms > 500, `the second request waits for the reload (${late.waitP95Ms} ms)`);
  });

  it('the static reservation leaves the LLM only what the image model does not reserve', async () => {
    const trace = traceOf(8 * GiB, [completion('llm-1', 0)]);
    const run = await runStaticReservation(trace);
    assert.match(run.notes.join(' '), /LLM on 0\/33 GPU layers/);
    assert.ok(summarize(run).waitP50Ms > 10_000, 'a 7B on the CPU answers far slower than on the GPU');
  });

  it('VRAM Relay (the real arbiter) ends every job of a short seeded session', async () => {
    const trace = makeTrace(2, 8 * GiB, { durationMs: 6 * 60_000 });
    assert.ok(trace.jobs.some((j) => j.kind === 'image') && trace.jobs.some((j) => j.kind === 'llm'));
    const run = await runRelay(trace);
    assert.equal(run.outcome, 'done');
    const notDone = run.records.filter((r) => r.outcome !== 'done');
    assert.deepEqual(notDone, [], 'no failed, gray or lost job');
    assert.equal(run.records.length, trace.jobs.length);
    assert.ok(run.decisionCounts.yield > 0, 'on 8 GB the LLM had to yield for the images');
  });

  it('VRAM Relay serves every queued LLM request before an image job that needs the LLM to yield', async () => {
    // On 8 GB the SDXL job cannot run beside the hot LLM. Requests queued while one is running go before it.
    const trace = traceOf(8 * GiB, [question('llm-1', 0), sdxl1024('img-1', 100), question('llm-2', 200), question('llm-3', 300)]);
    const run = await runRelay(trace);
    const end = (id: string) => run.records.find((r) => r.id === id)!.endedAt!;
    assert.deepEqual(
      run.records.map((r) => r.outcome),
      ['done', 'done', 'done', 'done'],
    );
    assert.ok(end('llm-3') < end('img-1') - 10_000, `the queued requests end before the image job runs (llm-3 ${end('llm-3')}, image ${end('img-1')})`);
  });
});
