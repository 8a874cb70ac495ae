/**
 * Workers killed at every stage, from outside, on a seeded schedule: the real Arbiter, the real sd-cli runner with the
 * sd.cpp stand-in on a shared simulated device, and the real node-llama-cpp worker (loaded once, on the CPU).
 *
 * Each repetition picks a stage (model loading, text encoding, a sampling step, VAE decode, saving, or the LLM worker
 * during a generation), a way to die (SIGKILL or SIGABRT sent to the worker's pid, or sd.cpp's own abort: a
 * GGML_ASSERT line and exit 134) and a moment within the stage. Every repetition must end with each submitted job
 * final, every image valid at its path, nothing temporary left in the output or temporary folder, nothing left on the
 * device, the LLM hot again, and no child process but the LLM worker.
 *
 * VRAM_RELAY_FAULT_SEED replays a schedule (the seed is printed); VRAM_RELAY_FAULT_REPS changes the count (100).
 */

import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { JobDoneParams } from '../../../sidecar/protocol';
import { GiB, type ImageJobSpec, type LlmJobSpec } from '../../../sidecar/core/types';
import { EmbeddedLlm } from '../../../sidecar/workers/llm/embeddedLlm';
import type { LlmEvent } from '../../../sidecar/workers/llm/llmEvents';
import { writeLlamaGguf } from '../../helpers/ggufWriter';
import type { StandinStage } from '../../standins/sdcppStandin';
import { bundleLlmWorker, childPids, ImageRig, imageProblem, seededRandom, waitUntil, withTimeout } from './faultRig';
import { processExists } from '../../helpers/processes';

type Stage = StandinStage | 'llm';
type Death = 'SIGKILL' | 'SIGABRT' | 'exit134';

interface Repetition {
  stage: Stage;
  death: Death;
  /** The sampling step after which it dies (diffusion), or the streamed piece of text (llm). */
  step: number;
  /** Fraction of the stage's time to wait before the signal. */
  moment: number;
  size: number;
  batch: number;
  /** Another job submitted alongside (an LLM request beside an image job, a small image beside an LLM request). */
  companion: boolean;
}

const STAGES: readonly Stage[] = ['load', 'textEncode', 'diffusion', 'vaeDecode', 'save', 'llm'];
const STEPS = 4;
/** Stand-in timing: long enough for a signal to land inside a stage, short enough for 100 repetitions. */
const STAGE_MS = 30;
const STEP_MS = 15;
const SAVE_MS = 40;
const JOB_TIMEOUT_MS = 60_000;

/** Every stage equally often (shuffled in blocks of six); the rest drawn from the seed. */
function schedule(seed: number, count: number): Repetition[] {
  const random = seededRandom(seed);
  const below = (n: number) => Math.floor(random() * n);
  const reps: Repetition[] = [];
  while (reps.length < count) {
    const block = [...STAGES];
    for (let i = block.length - 1; i > 0; i--) {
      const j = below(i + 1);
      [block[i], block[j]] = [block[j], block[i]];
    }
    for (const stage of block) {
      if (reps.length >= count) break;
      const r = random();
      const death: Death = stage === 'llm' ? (r < 0.5 ? 'SIGKILL' : 'SIGABRT') : r < 0.45 ? 'SIGKILL' : r < 0.8 ? 'SIGABRT' : 'exit134';
      const sizeDraw = random();
      const size = stage === 'llm' ? 256 : sizeDraw < 0.5 ? 256 : sizeDraw < 0.85 ? 512 : 640;
      reps.push({
        stage,
        death,
        step: stage === 'llm' ? 1 + below(5) : 1 + below(STEPS - 1),
        moment: random(),
        size,
        batch: size === 256 && random() < 0.25 ? 2 : 1,
        companion: random() < (stage === 'llm' ? 0.3 : 0.4),
      });
    }
  }
  return reps;
}

/** The stage a log line of sd.cpp starts (or the sampling step it reports). */
function stageOfLine(line: string): { stage: StandinStage; step?: number } | undefined {
  if (/loading (?:diffusion )?model from '/.test(line)) return { stage: 'load' };
  if (/generate_image \d+x\d+/.test(line)) return { stage: 'textEncode' };
  const step = /\|\s*(\d+)\/\d+ - /.exec(line);
  if (step) return { stage: 'diffusion', step: Number(step[1]) };
  if (/decoding \d+ latents/.test(line)) return { stage: 'vaeDecode' };
  if (/(?:generate_image|txt2img) completed in/.test(line)) return { stage: 'save' };
  return undefined;
}

/** Sends the repetition's signal to the first stand-in run once it reaches the stage. */
class StageKiller {
  killedPid: number | undefined;
  /** The stage the log last showed when the signal went. */
  killedIn: string | undefined;
  missed = false;
  private armed = true;
  private last = 'start';
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly rep: Repetition,
    private readonly rig: ImageRig,
    private readonly tempPrefix: string,
  ) {}

  onLine(line: string): void {
    const seen = stageOfLine(line);
    if (!seen) return;
    this.last = seen.step !== undefined ? `diffusion step ${seen.step}` : seen.stage;
    if (!this.armed || this.rep.death === 'exit134' || seen.stage !== this.rep.stage) return;
    if (seen.stage === 'diffusion' && seen.step !== this.rep.step) return;
    this.armed = false;
    const pid = this.rig.standinPids().at(-1)!;
    if (seen.stage === 'save') return this.killWhileWriting(pid);
    const window = seen.stage === 'diffusion' ? STEP_MS : STAGE_MS;
    this.timer = setTimeout(() => this.kill(pid), Math.floor(this.rep.moment * window * 0.6));
  }

  /** Waits for the image file to appear, then kills while it is being written. */
  private killWhileWriting(pid: number): void {
    const started = Date.now();
    const poll = () => {
      const writing = readdirSync(this.rig.outDir).some((n) => n.startsWith(this.tempPrefix));
      if (writing || Date.now() - started > 2000) {
        this.timer = setTimeout(() => this.kill(pid), Math.floor(this.rep.moment * SAVE_MS * 0.4));
        return;
      }
      this.timer = setTimeout(poll, 2);
    };
    poll();
  }

  private kill(pid: number): void {
    // A run that has just ended may not be reaped yet: a signal to it would count as a kill that never happened.
    if (hasExited(pid)) {
      this.missed = true;
      return;
    }
    try {
      process.kill(pid, this.rep.death as NodeJS.Signals);
      this.killedPid = pid;
      this.killedIn = this.last;
    } catch {
      this.missed = true; // It had already finished.
    }
  }

  dispose(): void {
    clearTimeout(this.timer);
  }
}

describe('workers killed at every stage (seeded)', { timeout: 900_000 }, () => {
  let rig: ImageRig;
  let llm: EmbeddedLlm;
  const llmEvents: LlmEvent[] = [];

  before(async () => {
    rig = await ImageRig.create({ capacity: 8 * GiB });
    const model = join(rig.root, 'tiny.gguf');
    await writeLlamaGguf(model, { seed: 7 });
    llm = new EmbeddedLlm({
      modelPath: model,
      contextSize: 256,
      gpu: false,
      gpuLayers: 0,
      threads: 1,
      // Restarted after every kill: the bundled worker starts three times faster than under the TypeScript loader.
      worker: await bundleLlmWorker(rig.root),
      // An abort may leave a core dump where they are enabled: keep it out of the folders under test.
      cwd: rig.root,
      env: { TMPDIR: rig.root },
      hangTimeoutMs: 15_000,
      onEvent: (event) => llmEvents.push(event),
    });
    await llm.setState('hot');
    rig.startArbiter({ llm });
  });

  after(async () => {
    const pid = llm?.workerPid();
    await llm?.setState('stopped').catch(() => undefined);
    if (pid && processExists(pid)) process.kill(pid, 'SIGKILL');
    await rig?.dispose();
  });

  test('every job ends with a valid image or a clear error, nothing is lost or left behind, the LLM comes back', async (t) => {
    const seed = Number(process.env.VRAM_RELAY_FAULT_SEED ?? Date.now() % 2 ** 31);
    const count = Number(process.env.VRAM_RELAY_FAULT_REPS ?? 100);
    t.diagnostic(`fault schedule seed ${seed} (replay with VRAM_RELAY_FAULT_SEED=${seed}), ${count} repetitions`);
    const reps = schedule(seed, count);
    const finals = new Set<string>();
    const tally = new Map<string, number>();
    const count1 = (key: string) => tally.set(key, (tally.get(key) ?? 0) + 1);
    const timeByStage = new Map<Stage, number>();
    let killed = 0;
    let retried = 0;
    const startedAt = Date.now();

    for (const [i, rep] of reps.entries()) {
      const label = `seed ${seed}, repetition ${i + 1}/${count} (${JSON.stringify(rep)})`;
      const repStarted = Date.now();
      try {
        const outcome = rep.stage === 'llm' ? await llmRepetition(i, rep) : await imageRepetition(i, rep);
        for (const file of outcome.outputs) finals.add(file);
        if (outcome.killed) killed++;
        retried += outcome.retries;
        count1(`${rep.stage}/${rep.death}/${outcome.killed ? `died in ${outcome.killedIn}` : 'not reached'}`);
        await checkAfterRepetition(finals);
        timeByStage.set(rep.stage, (timeByStage.get(rep.stage) ?? 0) + Date.now() - repStarted);
      } catch (error) {
        const decisions = rig.arbiter
          .decisions({ limit: 12 })
          .map((d) => `${d.kind}: ${d.reason}`)
          .join('\n  ');
        throw new Error(`${label}: ${(error as Error).message}\n  last decisions:\n  ${decisions}`, { cause: error });
      }
    }

    const lines = [...tally.entries()].sort().map(([key, n]) => `${key}: ${n}`);
    t.diagnostic(`${killed} of ${count} repetitions killed a worker, ${retried} image reruns, in ${((Date.now() - startedAt) / 1000).toFixed(1)} s`);
    for (const line of lines) t.diagnostic(line);
    t.diagnostic(`seconds per stage: ${[...timeByStage].map(([stage, ms]) => `${stage} ${(ms / 1000).toFixed(1)}`).join(', ')}`);
    // The schedule is only worth its name if the signals land: most of them must.
    assert.ok(killed >= count / 2, `only ${killed} of ${count} repetitions killed a worker`);
  });

  test(
    'an LLM request after the worker gave up restarting brings it back instead of failing',
    async () => {
      for (let kill = 1; kill <= 4; kill++) {
        const pid = llm.workerPid();
        if (pid === undefined) break;
        const seen = llmEvents.length;
        process.kill(pid, 'SIGKILL');
        // Each kill ends in a restart (recovered) or, the fourth time, in the worker being left stopped (gaveUp).
        await waitUntil(() => llmEvents.slice(seen).some((e) => e.type === 'recovered' || e.type === 'gaveUp'), 10_000, `the LLM after idle kill ${kill}`);
      }
      const job = rig.arbiter.submit(completion('after four crashes', 8));
      const done = await withTimeout(rig.arbiter.waitFor(job.id), JOB_TIMEOUT_MS, 'the request');
      checkLlmJob(done);
    },
  );

  // -------------------------------------------------------------------------------------------------------------

  interface Outcome {
    outputs: string[];
    killed: boolean;
    killedIn?: string;
    retries: number;
  }

  async function imageRepetition(i: number, rep: Repetition): Promise<Outcome> {
    const name = `rep-${i + 1}`;
    const killer = new StageKiller(rep, rig, `.${name}.`);
    const crashOnce = join(rig.root, `crash-once-${i + 1}`);
    rig.image.current = rig.runner(
      {
        stepMs: STEP_MS,
        ...(rep.death === 'exit134' ? { crashAt: rep.stage as StandinStage, crashStep: rep.step, crashMode: 'abort' as const } : {}),
      },
      { stageMs: STAGE_MS, saveMs: SAVE_MS, ...(rep.death === 'exit134' ? { crashOnce } : {}) },
      { onLog: (line) => killer.onLine(line) },
    );
    const spec = rig.imageSpec(name, { width: rep.size, height: rep.size, batch: rep.batch, steps: STEPS });
    try {
      const jobs = [rig.arbiter.submit(spec)];
      if (rep.companion) jobs.push(rig.arbiter.submit(completion(`Tell me about repetition ${i + 1}`, 12)));
      const done = await Promise.all(jobs.map((j) => withTimeout(rig.arbiter.waitFor(j.id), JOB_TIMEOUT_MS, `job ${j.id}`)));
      const outputs = await checkImageJob(done[0], spec);
      if (done[1]) checkLlmJob(done[1]);
      const killedBy134 = rep.death === 'exit134' && existsSync(crashOnce);
      const retries = rig.arbiter.decisions({ jobId: done[0].job.id }).filter((d) => d.kind === 'retry').length;
      if (killer.killedPid !== undefined || killedBy134) {
        assert.ok(retries >= 1, 'a killed run is run again');
        if (killer.killedPid !== undefined) assert.equal(processExists(killer.killedPid), false, 'the killed process is gone');
      }
      return {
        outputs,
        killed: killer.killedPid !== undefined || killedBy134,
        killedIn: killedBy134 ? rep.stage : killer.killedIn,
        retries,
      };
    } finally {
      killer.dispose();
    }
  }

  async function llmRepetition(i: number, rep: Repetition): Promise<Outcome> {
    const job = completion(`Once upon a time, in repetition ${i + 1},`, 40);
    const pidBefore = llm.workerPid();
    const crashesBefore = llmEvents.filter((e) => e.type === 'crash').length;
    let pieces = 0;
    let killedPid: number | undefined;
    const submitted = rig.arbiter.submit(job);
    const onProgress = (p: { jobId: string; textDelta?: string }) => {
      if (p.jobId !== submitted.id || p.textDelta === undefined || killedPid !== undefined) return;
      if (++pieces < rep.step) return;
      killedPid = llm.workerPid();
      if (killedPid !== undefined) process.kill(killedPid, rep.death as NodeJS.Signals);
    };
    rig.arbiter.on('progress', onProgress);
    try {
      const jobs = [submitted];
      let spec: ImageJobSpec | undefined;
      if (rep.companion) {
        rig.image.current = rig.runner({ stepMs: STEP_MS });
        spec = rig.imageSpec(`rep-${i + 1}`, { width: 256, height: 256, steps: STEPS });
        jobs.push(rig.arbiter.submit(spec));
      }
      const done = await Promise.all(jobs.map((j) => withTimeout(rig.arbiter.waitFor(j.id), JOB_TIMEOUT_MS, `job ${j.id}`)));
      const text = checkLlmJob(done[0]);
      const outputs = spec ? await checkImageJob(done[1], spec) : [];
      if (killedPid !== undefined) {
        assert.notEqual(llm.workerPid(), pidBefore, 'a new LLM worker serves');
        const crash = llmEvents.filter((e) => e.type === 'crash').slice(crashesBefore)[0];
        assert.ok(crash && crash.type === 'crash' && crash.signal === rep.death && crash.willRetry, `the crash is reported: ${JSON.stringify(crash)}`);
        assert.ok(text.length > 0);
      }
      return { outputs, killed: killedPid !== undefined, killedIn: `generation, piece ${rep.step}`, retries: 0 };
    } finally {
      rig.arbiter.off('progress', onProgress);
    }
  }

  async function checkImageJob(done: JobDoneParams, spec: ImageJobSpec): Promise<string[]> {
    const { job, outputs } = done;
    if (job.status !== 'done') {
      // A clear error is acceptable, but here one kill is always recoverable: say what happened.
      assert.fail(`the image job ended ${job.status}: ${job.message}`);
    }
    const expected =
      spec.batch === 1 ? [spec.outputPath] : Array.from({ length: spec.batch }, (_, n) => spec.outputPath.replace(/\.png$/, `_${n + 1}.png`));
    assert.deepEqual(outputs, expected);
    for (const file of expected) {
      const problem = await imageProblem(file, spec.width, spec.height);
      assert.equal(problem, undefined, problem);
    }
    return expected;
  }

  function checkLlmJob(done: JobDoneParams): string {
    assert.equal(done.job.status, 'done', `the LLM request ended ${done.job.status}: ${done.job.message}`);
    assert.ok(typeof done.text === 'string' && done.text.length > 0, 'the LLM request answered');
    return done.text!;
  }

  /** Everything back where it was: LLM hot, nothing queued or held, no file or process left over. */
  async function checkAfterRepetition(finals: Set<string>): Promise<void> {
    await waitUntil(
      () => {
        const s = rig.arbiter.snapshot();
        return s.queue.length === 0 && s.running.length === 0 && s.llm.state === 'hot' && llm.state() === 'hot' && llm.processState() === 'ready';
      },
      20_000,
      'the LLM back hot with nothing queued',
    );
    const snapshot = rig.arbiter.snapshot();
    assert.equal(snapshot.llm.wantedState, 'hot');
    const left = readdirSync(rig.outDir)
      .map((n) => join(rig.outDir, n))
      .filter((f) => !finals.has(f));
    assert.deepEqual(left, [], 'nothing but finished images in the output folder');
    assert.deepEqual(rig.tmpEntries(), [], 'nothing left in the temporary folder');
    assert.deepEqual(childPids(), [llm.workerPid()], 'no child process but the LLM worker');
    assert.equal(rig.device.usage(), 0, 'nothing left allocated on the device');
  }
});

/** True when `pid` is gone or a zombie (Linux: from /proc; elsewhere only gone). */
function hasExited(pid: number): boolean {
  if (!processExists(pid)) return true;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return process.platform === 'linux';
  }
}

function completion(prompt: string, maxTokens: number): LlmJobSpec {
  return { kind: 'llm', task: 'completion', contextSize: 256, prompt, maxTokens, temperature: 0.8 };
}

