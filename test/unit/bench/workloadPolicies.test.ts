import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { runBothResident } from '../../../bench/workload/policies/bothResident';
import { runKeepAlive } from '../../../bench/workload/policies/keepAlive';
import { runOracle } from '../../../bench/workload/policies/oracle';
import { runStaticReservation } from '../../../bench/workload/policies/staticReservation';
import { runUnloadPerImage } from '../../../bench/workload/policies/unloadPerImage';
import { runRelay } from '../../../bench/workload/relay';
import { summarize, waitsOf } from '../../../bench/workload/metrics';
import { llmSpec } from '../../../bench/workload/policies/common';
import { makeTrace, traceOf, type Arrival, type LlmArrival } from '../../../bench/workload/trace';
import { TrueLlm } from '../../../bench/workload/workers';
import { World } from '../../../bench/workload/world';
import { cpuLaneSpec } from '../../../sidecar/core/cpuLane';
import { CHARS_PER_TOKEN } from '../../../sidecar/core/estimators/figures';
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
/** A completion while the user types in one place: the prefix up to `cursor`, then 375 tokens of suffix. */
const typedAt = (id: string, at: number, cursor: number): Arrival => ({
  kind: 'llm',
  id,
  at,
  task: 'completion',
  promptTokens: cursor + 375,
  genTokens: 24,
  place: { doc: 1, windowStart: 0, cursor, suffix: 375 },
});
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
    const trace = traceOf(24 * GiB, [typedAt('llm-1', 0, 1000), typedAt('llm-2', 10_000, 1010), typedAt('llm-3', 20_000, 1020), sdxl1024('img-1', 25_000), typedAt('llm-4', 90_000, 1030)]);
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

  it('the editor cancels a completion not answered when the next is asked; its waiting lasts until the next suggestion shown', async () => {
    // On 8 GB the SDXL job cannot run beside the hot LLM: "unload before every image" answers no completion
    // during it, so the three asked meanwhile are superseded but the last, answered after the image.
    const trace = traceOf(8 * GiB, [sdxl1024('img-1', 0), completion('llm-1', 5_000), completion('llm-2', 10_000), completion('llm-3', 15_000)]);
    const run = await runUnloadPerImage(trace);
    const record = (id: string) => run.records.find((r) => r.id === id)!;
    assert.deepEqual(
      ['llm-1', 'llm-2', 'llm-3'].map((id) => record(id).outcome),
      ['superseded', 'superseded', 'done'],
    );
    assert.equal(record('llm-1').endedAt, 10_000, 'cancelled as the next one is asked');
    const shown = record('llm-3').endedAt!;
    assert.ok(shown > record('img-1').endedAt!, 'answered after the image job');
    const summary = summarize(run);
    assert.equal(summary.completions, 3);
    assert.equal(summary.completionsShown, 1);
    assert.equal(summary.lostJobs, 0, 'a superseded completion is not lost');
    assert.deepEqual(
      waitsOf(run),
      ['llm-3', 'llm-2', 'llm-1'].map((id) => shown - record(id).at - record(id).idealMs!),
      'each waited until the suggestion shown after the image',
    );
  });

  it('a request cancelled while its prompt is evaluated stops only once the prompt is in the context, which keeps it', async () => {
    // Typing at one place: llm-2 supersedes llm-1 during llm-1's prompt; llm-2 then finds llm-1's prefix held.
    // The static reservation on 8 GB leaves the LLM no GPU layer: ~15 s of prompt on the CPU for llm-1.
    const trace = traceOf(8 * GiB, [typedAt('llm-1', 0, 1000), typedAt('llm-2', 3_000, 1010)]);
    const run = await runStaticReservation(trace);
    const second = run.records.find((r) => r.id === 'llm-2')!;
    const llm = new World(trace).llm;
    const alone = llm.requestMs(trace.jobs[1] as never, 0, 0);
    const firstPrompt = llm.requestPhasesMs(trace.jobs[0] as never, 0, 0).promptMs;
    const reusing = llm.requestMs(trace.jobs[1] as never, 0, 1000);
    assert.equal(run.records[0].outcome, 'superseded');
    assert.equal(second.outcome, 'done');
    assert.equal(second.endedAt, firstPrompt + reusing, 'llm-2 starts when llm-1\'s prompt is in, and reuses its prefix');
    assert.ok(second.endedAt! < firstPrompt + alone, 'sooner than evaluating its whole prompt again');
  });

  it('the CPU copy is timed on the prompt it was sent (cut as cpuLaneSpec cuts it), at the CPU speed the trace sets', async () => {
    // A fresh place 1250 tokens into a file: the editor's window, then the copy's cut of it.
    const job = typedAt('llm-1', 0, 1250) as LlmArrival;
    const sent = cpuLaneSpec(llmSpec(job));
    const sentTokens = Math.ceil((sent.prefix!.length + sent.suffix!.length) / CHARS_PER_TOKEN);
    assert.ok(sentTokens < job.promptTokens / 2, `${sentTokens} of ${job.promptTokens} tokens sent`);
    const timed = async (cpuSpeed?: number) => {
      const world = new World({ ...traceOf(8 * GiB, [job]), cpuSpeed });
      const llm = new TrueLlm(world, 0);
      llm.prime('hot');
      let text = '';
      void llm.run(sent, () => undefined, new AbortController().signal).then((t) => (text = t));
      assert.equal(await world.clock.run(() => text !== ''), 'done');
      return world.clock.now();
    };
    const truth = new World(traceOf(8 * GiB, [job])).llm;
    assert.equal(await timed(), truth.requestMs({ promptTokens: sentTokens, genTokens: job.genTokens }, 0));
    assert.ok(await timed() < truth.requestMs(job, 0) * 0.6, 'the whole window would take far longer');
    const halfSpeed = await timed(0.5);
    assert.ok(Math.abs(halfSpeed - 2 * (await timed())) < 100, `half the CPU speed, twice the time: ${halfSpeed} ms`);
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
    // A completion the user typed past is cancelled by the editor (superseded); nothing else may end otherwise.
    const notDone = run.records.filter((r) => r.outcome !== 'done' && !(r.outcome === 'superseded' && r.completion));
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
