/**
 * Runs one job through the sidecar: submit, follow its progress, cancel it when the user cancels, and wait for
 * its end. Failed and cancelled jobs become errors with the sidecar's message.
 */

import * as vscode from 'vscode';
import type { JobPriority, JobSpec, LlmJobSpec } from '../sidecar/core/types';
import { CancelJob, SubmitJob, WaitJob, type JobDoneParams, type JobProgressParams } from '../sidecar/protocol';
import type { SidecarClient } from './sidecarClient';

export class JobCancelledError extends Error {
  constructor() {
    super('Cancelled.');
    this.name = 'JobCancelledError';
  }
}

export class JobFailedError extends Error {
  constructor(readonly done: JobDoneParams) {
    super(done.job.message || `The job ${done.job.status === 'failed' ? 'failed' : 'ended'} without saying why: see "VRAM Relay: Show Logs".`);
    this.name = 'JobFailedError';
  }
}

export interface RunJobOptions {
  priority?: JobPriority;
  token?: vscode.CancellationToken;
  onProgress?(progress: JobProgressParams): void;
  /** Called with the job id as soon as the sidecar has accepted the job. */
  onSubmitted?(jobId: string): void;
}

/** Submits a job and resolves with its end (status `done`); rejects when it fails or is cancelled. */
export async function runJob(sidecar: SidecarClient, spec: JobSpec, options: RunJobOptions = {}): Promise<JobDoneParams> {
  const { jobId } = await sidecar.request(SubmitJob, { spec, ...(options.priority ? { priority: options.priority } : {}) });
  options.onSubmitted?.(jobId);
  const watch = sidecar.watchJob(jobId, { onProgress: (p) => options.onProgress?.(p) });
  const cancel = options.token?.onCancellationRequested(() => {
    void sidecar.request(CancelJob, { jobId }).catch((error) => sidecar.log.warn(`Cancelling ${jobId}: ${String(error)}`));
  });
  try {
    if (options.token?.isCancellationRequested) await sidecar.request(CancelJob, { jobId });
    const done = await sidecar.request(WaitJob, { jobId });
    if (done.job.status === 'cancelled') throw new JobCancelledError();
    if (done.job.status !== 'done') throw new JobFailedError(done);
    return done;
  } finally {
    watch.dispose();
    cancel?.dispose();
  }
}

/** Runs an LLM job, streaming its text through `onText`; resolves with the whole answer. */
export async function runLlmJob(
  sidecar: SidecarClient,
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
