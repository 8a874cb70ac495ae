/**
 * Routes `vramRelay/jobProgress` and `vramRelay/jobDone` to whoever waits on a job. Progress can arrive before
 * the `submitJob` answer tells the caller its job id, so events for jobs nobody watches yet are kept (bounded)
 * and replayed when a watcher arrives. A restarted sidecar numbers its jobs from the start again, so `reset`
 * forgets everything the previous process said.
 */

import type { JobDoneParams, JobProgressParams } from '../sidecar/protocol';

export interface JobWatcher {
  onProgress?(progress: JobProgressParams): void;
  onDone?(done: JobDoneParams): void;
}

type JobEvent = { progress: JobProgressParams } | { done: JobDoneParams };

export class JobEventRouter {
  private readonly watchers = new Map<string, Set<JobWatcher>>();
  /** Unclaimed events per job, oldest job first (Map keeps insertion order). */
  private readonly pending = new Map<string, JobEvent[]>();

  constructor(
    private readonly maxPendingJobs = 32,
    private readonly maxEventsPerJob = 400,
  ) {}

  progress(progress: JobProgressParams): void {
    this.dispatch(progress.jobId, { progress });
  }

  done(done: JobDoneParams): void {
    this.dispatch(done.job.id, { done });
  }

  /** Starts watching a job, replaying what already arrived; returns the function that stops watching. */
  watch(jobId: string, watcher: JobWatcher): () => void {
    let set = this.watchers.get(jobId);
    if (!set) this.watchers.set(jobId, (set = new Set()));
    set.add(watcher);
    const replay = this.pending.get(jobId);
    this.pending.delete(jobId);
    for (const event of replay ?? []) deliver(watcher, event);
    return () => {
      set.delete(watcher);
      // After a reset the same id may belong to a job of the new sidecar: leave its watchers alone.
      if (set.size === 0 && this.watchers.get(jobId) === set) this.watchers.delete(jobId);
    };
  }

  /** The sidecar process is gone: its job ids will be reused by the next one, so drop watchers and kept events. */
  reset(): void {
    this.watchers.clear();
    this.pending.clear();
  }

  /** Jobs with unclaimed events, for tests and diagnostics. */
  pendingJobIds(): string[] {
    return [...this.pending.keys()];
  }

  private dispatch(jobId: string, event: JobEvent): void {
    const set = this.watchers.get(jobId);
    if (set && set.size > 0) {
      for (const watcher of [...set]) deliver(watcher, event);
      return;
    }
    let events = this.pending.get(jobId);
    if (!events) {
      if (this.pending.size >= this.maxPendingJobs) {
        const oldest = this.pending.keys().next().value;
        if (oldest !== undefined) this.pending.delete(oldest);
      }
      this.pending.set(jobId, (events = []));
    }
    events.push(event);
    // Keep the end of a long stream: the last stages and the final answer matter more than early steps.
    if (events.length > this.maxEventsPerJob) events.splice(0, events.length - this.maxEventsPerJob);
  }
}

function deliver(watcher: JobWatcher, event: JobEvent): void {
  if ('progress' in event) watcher.onProgress?.(event.progress);
  else watcher.onDone?.(event.done);
}
