import assert from 'node:assert/strict';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import type { ImageJobSpec, LlmJobSpec } from '../../../sidecar/core/types';
import {
  decideRecovery,
  expectedOutputs,
  JobLedger,
  LLM_LOST_MESSAGE,
  LOST_TWICE_MESSAGE,
  lossPolicyFor,
  recoverLostJobs,
  recoverySummary,
  type LedgerEntry,
  type LostJobOutcome,
  type RecoveryPorts,
} from '../../../src/jobLedger';

const image = (overrides: Partial<ImageJobSpec> = {}): ImageJobSpec => ({
  kind: 'image',
  modelPath: '/m/sd15.safetensors',
  prompt: 'a lighthouse',
  width: 512,
  height: 512,
  batch: 1,
  steps: 20,
  seed: 42,
  outputPath: path.join('/w', 'assets', 'a-lighthouse.png'),
  ...overrides,
});

const infill: LlmJobSpec = { kind: 'llm', task: 'infill', contextSize: 4096, prefix: 'const a = ', suffix: ';' };
const enhance: LlmJobSpec = { kind: 'llm', task: 'enhancePrompt', contextSize: 4096, messages: [{ role: 'user', content: 'a fox' }] };

/** Settles within a test's lifetime or fails it, so that a missing settle never hangs the run. */
function within<T>(promise: Promise<T>, ms = 2000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`not settled within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** A job whose request went out to the sidecar. */
function inFlight(ledger: JobLedger, spec: ImageJobSpec | LlmJobSpec, priority?: 'interactive' | 'normal' | 'batch', now = 0): LedgerEntry {
  const entry = ledger.submitted(spec, priority, now);
  ledger.sent(entry.key);
  return entry;
}

/** Ports that record what recovery did; files in `complete` count as delivered. */
function ports(options: { complete?: string[]; refuse?: boolean } = {}) {
  const resubmitted: LedgerEntry[] = [];
  const lines: string[] = [];
  let next = 1;
  const p: RecoveryPorts = {
    outputsComplete: async (spec) => expectedOutputs(spec).every((f) => options.complete?.includes(f)),
    resubmit: async (entry) => {
      if (options.refuse) throw new Error('Client is not running');
      resubmitted.push(entry);
      return `job-${next++}`;
    },
    log: (level, message) => lines.push(`${level}: ${message}`),
  };
  return { ports: p, resubmitted, lines };
}

describe('JobLedger states', () => {
  it('follows a job from submitted to sent, accepted and running, and forgets it when it ends', () => {
    const ledger = new JobLedger();
    const entry = ledger.submitted(image(), 'normal', 1000);
    assert.equal(entry.state, 'submitted');
    assert.equal(entry.submissions, 1);
    ledger.sent(entry.key);
    assert.equal(entry.state, 'sent');
    ledger.accepted(entry.key, 'job-7');
    assert.equal(ledger.get(entry.key)?.state, 'accepted');
    assert.equal(ledger.get(entry.key)?.jobId, 'job-7');
    ledger.progress({ jobId: 'job-7', stage: 'diffusion', step: 3, totalSteps: 20 });
    assert.equal(ledger.get(entry.key)?.state, 'running');
    assert.equal(ledger.get(entry.key)?.lastProgress?.step, 3);
    ledger.progress({ jobId: 'job-8', stage: 'diffusion', step: 9, totalSteps: 20 });
    assert.equal(ledger.get(entry.key)?.lastProgress?.step, 3, 'progress of another job changed this one');
    ledger.finished(entry.key);
    assert.equal(ledger.get(entry.key), undefined);
    assert.deepEqual(ledger.open(), []);
  });

  it('marks every job the sidecar had lost when it goes away, and forgets the dead process ids', () => {
    const ledger = new JobLedger();
    const a = ledger.submitted(image(), undefined, 1);
    const b = ledger.submitted(image({ seed: 2 }), undefined, 2);
    const waiting = ledger.submitted(image({ seed: 3 }), undefined, 3);
    ledger.sent(a.key);
    ledger.accepted(a.key, 'job-1');
    ledger.sent(b.key);
    const lost = ledger.connectionLost();
    assert.deepEqual(lost.map((e) => e.key), [a.key, b.key]);
    // Its request never left: it goes to the next process by itself, and must not be sent twice.
    assert.equal(waiting.state, 'submitted');
    assert.equal(ledger.takeLostOutcome(waiting.key), undefined);
    assert.equal(a.state, 'lost');
    assert.equal(a.jobId, undefined);
    assert.equal(a.lastJobId, 'job-1');
    // A new process reuses ids: progress for its job-1 must not land on the lost job.
    ledger.progress({ jobId: 'job-1', stage: 'queued' });
    assert.equal(a.lastProgress, undefined);
    assert.deepEqual(ledger.connectionLost(), [], 'a second loss counted the same jobs again');
  });

  it('hands the outcome of a lost job to its runner exactly once, and nothing for a job that was not lost', async () => {
    const ledger = new JobLedger();
    const entry = ledger.submitted(image(), undefined, 1);
    ledger.sent(entry.key);
    assert.equal(ledger.takeLostOutcome(entry.key), undefined);
    ledger.connectionLost();
    const outcome = ledger.takeLostOutcome(entry.key);
    assert.ok(outcome);
    assert.equal(ledger.takeLostOutcome(entry.key), undefined, 'the same loss was taken twice');
    ledger.settle(entry.key, { kind: 'resubmitted', jobId: 'job-1' });
    assert.deepEqual(await within(outcome), { kind: 'resubmitted', jobId: 'job-1' });
    assert.equal(entry.submissions, 2);
    assert.equal(entry.state, 'accepted');
    assert.equal(entry.jobId, 'job-1');
    // After the resubmission, a failure of the job itself is not a loss.
    assert.equal(ledger.takeLostOutcome(entry.key), undefined);
    // Lost again: a fresh outcome.
    ledger.connectionLost();
    const again = ledger.takeLostOutcome(entry.key);
    assert.ok(again);
    ledger.settle(entry.key, { kind: 'report', message: LOST_TWICE_MESSAGE });
    assert.deepEqual(await within(again), { kind: 'report', message: LOST_TWICE_MESSAGE });
    assert.deepEqual(ledger.lost(), [], 'a reported job would be counted again at the next restart');
  });

  it('reports every lost job when the sidecar is not coming back', async () => {
    const ledger = new JobLedger();
    const entry = inFlight(ledger, image(), undefined, 1);
    ledger.connectionLost();
    const outcome = ledger.takeLostOutcome(entry.key)!;
    assert.equal(ledger.abandonLost('the sidecar stopped 5 times in 3 minutes'), 1);
    const settled = (await within(outcome)) as Extract<LostJobOutcome, { kind: 'report' }>;
    assert.equal(settled.kind, 'report');
    assert.match(settled.message, /stopped 5 times in 3 minutes/);
    assert.match(settled.message, /Restart Sidecar/);
    assert.equal(ledger.abandonLost('again'), 0);
  });
});

describe('what becomes of a lost job', () => {
  const lostEntry = (spec: ImageJobSpec | LlmJobSpec, submissions = 1): LedgerEntry => {
    const ledger = new JobLedger();
    const entry = inFlight(ledger, spec, undefined, 0);
    entry.submissions = submissions;
    ledger.connectionLost();
    return entry;
  };

  it('resubmits image jobs and reports LLM requests, which are stale by then', () => {
    assert.equal(lossPolicyFor(image()), 'resubmit');
    assert.equal(lossPolicyFor(infill), 'report');
    assert.equal(lossPolicyFor(enhance), 'report');
    assert.deepEqual(decideRecovery(lostEntry(image()), false), { kind: 'resubmit' });
    assert.deepEqual(decideRecovery(lostEntry(infill), false), { kind: 'report', message: LLM_LOST_MESSAGE });
  });

  it('takes an image job whose files are already delivered for done instead of writing them twice', () => {
    const spec = image();
    assert.deepEqual(decideRecovery(lostEntry(spec), true), { kind: 'done', outputs: [spec.outputPath] });
  });

  it('resubmits a job only once', () => {
    assert.deepEqual(decideRecovery(lostEntry(image(), 2), false), { kind: 'report', message: LOST_TWICE_MESSAGE });
  });

  it('never resubmits a job the user cancelled', () => {
    const entry = lostEntry(image());
    entry.cancelled = true;
    assert.deepEqual(decideRecovery(entry, false), { kind: 'cancelled' });
  });

  it('knows the final file names of single images and batches, and claims none for video', () => {
    assert.deepEqual(expectedOutputs(image()), [path.join('/w', 'assets', 'a-lighthouse.png')]);
    assert.deepEqual(expectedOutputs(image({ batch: 3 })), ['_1', '_2', '_3'].map((n) => path.join('/w', 'assets', `a-lighthouse${n}.png`)));
    assert.deepEqual(expectedOutputs(image({ frames: 33 })), []);
    assert.deepEqual(expectedOutputs(image({ outputPath: '' })), []);
  });

  it('words the summary for the user', () => {
    assert.equal(recoverySummary({ resubmitted: 1, done: 0, reported: 0, cancelled: 0 }), 'the sidecar restarted; 1 job was resubmitted.');
    assert.equal(recoverySummary({ resubmitted: 3, done: 0, reported: 0, cancelled: 0 }), 'the sidecar restarted; 3 jobs were resubmitted.');
    assert.equal(
      recoverySummary({ resubmitted: 2, done: 1, reported: 1, cancelled: 0 }),
      'the sidecar restarted; 2 jobs were resubmitted, 1 job had already finished and 1 job could not be resumed (each says why).',
    );
    assert.equal(recoverySummary({ resubmitted: 0, done: 0, reported: 0, cancelled: 2 }), undefined);
  });
});

describe('recoverLostJobs', () => {
  it('resubmits the same request in submission order and tells each runner its new id', async () => {
    const ledger = new JobLedger();
    const first = inFlight(ledger, image({ seed: 11 }), 'normal', 1);
    const second = inFlight(ledger, image({ seed: 22, outputPath: '/w/b.png' }), 'batch', 2);
    ledger.accepted(first.key, 'job-1');
    ledger.accepted(second.key, 'job-2');
    ledger.connectionLost();
    const outcomes = [ledger.takeLostOutcome(first.key)!, ledger.takeLostOutcome(second.key)!];
    const world = ports();
    const summary = await recoverLostJobs(ledger, world.ports);
    assert.equal(summary, 'the sidecar restarted; 2 jobs were resubmitted.');
    assert.deepEqual(world.resubmitted.map((e) => e.spec), [first.spec, second.spec], 'not the very same requests, in order');
    assert.deepEqual(world.resubmitted.map((e) => e.priority), ['normal', 'batch']);
    assert.deepEqual(await within(Promise.all(outcomes)), [
      { kind: 'resubmitted', jobId: 'job-1' },
      { kind: 'resubmitted', jobId: 'job-2' },
    ]);
    assert.deepEqual(ledger.lost(), []);
    assert.equal(ledger.open().length, 2, 'resubmitted jobs must stay in the ledger until they end');
  });

  it('settles a delivered image job and an LLM request without running either again', async () => {
    const ledger = new JobLedger();
    const delivered = inFlight(ledger, image(), undefined, 1);
    const completion = inFlight(ledger, infill, 'interactive', 2);
    ledger.connectionLost();
    const outcomes = [ledger.takeLostOutcome(delivered.key)!, ledger.takeLostOutcome(completion.key)!];
    const world = ports({ complete: [image().outputPath] });
    const summary = await recoverLostJobs(ledger, world.ports);
    assert.equal(world.resubmitted.length, 0);
    assert.equal(summary, 'the sidecar restarted; 1 job had already finished and 1 job could not be resumed (each says why).');
    assert.deepEqual(await within(Promise.all(outcomes)), [
      { kind: 'done', outputs: [image().outputPath] },
      { kind: 'report', message: LLM_LOST_MESSAGE },
    ]);
    assert.ok(world.lines.some((l) => /already delivered/.test(l)));
  });

  it('reports a job the new sidecar refused to take', async () => {
    const ledger = new JobLedger();
    const entry = inFlight(ledger, image(), undefined, 1);
    ledger.connectionLost();
    const outcome = ledger.takeLostOutcome(entry.key)!;
    const summary = await recoverLostJobs(ledger, ports({ refuse: true }).ports);
    assert.match(summary ?? '', /1 job could not be resumed/);
    const settled = await within(outcome);
    assert.equal(settled.kind, 'report');
    assert.match((settled as { message: string }).message, /did not take the job again \(Client is not running\)/);
  });

  it('says nothing when no job was in flight', async () => {
    assert.equal(await recoverLostJobs(new JobLedger(), ports().ports), undefined);
  });
});
