/**
 * The extension's own record of the jobs it submitted and has not seen end. The sidecar's memory dies with its
 * process, so after a crash this ledger is the only place that knows what was in flight: each lost job is
 * resubmitted once with the very same request (same seed, same output path), reported done when its images
 * were already delivered, or reported to its caller when repeating it makes no sense. Free of `vscode` and of
 * the transport (files and requests come in as functions), so every rule is unit-tested; the sidecar client
 * drives it and the job runner waits on it.
 */

import * as path from 'node:path';
import type { ImageJobSpec, JobPriority, JobSpec } from '../sidecar/core/types';
import type { JobProgressParams } from '../sidecar/protocol';
import { numberedOutputStem } from '../sidecar/core/outputNames';

/**
 * `submitted`: recorded, its request not yet sent (it waits for a sidecar that is starting). `sent`: the request
 * went to the running sidecar, no id yet. `accepted`: the sidecar answered with an id. `running`: progress has
 * arrived. `lost`: the sidecar went away after the request was sent and before the job ended. Ended jobs leave
 * the ledger.
 */
export type LedgerState = 'submitted' | 'sent' | 'accepted' | 'running' | 'lost';

/** What a lost job gets: run again, or told to its caller. */
export type LossPolicy = 'resubmit' | 'report';

export interface LedgerEntry {
  readonly key: number;
  readonly spec: JobSpec;
  readonly priority?: JobPriority;
  readonly onLoss: LossPolicy;
  readonly submittedAt: number;
  state: LedgerState;
  /** The id the current sidecar knows the job by; cleared when that sidecar is gone (ids restart with it). */
  jobId?: string;
  /** The id under which the job was last known, kept for messages and the parameters file. */
  lastJobId?: string;
  /** How many times the request was sent: 1, or 2 after a resubmission. */
  submissions: number;
  /** The user cancelled: a lost job that was cancelled is never resubmitted. */
  cancelled: boolean;
  lastProgress?: JobProgressParams;
}

/** What the runner of a lost job learns once the sidecar is back (or is not). */
export type LostJobOutcome =
  | { kind: 'resubmitted'; jobId: string }
  | { kind: 'done'; outputs: string[] }
  | { kind: 'cancelled' }
  | { kind: 'report'; message: string };

/** What happens to a lost job once the sidecar is back. */
export type Recovery =
  | { kind: 'resubmit' }
  /** Its images were already delivered under their final names: nothing to run, nothing to write twice. */
  | { kind: 'done'; outputs: string[] }
  | { kind: 'cancelled' }
  | { kind: 'report'; message: string };

/** How many times a job may be sent in all: once, plus one resubmission after a crash. */
export const MAX_SUBMISSIONS = 2;

/**
 * LLM requests (completions, prompt rewrites, questions, tags) are interactive: they are stale by the time a new
 * sidecar has loaded the model again, and part of their text was already streamed to the user, so they are
 * reported, never repeated. Image jobs are repeated.
 */
export function lossPolicyFor(spec: JobSpec): LossPolicy {
  return spec.kind === 'image' ? 'resubmit' : 'report';
}

/**
 * The final files the sidecar delivers for an image job: the output path itself for one image, `stem_1.png` ...
 * `stem_N.png` for a batch. Video jobs return nothing (their frame count is the sidecar's business), so they are
 * never taken for done.
 */
export function expectedOutputs(spec: ImageJobSpec): string[] {
  if (!spec.outputPath || (spec.frames ?? 1) > 1) return [];
  if (spec.batch <= 1) return [spec.outputPath];
  const ext = path.extname(spec.outputPath) || '.png';
  const stem = path.join(path.dirname(spec.outputPath), path.basename(spec.outputPath, path.extname(spec.outputPath)));
  return Array.from({ length: spec.batch }, (_, i) => `${numberedOutputStem(stem, i, spec.batch)}${ext}`);
}

export const LLM_LOST_MESSAGE =
  'The sidecar stopped while the local LLM was answering. It was restarted, but the request was not repeated because its answer would come too late: run it again.';
export const LOST_TWICE_MESSAGE =
  'The sidecar stopped again while this job ran after it had been resubmitted once, so it was not resubmitted a second time. See "VRAM Relay: Show Logs", then start the job again.';

/**
 * The rule for one lost job. `outputsComplete` says whether every final file of an image job is already there:
 * the sidecar only renames checked, complete images to their final names, so their presence means done.
 */
export function decideRecovery(entry: LedgerEntry, outputsComplete: boolean): Recovery {
  if (entry.cancelled) return { kind: 'cancelled' };
  if (entry.spec.kind === 'image' && outputsComplete) return { kind: 'done', outputs: expectedOutputs(entry.spec) };
  if (entry.onLoss === 'report') return { kind: 'report', message: LLM_LOST_MESSAGE };
  if (entry.submissions >= MAX_SUBMISSIONS) return { kind: 'report', message: LOST_TWICE_MESSAGE };
  return { kind: 'resubmit' };
}

/** The message for jobs lost when the sidecar is not coming back (restart budget spent, start failed, shutdown). */
export function notRestartedMessage(reason: string): string {
  return `The sidecar stopped and was not restarted (${reason}), so the job could not finish. Run "VRAM Relay: Restart Sidecar", then start it again.`;
}

export interface RecoveryCounts {
  resubmitted: number;
  done: number;
  reported: number;
  cancelled: number;
}

export function countRecoveries(recoveries: readonly Recovery[]): RecoveryCounts {
  const counts: RecoveryCounts = { resubmitted: 0, done: 0, reported: 0, cancelled: 0 };
  for (const r of recoveries) {
    if (r.kind === 'resubmit') counts.resubmitted++;
    else if (r.kind === 'done') counts.done++;
    else if (r.kind === 'report') counts.reported++;
    else counts.cancelled++;
  }
  return counts;
}

function jobs(n: number): string {
  return `${n} job${n === 1 ? '' : 's'}`;
}

/** One line for the user after a restart, or undefined when no job was in flight. */
export function recoverySummary(counts: RecoveryCounts): string | undefined {
  const parts: string[] = [];
  if (counts.resubmitted > 0) parts.push(`${jobs(counts.resubmitted)} ${counts.resubmitted === 1 ? 'was' : 'were'} resubmitted`);
  if (counts.done > 0) parts.push(`${jobs(counts.done)} had already finished`);
  if (counts.reported > 0) parts.push(`${jobs(counts.reported)} could not be resumed (each says why)`);
  if (parts.length === 0) return undefined;
  const last = parts.pop()!;
  return `the sidecar restarted; ${parts.length > 0 ? `${parts.join(', ')} and ${last}` : last}.`;
}

interface Waiter {
  promise: Promise<LostJobOutcome>;
  resolve(outcome: LostJobOutcome): void;
  settled: boolean;
  taken: boolean;
}

export class JobLedger {
  private readonly entries = new Map<number, LedgerEntry>();
  /** For each lost job, what its runner will be told once recovery has decided. */
  private readonly waiters = new Map<number, Waiter>();
  private nextKey = 1;

  /** Records a request about to be sent; the entry stays until `finished`. */
  submitted(spec: JobSpec, priority: JobPriority | undefined, now: number): LedgerEntry {
    const entry: LedgerEntry = {
      key: this.nextKey++,
      spec,
      priority,
      onLoss: lossPolicyFor(spec),
      submittedAt: now,
      state: 'submitted',
      submissions: 1,
      cancelled: false,
    };
    this.entries.set(entry.key, entry);
    return entry;
  }

  /** The request is going out to the running sidecar now. */
  sent(key: number): void {
    const entry = this.entries.get(key);
    if (entry && entry.state === 'submitted') entry.state = 'sent';
  }

  /** The sidecar accepted the request under `jobId`. */
  accepted(key: number, jobId: string): void {
    const entry = this.entries.get(key);
    if (!entry || entry.state === 'lost') return;
    entry.jobId = jobId;
    entry.lastJobId = jobId;
    entry.state = 'accepted';
  }

  /** Progress for a job of the current sidecar. */
  progress(progress: JobProgressParams): void {
    const entry = this.byJobId(progress.jobId);
    if (!entry) return;
    entry.state = 'running';
    entry.lastProgress = progress;
  }

  cancelRequested(key: number): void {
    const entry = this.entries.get(key);
    if (entry) entry.cancelled = true;
  }

  /** The job ended one way or another (done, failed, cancelled, reported): it leaves the ledger. */
  finished(key: number): void {
    this.entries.delete(key);
    this.waiters.delete(key);
  }

  /**
   * The sidecar went away: every job it had is lost, and the ids it gave mean nothing any more (a new process
   * numbers its jobs from the start again). A request not yet sent is not lost: it goes to the next process.
   * Returns the jobs newly lost.
   */
  connectionLost(): LedgerEntry[] {
    const lost: LedgerEntry[] = [];
    for (const entry of this.entries.values()) {
      if (entry.state === 'lost' || entry.state === 'submitted') continue;
      entry.state = 'lost';
      entry.jobId = undefined;
      lost.push(entry);
      // A waiter from an earlier loss that was settled (the job was resubmitted) gives way to a fresh one.
      if (this.waiters.get(entry.key)?.settled === false) continue;
      let resolve!: (outcome: LostJobOutcome) => void;
      const promise = new Promise<LostJobOutcome>((r) => (resolve = r));
      this.waiters.set(entry.key, { promise, resolve, settled: false, taken: false });
    }
    return lost;
  }

  /**
   * For the runner whose request just failed: when its job was lost with the sidecar, a promise of what became
   * of it; undefined when it was not lost, so that the error is the job's own. Each loss is taken once.
   */
  takeLostOutcome(key: number): Promise<LostJobOutcome> | undefined {
    const waiter = this.waiters.get(key);
    if (!waiter || waiter.taken) return undefined;
    waiter.taken = true;
    return waiter.promise;
  }

  /** Tells the runner of a lost job what became of it. */
  settle(key: number, outcome: LostJobOutcome): void {
    const waiter = this.waiters.get(key);
    if (!waiter || waiter.settled) return;
    waiter.settled = true;
    waiter.resolve(outcome);
    if (outcome.kind === 'resubmitted') {
      const entry = this.entries.get(key);
      if (entry) {
        entry.submissions++;
        entry.state = 'accepted';
        entry.jobId = outcome.jobId;
        entry.lastJobId = outcome.jobId;
        entry.lastProgress = undefined;
      }
    } else {
      // Nothing more will happen to it: a later restart must not count it again. The waiter stays for its
      // runner until `finished`.
      this.entries.delete(key);
    }
  }

  /** The sidecar is not coming back by itself: every lost job is reported to its runner. Returns how many. */
  abandonLost(reason: string): number {
    const lost = this.lost();
    for (const entry of lost) this.settle(entry.key, { kind: 'report', message: notRestartedMessage(reason) });
    return lost.length;
  }

  get(key: number): LedgerEntry | undefined {
    return this.entries.get(key);
  }

  /** Lost jobs, oldest submission first (the order they are resubmitted in). */
  lost(): LedgerEntry[] {
    return [...this.entries.values()].filter((e) => e.state === 'lost');
  }

  /** Jobs not yet seen to end, oldest first. */
  open(): LedgerEntry[] {
    return [...this.entries.values()];
  }

  private byJobId(jobId: string): LedgerEntry | undefined {
    for (const entry of this.entries.values()) if (entry.jobId === jobId) return entry;
    return undefined;
  }
}

/** What recovery needs from the world: the files on disk, the new sidecar, the log. */
export interface RecoveryPorts {
  /** True when every final file of the image job is already there. */
  outputsComplete(spec: ImageJobSpec): Promise<boolean>;
  /** Sends the very same request to the new sidecar; resolves with its job id. */
  resubmit(entry: LedgerEntry): Promise<string>;
  log(level: 'info' | 'warn', message: string): void;
}

/**
 * Decides and carries out what becomes of every lost job, oldest first, once the new sidecar has its settings;
 * returns the line to show the user (undefined when no job was in flight).
 */
export async function recoverLostJobs(ledger: JobLedger, ports: RecoveryPorts): Promise<string | undefined> {
  const recoveries: Recovery[] = [];
  for (const entry of ledger.lost()) {
    const complete = entry.spec.kind === 'image' ? await ports.outputsComplete(entry.spec).catch(() => false) : false;
    let recovery = decideRecovery(entry, complete);
    const was = entry.lastJobId ? `job ${entry.lastJobId}` : 'a job not yet accepted';
    if (recovery.kind === 'resubmit') {
      try {
        const jobId = await ports.resubmit(entry);
        ports.log('info', `Resubmitted ${was} as ${jobId} after the restart (same request, same seed and output path).`);
        ledger.settle(entry.key, { kind: 'resubmitted', jobId });
      } catch (error) {
        recovery = {
          kind: 'report',
          message: `The sidecar restarted but did not take the job again (${error instanceof Error ? error.message : String(error)}): start it again.`,
        };
      }
    }
    if (recovery.kind === 'done') ports.log('info', `${was} had already delivered ${recovery.outputs.join(', ')}; it is not run again.`);
    if (recovery.kind === 'report') ports.log('warn', `${was} was lost with the sidecar: ${recovery.message}`);
    if (recovery.kind !== 'resubmit') ledger.settle(entry.key, recovery);
    recoveries.push(recovery);
  }
  return recoverySummary(countRecoveries(recoveries));
}
