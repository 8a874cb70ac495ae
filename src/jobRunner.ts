/**
 * Runs one job through the sidecar: submit, follow its progress, cancel it when the user cancels, and wait for
 * its end. Failed and cancelled jobs become errors with the sidecar's message.
 *
 * The job is recorded in the sidecar client's ledger for as long as it runs. If the sidecar process dies on the
 * way, the runner waits for the client to bring it back and learns what became of the job: it follows the
 * resubmitted job under its new id, returns the images that were already delivered, or throws with a message
 * that says why the job could not be resumed.
 */

import type * as vscode from 'vscode';
import type { JobPriority, JobSpec, LlmJobSpec } from '../sidecar/core/types';
import { CancelJob, WaitJob, type JobDoneParams, type JobProgressParams } from '../sidecar/protocol';
import type { LedgerEntry, LostJobOutcome } from './jobLedger';
import type { SidecarClient } from './sidecarClient';

/** What running a job needs from the sidecar client (tests give a stand-in). */
export type JobHost = Pick<
  SidecarClient,
  'request' | 'watchJob' | 'log' | 'trackJob' | 'submitTrackedJob' | 'jobCancelRequested' | 'untrackJob' | 'takeLostJobOutcome'
>;

export class JobCancelledError extends Error {
  constructor() {
    super('Cancelled.');
    this.name = 'JobCancelledError';
  }
}

export class JobFailedError extends Error {
  constructor(
    readonly done: JobDoneParams,
    /** The job had been resubmitted after a sidecar restart, and failed again. */
    readonly afterResubmission = false,
  ) {
    const reason = done.job.message || `The job ${done.job.status === 'failed' ? 'failed' : 'ended'} without saying why: see "VRAM Relay: Show Logs".`;
    super(afterResubmission ? `It was resubmitted after the sidecar restarted and failed again: ${reason}` : reason);
    this.name = 'JobFailedError';
  }
}

/** The sidecar stopped while the job was in flight, and the job could not be resumed; the message says why. */
export class JobInterruptedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'JobInterruptedError';
  }
}

/** What the progress callback hears when a job is resubmitted: the notification goes on with this line. */
export const RESUBMITTED_MESSAGE = 'the sidecar restarted; the job was resubmitted';

export interface RunJobOptions {
  priority?: JobPriority;
  token?: vscode.CancellationToken;
  onProgress?(progress: JobProgressParams): void;
  /** Called with the job id as soon as the sidecar has accepted the job (again after a resubmission). */
  onSubmitted?(jobId: string): void;
}

/** Submits a job and resolves with its end (status `done`); rejects when it fails, is cancelled or is lost. */
export async function runJob(sidecar: JobHost, spec: JobSpec, options: RunJobOptions = {}): Promise<JobDoneParams> {
  const entry = sidecar.trackJob(spec, options.priority);
  let jobId: string | undefined;
  let resubmitted = false;
  let watch: vscode.Disposable | undefined;
  const follow = (id: string) => {
    watch?.dispose();
    jobId = id;
    watch = sidecar.watchJob(id, { onProgress: (p) => options.onProgress?.(p) });
    options.onSubmitted?.(id);
  };
  const cancel = options.token?.onCancellationRequested(() => {
    sidecar.jobCancelRequested(entry.key);
    if (jobId) void sidecar.request(CancelJob, { jobId }).catch((error) => sidecar.log.warn(`Cancelling ${jobId}: ${String(error)}`));
  });
  try {
    for (;;) {
      let done: JobDoneParams;
      try {
        if (jobId === undefined) {
          const submitted = await sidecar.submitTrackedJob(entry.key, { spec, ...(options.priority ? { priority: options.priority } : {}) });
          follow(submitted.jobId);
        }
        const id: string = jobId!;
        if (options.token?.isCancellationRequested) await sidecar.request(CancelJob, { jobId: id });
        done = await sidecar.request(WaitJob, { jobId: id });
      } catch (error) {
        // Only a job the client saw lost with the sidecar process is recovered; any other error is the job's own.
        const lost = sidecar.takeLostJobOutcome(entry.key);
        if (!lost) throw error;
        // The old id may name another job of the next sidecar: a cancel now only marks the ledger.
        watch?.dispose();
        watch = undefined;
        jobId = undefined;
        const outcome = await lost;
        if (outcome.kind !== 'resubmitted') return endOfLostJob(entry, outcome);
        resubmitted = true;
        // Said before the new job's own events (kept since it was accepted) are replayed, so they come after it.
        options.onProgress?.({ jobId: outcome.jobId, stage: 'queued', message: RESUBMITTED_MESSAGE });
        follow(outcome.jobId);
        continue;
      }
      if (done.job.status === 'cancelled') throw new JobCancelledError();
      if (done.job.status !== 'done') throw new JobFailedError(done, resubmitted);
      return done;
    }
  } finally {
    watch?.dispose();
    cancel?.dispose();
    sidecar.untrackJob(entry.key);
  }
}

/** A lost job that is not run again: done from the images already delivered, or an error. */
function endOfLostJob(entry: LedgerEntry, outcome: Exclude<LostJobOutcome, { kind: 'resubmitted' }>): JobDoneParams {
  if (outcome.kind === 'cancelled') throw new JobCancelledError();
  if (outcome.kind === 'report') throw new JobInterruptedError(outcome.message);
  const now = Date.now();
  return {
    job: {
      id: entry.lastJobId ?? `lost-${entry.key}`,
      spec: entry.spec,
      priority: entry.priority ?? 'normal',
      status: 'done',
      submittedAt: entry.submittedAt,
      endedAt: now,
      attempt: entry.submissions,
      message: `Delivered before the sidecar stopped: ${outcome.outputs.join(', ')}`,
    },
    outputs: outcome.outputs,
  };
}

/** Runs an LLM job, streaming its text through `onText`; resolves with the whole answer. */
export async function runLlmJob(
  sidecar: JobHost,
  spec: LlmJobSpec,
  onText: (delta: string, soFar: string) => void,
  options: Omit<RunJobOptions, 'onProgress'> = {},
): Promise<string> {
  let soFar = '';
  const done = await runJob(sidecar, spec, {
    priority: 'interactive',
    ...options,
    onProgress: (p) => {
      if (p.textDelta) {
        soFar += p.textDelta;
        onText(p.textDelta, soFar);
      }
    },
  });
  return done.text ?? soFar;
}
