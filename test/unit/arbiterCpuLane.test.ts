import { afterEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';

import { INFILL_PREFIX_STEP } from '../../src/llmTasks';
import { CPU_INFILL_PREFIX_CHARS, CPU_INFILL_PREFIX_STEP, CPU_INFILL_SUFFIX_CHARS, cpuLaneSpec } from '../../sidecar/core/cpuLane';
import { GiB, type ImageJobCosts, type LlmJobSpec } from '../../sidecar/core/types';
import { FakeCpuLlm, SDXL_1024, imageSpec, llmSpec, makeRig, until, within, type Rig } from './arbiterHarness';

let rig: Rig | undefined;
afterEach(() => {
  rig?.dispose();
  rig = undefined;
});

/** An SDXL job whose sampling takes `samplingMs` (in the estimate and in truth). */
function sdxlTaking(samplingMs: number): ImageJobCosts {
  return { ...SDXL_1024, time: { ...SDXL_1024.time, samplingMs } };
}

/** 15 GB left by other programs: the hot LLM and an SDXL 1024 job do not fit together, so the LLM yields. */
function laneRig(samplingMs: number, options: { cpuLane?: boolean; idleSeconds?: number } = {}): Rig & { cpu: FakeCpuLlm } {
  const made = makeRig({
    device: { otherUse: 9 * GiB },
    estimate: sdxlTaking(samplingMs),
    cpuLane: options.cpuLane ?? true,
    arbiter: { recentUseMs: 0, ...(options.idleSeconds !== undefined ? { cpuLaneIdleSeconds: options.idleSeconds } : {}) },
  });
  return made as Rig & { cpu: FakeCpuLlm };
}

/** A completion in a 3900-character file, after `typed` more characters. */
const FILE = 'const x = 1;\n'.repeat(300);
function infill(typed: string) {
  return llmSpec({ task: 'infill', prompt: undefined, prefix: FILE + typed, suffix: '\n}\n', maxTokens: 64 });
}

async function imageRunning(r: Rig): Promise<string> {
  const img = r.arbiter.submit(imageSpec());
  await until(() => r.arbiter.job(img.id)?.status === 'running', 'the image job to run');
  return img.id;
}

/** Submits `spec` (to be answered on the CPU copy), waits until it is done, and gives its answer decision's reason. */
async function answeredOnCpu(r: Rig, spec: LlmJobSpec): Promise<string> {
  const job = r.arbiter.submit(spec);
  assert.equal((await within(r.arbiter.waitFor(job.id))).job.status, 'done');
  const answer = r.decisions.find((d) => d.kind === 'answer' && d.jobId === job.id);
  assert.ok(answer, `${job.id} was answered on the CPU`);
  return answer.reason;
}

describe('Arbiter: the CPU copy of the LLM', () => {
  it('answers a request on the CPU while an image job holds the GPU, leaving the GPU LLM yielded', async () => {
    const made = laneRig(120_000);
    rig = made;
    const { arbiter, llm } = rig;
    const imgId = await imageRunning(rig);
    const req = arbiter.submit(llmSpec({ prompt: 'hello', maxTokens: 16 }));
    const reqDone = await within(arbiter.waitFor(req.id));
    assert.equal(reqDone.job.status, 'done', reqDone.job.message);
    assert.match(reqDone.job.message!, /on the CPU while an image job held the GPU/);
    assert.equal(reqDone.text, 'cpu answer to hello');
    assert.equal(arbiter.snapshot().llm.cpuCopy, 'running', 'the panel and status bar show the copy while it is up');
    assert.equal(arbiter.job(req.id)?.ranOn, 'cpu-copy', 'the panel says where it ran');
    assert.equal(arbiter.job(imgId)?.status, 'running', 'answered before the image job ended');
    assert.deepEqual(made.cpu.served, ['hello']);
    assert.deepEqual(llm.served, []);
    assert.deepEqual(llm.moves, ['cold'], 'the GPU LLM did not climb back during the image job');

    const plan = rig.decisions.find((d) => d.kind === 'plan' && d.jobId === req.id)!;
    assert.match(plan.reason, /while an image job holds memory -> answer on the CPU \(on the CPU est\. [\d.]+ s with its start, waiting est\. [\d.]+ (s|min)/);
    const answer = rig.decisions.find((d) => d.kind === 'answer' && d.jobId === req.id)!;
    assert.match(answer.reason, /answered on the CPU in 3\.0 s \(est\. [\d.]+ (ms|s)\), after 1\.5 s starting the CPU copy/);
    assert.equal(answer.durationMs, 4500);

    const imgDone = await within(arbiter.waitFor(imgId));
    assert.equal(imgDone.job.status, 'done');
    await until(() => llm.state() === 'hot', 'the GPU LLM to come back after the image job');
  });

  it('waits for the GPU when the image job ends sooner than the CPU would answer', async () => {
    const made = laneRig(4000);
    rig = made;
    const { arbiter, llm } = rig;
    await imageRunning(rig);
    // 768 tokens at most, half expected: about a minute on the CPU, against a 4 s image job.
    const req = arbiter.submit(llmSpec({ task: 'chat', prompt: 'explain this file', maxTokens: 768 }));
    const done = await within(arbiter.waitFor(req.id));
    assert.equal(done.job.status, 'done', done.job.message);
    assert.equal(done.job.message, 'Done.');
    assert.deepEqual(made.cpu.served, []);
    assert.deepEqual(made.cpu.moves, [], 'the CPU copy was not started');
    assert.deepEqual(llm.served, ['explain this file']);
    const wait = rig.decisions.find((d) => d.kind === 'wait' && d.jobId === req.id)!;
    assert.match(wait.reason, /-> wait for it to end \(on the CPU est\. 1 min [\d.]+ s with its start( \+ [\d.]+ s of waiting for requests that come meanwhile)?, waiting est\. [\d.]+ s\)/);
  });

  it('a CPU copy that cannot start is set aside: the request waits for the GPU LLM and is answered there', async () => {
    const made = laneRig(120_000);
    rig = made;
    made.cpu.failStart = 'not enough RAM for the model';
    const { arbiter, llm } = rig;
    assert.equal(arbiter.snapshot().llm.cpuCopy, 'available', 'the editor may send completions while the GPU LLM is lent');
    const imgId = await imageRunning(rig);
    const req = arbiter.submit(llmSpec({ prompt: 'hello', maxTokens: 16 }));
    const done = await within(arbiter.waitFor(req.id));
    assert.equal(done.job.status, 'done', done.job.message);
    assert.equal(done.job.message, 'Done.');
    assert.equal(done.job.ranOn, undefined, 'planned again and answered on the GPU');
    assert.equal(arbiter.snapshot().llm.cpuCopy, 'set-aside');
    assert.deepEqual(llm.served, ['hello']);
    const imgDone = await within(arbiter.waitFor(imgId));
    assert.ok(imgDone.job.endedAt! <= done.job.startedAt!, 'served on the GPU after the image job');
    const failure = rig.decisions.find((d) => d.kind === 'worker' && d.jobId === req.id)!;
    assert.match(failure.reason, /the CPU copy of the LLM failed \(not enough RAM for the model\): LLM requests wait for the GPU/);

    // The next image job: the copy is not tried again.
    made.cpu.failStart = undefined;
    await imageRunning(rig);
    const next = arbiter.submit(llmSpec({ prompt: 'again', maxTokens: 16 }));
    const nextDone = await within(arbiter.waitFor(next.id));
    assert.equal(nextDone.job.message, 'Done.');
    assert.deepEqual(made.cpu.served, []);
  });

  it('a request that fails on the CPU after part of its answer is reported, not run twice', async () => {
    const made = laneRig(120_000);
    rig = made;
    made.cpu.failRun = { message: 'worker exited with code 134', afterText: true };
    const { arbiter, llm } = rig;
    await imageRunning(rig);
    const req = arbiter.submit(llmSpec({ prompt: 'hello', maxTokens: 16 }));
    const done = await within(arbiter.waitFor(req.id));
    assert.equal(done.job.status, 'failed');
    assert.match(done.job.message!, /failed on the CPU after part of its answer: worker exited with code 134\. Ask again\./);
    assert.deepEqual(llm.served, []);
  });

  it('stops the CPU copy once it has been idle, to give its RAM back', async () => {
    const made = laneRig(120_000, { idleSeconds: 30 });
    rig = made;
    const { arbiter } = rig;
    await imageRunning(rig);
    const req = arbiter.submit(llmSpec({ prompt: 'hello', maxTokens: 16 }));
    const done = await within(arbiter.waitFor(req.id));
    const answeredAt = done.job.endedAt!;
    await until(() => made.cpu.state() === 'stopped' && made.cpu.moves.length === 2, 'the CPU copy to stop');
    const stop = rig.decisions.find((d) => d.kind === 'worker' && /stopped the CPU copy/.test(d.reason))!;
    assert.match(stop.reason, /idle for 30\.0 s \(gives its RAM back\)/);
    assert.ok(stop.at >= answeredAt + 30_000);
    assert.equal(arbiter.snapshot().llm.cpuCopy, 'available', 'stopped, ready to start again');
  });

  it('counts what the CPU copy holds of the last prompt: a completion typed further is estimated without the shared prefix', async () => {
    const made = laneRig(600_000);
    rig = made;
    await imageRunning(rig);
    assert.doesNotMatch(await answeredOnCpu(rig, infill('')), /held from the request before/);
    const second = await answeredOnCpu(rig, infill('let y'));
    assert.equal(made.cpu.served.length, 2, 'both answered on the CPU');
    // The prefix as the copy runs it (its last 2366 characters, from the same line both times, and its mark), not
    // the suffix after the edit.
    assert.match(second, /~591 prompt tokens held from the request before/);
  });

  it('counts nothing held once the CPU copy died, even when it came back by itself', async () => {
    const made = laneRig(600_000);
    rig = made;
    await imageRunning(rig);
    await answeredOnCpu(rig, infill(''));
    made.cpu.crashes++; // killed while idle and restarted hot, as the worker does on its own
    assert.doesNotMatch(await answeredOnCpu(rig, infill('let y')), /held from the request before/);
    assert.match(await answeredOnCpu(rig, infill('let y = 2')), /~593 prompt tokens held from the request before/, 'held again once served after the restart');
  });

  it('the CPU copy evaluates only the first lines after the cursor, and says so', async () => {
    const line = 'x'.repeat(59) + '\n';
    const long = llmSpec({ task: 'infill', prompt: undefined, prefix: 'let a = ', suffix: line.repeat(25), maxTokens: 64 });
    const cut = cpuLaneSpec(long);
    assert.equal(cut.suffix, line.repeat(4), 'whole lines up to 256 characters');
    assert.equal(cut.prefix, long.prefix);
    assert.equal(cpuLaneSpec({ ...long, suffix: 'y'.repeat(600) }).suffix, 'y'.repeat(CPU_INFILL_SUFFIX_CHARS), 'one long line is cut at the limit');
    const short = { ...long, suffix: line.repeat(2) };
    assert.equal(cpuLaneSpec(short), short, 'a short suffix is kept');
    const chat = llmSpec({ prompt: 'z'.repeat(2000) });
    assert.equal(cpuLaneSpec(chat), chat, 'other requests are kept');

    const made = laneRig(600_000);
    rig = made;
    await imageRunning(rig);
    const req = rig.arbiter.submit(long);
    assert.equal((await within(rig.arbiter.waitFor(req.id))).job.status, 'done');
    const answer = rig.decisions.find((d) => d.kind === 'answer' && d.jobId === req.id)!;
    assert.match(answer.reason, /, cut the text after the cursor to its first 240 characters,/);
  });

  it('the CPU copy evaluates the last lines before the cursor, from a start that stays put while the user types', async () => {
    const line = 'y'.repeat(59) + '\n';
    const file = line.repeat(80); // 4800 characters
    const asked = llmSpec({ task: 'infill', prompt: undefined, prefix: file, suffix: '\n}\n', maxTokens: 64 });
    const cut = cpuLaneSpec(asked).prefix!;
    // The grid point 2560 (the last multiple of 512 at least 2048 before the cursor), moved back to its line's start.
    assert.equal(cut, file.slice(2520));
    assert.equal(cut.length, 2280);
    for (let typed = 0; typed < 1000; typed += 7) {
      const prefix = file + 'z'.repeat(typed);
      const kept = cpuLaneSpec({ ...asked, prefix }).prefix!;
      assert.ok(kept.length >= CPU_INFILL_PREFIX_CHARS && kept.length < CPU_INFILL_PREFIX_CHARS + CPU_INFILL_PREFIX_STEP + line.length, `kept ${kept.length}`);
      assert.ok(kept.startsWith(line), 'whole lines');
      // The editor's window moving on by its step changes nothing: the start is on the file's grid.
      assert.equal(INFILL_PREFIX_STEP % CPU_INFILL_PREFIX_STEP, 0, "the editor's grid is on the copy's");
      assert.equal(cpuLaneSpec({ ...asked, prefix: prefix.slice(INFILL_PREFIX_STEP) }).prefix, kept);
      // While the start stays, the copy's context holds all the prefix before the typing.
      if (typed < 200) assert.equal(kept, cut + 'z'.repeat(typed));
    }
    assert.equal(cpuLaneSpec({ ...asked, prefix: 'w'.repeat(4800) }).prefix, 'w'.repeat(2240), 'one long line is cut on the grid');
    const short = { ...asked, prefix: file.slice(0, CPU_INFILL_PREFIX_CHARS + CPU_INFILL_PREFIX_STEP - 1) };
    assert.equal(cpuLaneSpec(short), short, 'a prefix shorter than the next grid point is kept');

    const made = laneRig(600_000);
    rig = made;
    await imageRunning(rig);
    const req = rig.arbiter.submit({ ...asked, suffix: line.repeat(25) });
    assert.equal((await within(rig.arbiter.waitFor(req.id))).job.status, 'done');
    assert.equal(made.cpu.specs[0].prefix, cut, 'the copy was sent the cut prefix');
    const answer = rig.decisions.find((d) => d.kind === 'answer' && d.jobId === req.id)!;
    assert.match(answer.reason, /, cut the text before the cursor to its last 2280 characters and the text after it to its first 240,/);
  });

  it('a completion cancelled while the CPU copy runs it leaves its prompt held (the engine evaluates a prompt before it looks at a cancel)', async () => {
    const made = laneRig(600_000);
    rig = made;
    const { arbiter } = rig;
    await imageRunning(rig);
    const first = arbiter.submit(infill(''));
    await until(() => arbiter.job(first.id)?.status === 'running' && made.cpu.state() === 'hot', 'the first completion to run on the CPU');
    assert.ok(arbiter.cancel(first.id));
    assert.equal((await within(arbiter.waitFor(first.id))).job.status, 'cancelled');
    const second = arbiter.submit(infill('let y'));
    assert.equal((await within(arbiter.waitFor(second.id))).job.status, 'done');
    const secondAnswer = rig.decisions.find((d) => d.kind === 'answer' && d.jobId === second.id)!;
    assert.match(secondAnswer.reason, /~591 prompt tokens held from the request before/);
  });
});
