/**
 * The job runner across a sidecar crash, against a stand-in for the sidecar client built on the real ledger and
 * event router: the sidecar "process" loses its jobs and numbers new ones from job-1 again, as a real one does.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { ImageJobSpec, JobInfo, JobSpec, LlmJobSpec } from '../../../sidecar/core/types';
import { CancelJob, SubmitJob, WaitJob, type JobDoneParams, type JobProgressParams, type SubmitJobParams } from '../../../sidecar/protocol';
import { JobEventRouter, type JobWatcher } from '../../../src/jobEvents';
import { expectedOutputs, JobLedger, LLM_LOST_MESSAGE, LOST_TWICE_MESSAGE, recoverLostJobs } from '../../../src/jobLedger';
import { JobCancelledError, JobFailedError, JobInterruptedError, RESUBMITTED_MESSAGE, runJob, runLlmJob, type JobHost } from '../../../src/jobRunner';

const spec: ImageJobSpec = {
  kind: 'image',
  modelPath: '/m/sd15.safetensors',
  prompt: 'a lighthouse at dusk',
  width: 512,
  height: 512,
  batch: 1,
  steps: 20,
  seed: 1234,
  outputPath: '/w/assets/generated/a-lighthouse-at-dusk.png',
};

class FakeSidecar {
  readonly ledger = new JobLedger();
  readonly router = new JobEventRouter();
  readonly submissions: { jobId: string; params: SubmitJobParams }[] = [];
  readonly cancels: string[] = [];
  /** Files taken as delivered by the sidecar before it died. */
  readonly delivered = new Set<string>();
  private nextId = 1;
  private readonly jobs = new Map<string, JobSpec>();
  private readonly waits = new Map<string, { resolve(done: JobDoneParams): void; reject(error: Error): void }>();

  readonly host = {
    request: (method: string, params: unknown) => this.request(method, params),
    watchJob: (jobId: string, watcher: JobWatcher) => ({ dispose: this.router.watch(jobId, watcher) }),
    log: { warn: () => undefined, info: () => undefined },
    trackJob: (s: JobSpec, priority?: SubmitJobParams['priority']) => this.ledger.submitted(s, priority, 0),
    submitTrackedJob: async (key: number, params: SubmitJobParams) => {
      this.ledger.sent(key);
      const result = (await this.request(SubmitJob, params)) as { jobId: string };
      this.ledger.accepted(key, result.jobId);
      return result;
    },
    jobCancelRequested: (key: number) => this.ledger.cancelRequested(key),
    untrackJob: (key: number) => this.ledger.finished(key),
    takeLostJobOutcome: (key: number) => this.ledger.takeLostOutcome(key),
  } as unknown as JobHost;

  private async request(method: string, params: unknown): Promise<unknown> {
    await Promise.resolve();
    if (method === SubmitJob) {
      const jobId = `job-${this.nextId++}`;
      this.jobs.set(jobId, (params as SubmitJobParams).spec);
      this.submissions.push({ jobId, params: params as SubmitJobParams });
      return { jobId };
    }
    if (method === WaitJob) {
      const { jobId } = params as { jobId: string };
      return new Promise((resolve, reject) => this.waits.set(jobId, { resolve, reject }));
    }
    if (method === CancelJob) {
      const { jobId } = params as { jobId: string };
      this.cancels.push(jobId);
      this.end(jobId, 'cancelled');
      return { cancelled: true };
    }
    throw new Error(`unexpected ${method}`);
  }

  /** Resolves once the runner waits on `jobId` (bounded, so a broken runner fails the test instead of hanging). */
  async waiting(jobId: string): Promise<void> {
    for (let i = 0; i < 1000 && !this.waits.has(jobId); i++) await new Promise((r) => setImmediate(r));
    assert.ok(this.waits.has(jobId), `nobody waits on ${jobId}`);
  }

  progress(progress: JobProgressParams): void {
    this.ledger.progress(progress);
    this.router.progress(progress);
  }

  end(jobId: string, status: JobInfo['status'], message?: string): void {
    const job: JobInfo = { id: jobId, spec: this.jobs.get(jobId)!, priority: 'normal', status, submittedAt: 0, attempt: 1, message };
    const done: JobDoneParams = { job, outputs: status === 'done' && job.spec.kind === 'image' ? [job.spec.outputPath] : undefined, text: job.spec.kind === 'llm' ? 'answer' : undefined };
    this.router.done(done);
    this.waits.get(jobId)?.resolve(done);
    this.waits.delete(jobId);
  }

  /** The process dies: its jobs are gone, pending requests fail, the next process numbers from job-1. */
  crash(): void {
    this.ledger.connectionLost();
    this.router.reset();
    this.nextId = 1;
    this.jobs.clear();
    for (const wait of this.waits.values()) wait.reject(new Error('Pending response rejected since connection got disposed'));
    this.waits.clear();
  }

  /** The new process is up: the lost jobs are recovered as the client does it. */
  restart(): Promise<string | undefined> {
    return recoverLostJobs(this.ledger, {
      outputsComplete: async (s) => expectedOutputs(s).every((f) => this.delivered.has(f)),
      resubmit: async (entry) => ((await this.request(SubmitJob, { spec: entry.spec, priority: entry.priority })) as { jobId: string }).jobId,
      log: () => undefined,
    });
  }
}

function settleWithin<T>(promise: Promise<T>, ms = 2000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`not settled within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

describe('runJob across a sidecar crash', () => {
  it('resubmits a lost image job once with the same request and resolves with the new job', async () => {
    const sidecar = new FakeSidecar();
    const seen: string[] = [];
    const run = runJob(sidecar.host, spec, { priority: 'normal', onProgress: (p) => seen.push(`${p.jobId} ${p.stage} ${p.step ?? ''}${p.message ?? ''}`.trim()) });
    await sidecar.waiting('job-1');
    sidecar.progress({ jobId: 'job-1', stage: 'diffusion', step: 5, totalSteps: 20 });
    sidecar.crash();
    assert.match((await sidecar.restart()) ?? '', /1 job was resubmitted/);
    // The new process calls the resubmitted job job-1 again: its events must reach the runner.
    sidecar.progress({ jobId: 'job-1', stage: 'diffusion', step: 2, totalSteps: 20 });
    await sidecar.waiting('job-1');
    sidecar.end('job-1', 'done');
    const done = await settleWithin(run);
    assert.equal(done.job.status, 'done');
    assert.deepEqual(done.outputs, [spec.outputPath]);
    assert.equal(sidecar.submissions.length, 2);
    assert.deepEqual(sidecar.submissions[1].params, { spec, priority: 'normal' }, 'the resubmission is not the very same request');
    assert.deepEqual(seen, ['job-1 diffusion 5', `job-1 queued ${RESUBMITTED_MESSAGE}`, 'job-1 diffusion 2']);
    assert.deepEqual(sidecar.ledger.open(), [], 'the ledger kept a finished job');
  });

  it('takes a job whose image was delivered before the crash for done, without running it again', async () => {
    const sidecar = new FakeSidecar();
    const run = runJob(sidecar.host, spec);
    await sidecar.waiting('job-1');
    sidecar.delivered.add(spec.outputPath);
    sidecar.crash();
    assert.match((await sidecar.restart()) ?? '', /1 job had already finished/);
    const done = await settleWithin(run);
    assert.equal(done.job.status, 'done');
    assert.equal(done.job.id, 'job-1');
    assert.deepEqual(done.outputs, [spec.outputPath]);
    assert.equal(sidecar.submissions.length, 1, 'a delivered image was generated twice');
  });

  it('says that a resubmitted job failed again, with the sidecar reason', async () => {
    const sidecar = new FakeSidecar();
    const run = runJob(sidecar.host, spec);
    await sidecar.waiting('job-1');
    sidecar.crash();
    await sidecar.restart();
    await sidecar.waiting('job-1');
    sidecar.end('job-1', 'failed', 'sd.cpp ran out of memory during the VAE decode.');
    await assert.rejects(settleWithin(run), (error: unknown) => {
      assert.ok(error instanceof JobFailedError);
      assert.equal(error.afterResubmission, true);
      assert.match(error.message, /resubmitted after the sidecar restarted and failed again: sd\.cpp ran out of memory/);
      return true;
    });
  });

  it('does not resubmit a job twice when the sidecar dies again', async () => {
    const sidecar = new FakeSidecar();
    const run = runJob(sidecar.host, spec);
    await sidecar.waiting('job-1');
    sidecar.crash();
    await sidecar.restart();
    await sidecar.waiting('job-1');
    sidecar.crash();
    assert.match((await sidecar.restart()) ?? '', /could not be resumed/);
    await assert.rejects(settleWithin(run), (error: unknown) => error instanceof JobInterruptedError && error.message === LOST_TWICE_MESSAGE);
    assert.equal(sidecar.submissions.length, 2);
  });

  it('reports an LLM request lost in a crash instead of repeating it', async () => {
    const sidecar = new FakeSidecar();
    const llm: LlmJobSpec = { kind: 'llm', task: 'enhancePrompt', contextSize: 4096, messages: [{ role: 'user', content: 'a fox' }] };
    const streamed: string[] = [];
    const run = runLlmJob(sidecar.host, llm, (delta) => streamed.push(delta));
    await sidecar.waiting('job-1');
    sidecar.progress({ jobId: 'job-1', stage: 'generating', textDelta: 'A red' });
    sidecar.crash();
    await sidecar.restart();
    await assert.rejects(settleWithin(run), (error: unknown) => error instanceof JobInterruptedError && error.message === LLM_LOST_MESSAGE);
    assert.deepEqual(streamed, ['A red']);
    assert.equal(sidecar.submissions.length, 1, 'a stale LLM request was sent again');
  });

  it('does not resubmit a job cancelled while the sidecar was down', async () => {
    const sidecar = new FakeSidecar();
    let cancelled = false;
    const listeners: (() => void)[] = [];
    const token = {
      get isCancellationRequested() {
        return cancelled;
      },
      onCancellationRequested: (listener: () => void) => {
        listeners.push(listener);
        return { dispose: () => undefined };
      },
    };
    const run = runJob(sidecar.host, spec, { token: token as never });
    await sidecar.waiting('job-1');
    sidecar.crash();
    await new Promise((r) => setImmediate(r));
    cancelled = true;
    for (const listener of listeners) listener();
    await sidecar.restart();
    await assert.rejects(settleWithin(run), JobCancelledError);
    assert.equal(sidecar.submissions.length, 1);
    assert.deepEqual(sidecar.cancels, [], 'a cancel went to a job id of the dead process');
  });

  it('passes an error that is not a crash through unchanged', async () => {
    const sidecar = new FakeSidecar();
    const failing = { ...sidecar.host, submitTrackedJob: async () => Promise.reject(new Error('The model file /m/x does not exist')) } as JobHost;
    await assert.rejects(settleWithin(runJob(failing, spec)), /The model file \/m\/x does not exist/);
    assert.deepEqual(sidecar.ledger.open(), []);
  });
});
