import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { imageModelsFor } from '../../../bench/workload/catalog';
import { Rng } from '../../../bench/workload/rng';
import { llmSpec } from '../../../bench/workload/policies/common';
import { makeTrace, makeTraces, sharedPromptTokens, type ImageArrival, type LlmArrival } from '../../../bench/workload/trace';
import { PromptReuse, promptText } from '../../../sidecar/core/estimators/promptReuse';
import { CHARS_PER_TOKEN } from '../../../sidecar/core/estimators/figures';
import { imageTruth } from '../../../bench/workload/truth';
import { GiB, MiB } from '../../../sidecar/core/types';

describe('workload trace', () => {
  it('is the same for the same seed and differs for another seed', () => {
    assert.deepEqual(makeTrace(7, 12 * GiB), makeTrace(7, 12 * GiB));
    assert.notDeepEqual(makeTrace(7, 12 * GiB).jobs, makeTrace(8, 12 * GiB).jobs);
    const rng = () => new Rng(42);
    assert.deepEqual(Array.from({ length: 5 }, rng().next.bind(rng())), Array.from({ length: 5 }, rng().next.bind(rng())));
  });

  it('asks the same things on every card, at the same times', () => {
    const [small, , , large] = makeTraces(3);
    assert.deepEqual(
      small.jobs.map((j) => [j.id, j.at, j.kind === 'image' ? j.model : j.task]),
      large.jobs.map((j) => [j.id, j.at, j.kind === 'image' ? j.model : j.task]),
    );
  });

  it('mixes completions, questions, prompt enhancements and images of every model, size range and batch', () => {
    const trace = makeTrace(1, 24 * GiB);
    const tasks = new Set(trace.jobs.flatMap((j) => (j.kind === 'llm' ? [j.task] : [])));
    assert.deepEqual([...tasks].sort(), ['chat', 'completion', 'enhancePrompt']);
    const images = trace.jobs.filter((j): j is ImageArrival => j.kind === 'image');
    assert.deepEqual([...new Set(images.map((j) => j.model))].sort(), ['flux', 'sd15', 'sdxl']);
    const sides = images.map((j) => Math.max(j.width, j.height));
    assert.equal(Math.min(...sides), 512);
    assert.equal(Math.max(...sides), 2048);
    assert.ok(images.some((j) => j.batch > 1));
    assert.ok(trace.jobs.every((j, i) => i === 0 || trace.jobs[i - 1].at <= j.at), 'in arrival order');
    for (const j of trace.jobs) if (j.kind === 'llm') assert.ok(j.promptTokens > 0 && j.genTokens > 0);
    assert.ok(trace.otherUse.length > 2, "other programs' use comes and goes");
  });

  it('keeps other programs under 15% of the card and only sizes the card can run', () => {
    for (const trace of makeTraces(5)) {
      assert.ok(trace.otherUsePeak <= Math.max(0.15 * trace.budget, 600 * MiB));
      const room = trace.budget - trace.otherUsePeak - 512 * MiB;
      for (const job of trace.jobs) {
        if (job.kind !== 'image') continue;
        assert.equal(job.width % 64, 0);
        assert.equal(job.height % 64, 0);
        const truth = imageTruth(trace.models[job.model], job, 'current', trace.imageBiasSeed);
        assert.ok(truth.weights.diffusion + truth.compute.diffusionFlash <= room, `${job.id} fits the ${trace.budget / GiB} GB card`);
      }
    }
  });

  it('asks completions in places: while the user types there, each shares the prefix up to the cursor before', () => {
    const completions = makeTrace(1, 12 * GiB).jobs.filter((j): j is LlmArrival => j.kind === 'llm' && j.task === 'completion');
    assert.ok(completions.every((c) => c.place && c.promptTokens === c.place.cursor - c.place.windowStart + c.place.suffix));
    let sameDoc = 0;
    let shared = 0;
    for (let i = 1; i < completions.length; i++) {
      const [a, b] = [completions[i - 1], completions[i]];
      const tokens = sharedPromptTokens(a, b);
      if (a.place!.doc !== b.place!.doc) {
        assert.equal(tokens, 0, 'another place shares nothing');
        continue;
      }
      sameDoc++;
      assert.ok(b.place!.cursor > a.place!.cursor, 'typed on');
      if (a.place!.windowStart === b.place!.windowStart) {
        shared++;
        assert.equal(tokens, a.place!.cursor - a.place!.windowStart);
        // The spec the policies send shares exactly that much text, which is what the arbiter's estimate sees.
        const reuse = new PromptReuse();
        reuse.ended(llmSpec(a), 'answered');
        assert.equal(reuse.reusableTokens(llmSpec(b)), tokens);
      } else assert.equal(tokens, 0, 'a prefix window that moved on shares nothing');
      assert.ok(b.place!.cursor - b.place!.windowStart < 1256, 'never more prefix than the provider sends');
    }
    assert.ok(sameDoc > completions.length / 2 && shared > sameDoc * 0.8, `${sameDoc} in the same place, ${shared} sharing`);
    assert.equal(sharedPromptTokens(null, completions[0]), 0);
    const spec = llmSpec(completions[0]);
    assert.equal(spec.task, 'infill');
    assert.equal(promptText(spec).length - 3, completions[0].promptTokens * CHARS_PER_TOKEN);
  });

  it('picks the Flux quantisation by card', () => {
    assert.match(imageModelsFor(8 * GiB).flux.label, /Q2_K/);
    assert.match(imageModelsFor(24 * GiB).flux.label, /fp8/);
  });
});
