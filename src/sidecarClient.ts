/**
 * The link to the sidecar: a `vscode-languageclient` over IPC to `dist/sidecar.js`, started on first need,
 * restarted after a crash (within a budget) and on demand, with typed requests and events for the protocol's
 * notifications. Its log goes to a LogOutputChannel that only opens by itself when start-up fails.
 *
 * A crash takes every job of the sidecar with it. The job ledger remembers what the extension had in flight;
 * when the sidecar is back each lost job is resubmitted once, found already done, or reported to its caller
 * (see jobLedger.ts), and the user is told in one message.
 */

import { promises as fs } from 'node:fs';
import * as vscode from 'vscode';
import {
  CloseAction,
  ErrorAction,
  LanguageClient,
  RevealOutputChannelOn,
  State,
  TransportKind,
  type LanguageClientOptions,
  type ServerOptions,
} from 'vscode-languageclient/node';
import type { SidecarRequestMap, SidecarRequestMethod } from '../sidecar/api';
import type { DecisionEvent } from '../sidecar/core/types';
import {
  Configure,
  DecisionNotification,
  GetSnapshot,
  JobDoneNotification,
  JobProgressNotification,
  PROTOCOL_VERSION,
  SnapshotNotification,
  SubmitJob,
  Version,
  type ConfigureResult,
  type JobDoneParams,
  type JobProgressParams,
  type SidecarSettings,
  type SidecarSnapshot,
  type SubmitJobParams,
  type SubmitJobResult,
  type VersionResult,
} from '../sidecar/protocol';
import { JobEventRouter, type JobWatcher } from './jobEvents';
import { expectedOutputs, JobLedger, notRestartedMessage, recoverLostJobs, type LedgerEntry, type LostJobOutcome } from './jobLedger';
import { RestartBudget } from './restartPolicy';
import type { ConnectionState } from './statusText';

/** How long a runner waits for the sidecar to come back before it reports its job. */
const RECOVERY_TIMEOUT_MS = 120_000;
/** Said while the exit code of the process is not known yet. */
const CONNECTION_CLOSED = 'its connection closed';

/** Every request the extension sends: method -> [params, result], as the sidecar's API declares them. */
export type SidecarRequests = SidecarRequestMap;
export type SidecarMethod = SidecarRequestMethod;

/** Port for `--inspect` when the extension host runs in debug mode. */
const INSPECT_PORT = 6010;

export class SidecarClient implements vscode.Disposable {
  readonly log: vscode.LogOutputChannel;

  private client: LanguageClient | undefined;
  private starting: Promise<LanguageClient> | undefined;
  private connection: ConnectionState = 'stopped';
  private failure: string | undefined;
  private disposed = false;
  private readonly budget = new RestartBudget();
  private readonly jobs = new JobEventRouter();
  private latest: SidecarSnapshot | undefined;
  /** Jobs submitted and not yet seen to end; survives the sidecar process. */
  private readonly ledger = new JobLedger();
  /** How the current process of each client ended, once it has (a restart starts a new process). */
  private readonly exits = new WeakMap<LanguageClient, string>();
  private restarted: { at: number; reason: string } | undefined;

  private readonly connectionEmitter = new vscode.EventEmitter<ConnectionState>();
  private readonly snapshotEmitter = new vscode.EventEmitter<SidecarSnapshot>();
  private readonly decisionEmitter = new vscode.EventEmitter<DecisionEvent>();
  private readonly progressEmitter = new vscode.EventEmitter<JobProgressParams>();
  private readonly doneEmitter = new vscode.EventEmitter<JobDoneParams>();

  readonly onDidChangeConnection = this.connectionEmitter.event;
  readonly onSnapshot = this.snapshotEmitter.event;
  readonly onDecision = this.decisionEmitter.event;
  readonly onJobProgress = this.progressEmitter.event;
  readonly onJobDone = this.doneEmitter.event;

  constructor(
    private readonly sidecarModule: string,
    private readonly settings: () => SidecarSettings,
  ) {
    this.log = vscode.window.createOutputChannel('VRAM Relay', { log: true });
  }

  get state(): ConnectionState {
    return this.connection;
  }

  /** Why the sidecar is down (start-up failed, or why it stopped), for the status bar and the panel. */
  get lastFailure(): string | undefined {
    return this.failure;
  }

  /** While restarting after a crash: which automatic restart this is, of how many allowed. */
  get restartAttempt(): { attempt: number; max: number } | undefined {
    return this.connection === 'restarting' ? { attempt: this.budget.used, max: this.budget.maxRestarts } : undefined;
  }

  /** When the sidecar last came back from a crash, and why it had stopped. */
  get lastRestart(): { at: number; reason: string } | undefined {
    return this.restarted;
  }

  /** Jobs lost with the sidecar process that wait for it to come back. */
  get jobsAwaitingRecovery(): number {
    return this.ledger.lost().length;
  }

  /** The latest snapshot the sidecar pushed or answered, if any. */
  get snapshot(): SidecarSnapshot | undefined {
    return this.latest;
  }

  /** Starts the sidecar if it is not running; concurrent callers share one start. */
  ensureStarted(): Promise<LanguageClient> {
    if (this.disposed) return Promise.reject(new Error('VRAM Relay is shutting down.'));
    if (this.client && this.client.state === State.Running && this.connection === 'running') return Promise.resolve(this.client);
    if (this.starting) return this.starting;
    // After a failed start or a crash loop, only Restart Sidecar tries again: a keystroke must not respawn it.
    if (this.connection === 'failed') return Promise.reject(new SidecarUnavailableError(this.failure));
    const client = this.client;
    // A client that is (re)starting is waited for, also between languageclient's "running" and the end of our
    // own set-up (settings, resubmitted jobs): starting another one then would kill the process just started.
    const comingBack = client && (this.connection === 'starting' || this.connection === 'restarting');
    const started = comingBack ? this.waitUntilRunning(client) : this.start();
    this.starting = started.finally(() => {
      this.starting = undefined;
    });
    return this.starting;
  }

  /** Stops whatever is there (even a client whose start failed) and starts a fresh one. */
  async restart(): Promise<void> {
    this.budget.reset();
    const pending = this.starting;
    if (pending) await pending.catch(() => undefined);
    await this.stopClient();
    this.log.info('Restarting the sidecar.');
    await this.ensureStarted();
  }

  /** Waits for an automatic restart that languageclient is doing to finish. */
  private waitUntilRunning(client: LanguageClient, timeoutMs = 30_000): Promise<LanguageClient> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        listener.dispose();
        reject(new SidecarUnavailableError('the sidecar did not come back within 30 s'));
      }, timeoutMs);
      const listener = this.onDidChangeConnection((state) => {
        if (state === 'starting' || state === 'restarting') return;
        clearTimeout(timer);
        listener.dispose();
        if (state === 'running' && this.client === client) resolve(client);
        else reject(new SidecarUnavailableError(this.failure));
      });
    });
  }

  async request<M extends SidecarMethod>(method: M, params: SidecarRequests[M][0], token?: vscode.CancellationToken): Promise<SidecarRequests[M][1]> {
    const client = await this.runningClient();
    // vscode-jsonrpc treats every extra argument as a parameter (an undefined token would turn the params into a
    // positional array): pass the params object alone, and the token only when there is one.
    const send = client.sendRequest.bind(client) as (method: string, ...args: unknown[]) => Promise<unknown>;
    const args: unknown[] = params === undefined ? [] : [params];
    if (token) args.push(token);
    return send(method, ...args) as Promise<SidecarRequests[M][1]>;
  }

  /**
   * The running client, checked right before a request goes out: languageclient would queue a request made
   * during an automatic restart for the next process, where a job id of the dead one may name another job.
   */
  private async runningClient(): Promise<LanguageClient> {
    for (let tries = 0; ; tries++) {
      const client = await this.ensureStarted();
      if (this.client === client && this.connection === 'running') return client;
      if (tries >= 2) throw new SidecarUnavailableError(this.failure ?? 'it stopped while a request was being sent');
    }
  }

  /**
   * Submits a job recorded with `trackJob`. The ledger learns the moment the request leaves (a crash after that
   * loses the job, one before it does not) and the id it was accepted under.
   */
  async submitTrackedJob(key: number, params: SubmitJobParams): Promise<SubmitJobResult> {
    const client = await this.runningClient();
    this.ledger.sent(key);
    const result = (await client.sendRequest(SubmitJob, params)) as SubmitJobResult;
    this.ledger.accepted(key, result.jobId);
    return result;
  }

  /** Watches one job's progress and end; events that came before the watch are replayed. */
  watchJob(jobId: string, watcher: JobWatcher): vscode.Disposable {
    return new vscode.Disposable(this.jobs.watch(jobId, watcher));
  }

  /** Records a job about to be submitted, so that a crash does not lose it; `untrackJob` when it has ended. */
  trackJob(spec: SubmitJobParams['spec'], priority?: SubmitJobParams['priority']): LedgerEntry {
    return this.ledger.submitted(spec, priority, Date.now());
  }

  /** The user cancelled: if the job is lost now, it is not resubmitted. */
  jobCancelRequested(key: number): void {
    this.ledger.cancelRequested(key);
  }

  untrackJob(key: number): void {
    this.ledger.finished(key);
  }

  /**
   * When the job was lost with the sidecar process: a promise of what became of it once the sidecar is back (or
   * is not); undefined when the job was not lost, so that the error that reached the runner is a real one.
   * Each loss is taken once.
   */
  takeLostJobOutcome(key: number): Promise<LostJobOutcome> | undefined {
    const outcome = this.ledger.takeLostOutcome(key);
    if (!outcome) return undefined;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<LostJobOutcome>((resolve) => {
      timer = setTimeout(
        () => resolve({ kind: 'report', message: notRestartedMessage(`it did not come back within ${RECOVERY_TIMEOUT_MS / 1000} s`) }),
        RECOVERY_TIMEOUT_MS,
      );
    });
    return Promise.race([outcome, timeout]).finally(() => clearTimeout(timer));
  }

  /** Sends the current settings; answers with the settings the sidecar says need a restart. */
  async pushSettings(): Promise<ConfigureResult | undefined> {
    if (!this.client || this.client.state !== State.Running) return undefined;
    return this.configure(this.client);
  }

  /** Fetches a fresh snapshot (and remembers it). */
  async refreshSnapshot(): Promise<SidecarSnapshot> {
    const snapshot = await this.request(GetSnapshot, undefined);
    this.acceptSnapshot(snapshot);
    return snapshot;
  }

  async dispose(): Promise<void> {
    this.disposed = true;
    await this.stopClient();
    this.abandonLostJobs('VRAM Relay is shutting down');
    this.connectionEmitter.dispose();
    this.snapshotEmitter.dispose();
    this.decisionEmitter.dispose();
    this.progressEmitter.dispose();
    this.doneEmitter.dispose();
    this.log.dispose();
  }

  private setConnection(state: ConnectionState, failure?: string): void {
    const changed = state !== this.connection || failure !== this.failure;
    this.failure = failure;
    this.connection = state;
    if (changed) this.connectionEmitter.fire(state);
  }

  /**
   * The sidecar process is gone (crashed or stopped): its snapshot and job ids mean nothing any more, and every
   * job in flight is lost until recovery decides what becomes of it.
   */
  private connectionGone(): void {
    this.latest = undefined;
    this.jobs.reset();
    this.ledger.connectionLost();
  }

  /** The sidecar is not coming back by itself: every lost job is reported to its runner. */
  private abandonLostJobs(reason: string): void {
    const count = this.ledger.abandonLost(reason);
    if (count > 0) this.log.warn(`${count} job${count === 1 ? '' : 's'} lost with the sidecar will not be resumed: ${reason}.`);
  }

  /**
   * Runs once the new sidecar has its settings, before anything else is sent: each lost job is resubmitted with
   * the very same request, found done, or reported; then one message tells the user.
   */
  private async recoverLostJobs(client: LanguageClient): Promise<void> {
    const summary = await recoverLostJobs(this.ledger, {
      outputsComplete: (spec) => allExist(expectedOutputs(spec)),
      resubmit: async (entry) => {
        const params: SubmitJobParams = { spec: entry.spec, ...(entry.priority ? { priority: entry.priority } : {}) };
        return ((await client.sendRequest(SubmitJob, params)) as SubmitJobResult).jobId;
      },
      log: (level, message) => (level === 'info' ? this.log.info(message) : this.log.warn(message)),
    });
    if (!summary) return;
    this.log.info(summary);
    void vscode.window.showWarningMessage(`VRAM Relay: ${summary}`, 'Show Logs').then((choice) => {
      if (choice) this.log.show();
    });
  }

  /** Automatic restarts are used up (or the restart itself failed): say so, report lost jobs, offer a restart. */
  private giveUp(message: string): void {
    this.log.error(message);
    this.setConnection('failed', message);
    this.abandonLostJobs(message);
    void vscode.window.showErrorMessage(`VRAM Relay: ${message}.`, 'Restart Sidecar', 'Show Logs').then((choice) => {
      if (choice === 'Restart Sidecar') void vscode.commands.executeCommand('vramRelay.restartSidecar');
      if (choice === 'Show Logs') this.log.show();
    });
  }

  /** Remembers how the current sidecar process ends, to say why in the status bar. */
  private watchExit(client: LanguageClient): void {
    const proc = client.serverProcess;
    this.exits.delete(client);
    if (!proc) return;
    this.log.info(`The sidecar runs as process ${proc.pid ?? '?'}.`);
    proc.once('exit', (code, signal) => {
      const how = signal ? `killed by ${signal}` : `exited with code ${code ?? '?'}`;
      // A late exit of an older process says nothing about the current one.
      if (client.serverProcess !== undefined && client.serverProcess !== proc) return;
      this.exits.set(client, how);
      // The exit can be reported after the connection closed: put the better reason in place.
      if (this.client === client && this.failure?.includes(CONNECTION_CLOSED)) {
        this.setConnection(this.connection, this.failure.replace(CONNECTION_CLOSED, how));
        if (this.restarted?.reason === CONNECTION_CLOSED) this.restarted = { ...this.restarted, reason: how };
      }
    });
  }

  private acceptSnapshot(snapshot: SidecarSnapshot): void {
    this.latest = snapshot;
    this.snapshotEmitter.fire(snapshot);
  }

  private createClient(): LanguageClient {
    const serverOptions: ServerOptions = {
      run: { module: this.sidecarModule, transport: TransportKind.ipc },
      debug: {
        module: this.sidecarModule,
        transport: TransportKind.ipc,
        options: { execArgv: ['--nolazy', `--inspect=${INSPECT_PORT}`] },
      },
    };
    const clientOptions: LanguageClientOptions = {
      // The sidecar is not a language server: it watches no documents.
      documentSelector: [],
      outputChannel: this.log,
      revealOutputChannelOn: RevealOutputChannelOn.Never,
      initializationFailedHandler: (error) => {
        this.log.error(`The sidecar failed to initialise: ${String(error)}`);
        return false;
      },
      errorHandler: {
        error: (error, _message, count) => {
          this.log.error(`Connection error with the sidecar: ${error.message}`);
          return { action: count !== undefined && count <= 3 ? ErrorAction.Continue : ErrorAction.Shutdown, handled: true };
        },
        closed: () => {
          if (this.disposed) return { action: CloseAction.DoNotRestart, handled: true };
          const client = this.client;
          const reason = (client && this.exits.get(client)) ?? CONNECTION_CLOSED;
          // Called before pending requests learn that the connection is gone: mark their jobs lost first.
          this.connectionGone();
          if (this.budget.allowRestart(Date.now())) {
            this.log.warn(`The sidecar stopped unexpectedly (${reason}); restarting it (automatic restart ${this.budget.used} of ${this.budget.maxRestarts}).`);
            this.restarted = { at: Date.now(), reason };
            this.setConnection('restarting', reason);
            return { action: CloseAction.Restart, handled: true };
          }
          this.giveUp(`${capitalise(this.budget.describeExhausted())} (last time: ${reason})`);
          return { action: CloseAction.DoNotRestart, handled: true };
        },
      },
    };
    const client = new LanguageClient('vramRelay', 'VRAM Relay Sidecar', serverOptions, clientOptions);
    client.onNotification(SnapshotNotification, (snapshot: SidecarSnapshot) => this.acceptSnapshot(snapshot));
    client.onNotification(DecisionNotification, (event: DecisionEvent) => this.decisionEmitter.fire(event));
    client.onNotification(JobProgressNotification, (progress: JobProgressParams) => {
      this.ledger.progress(progress);
      this.jobs.progress(progress);
      this.progressEmitter.fire(progress);
    });
    client.onNotification(JobDoneNotification, (done: JobDoneParams) => {
      this.jobs.done(done);
      this.doneEmitter.fire(done);
    });
    let everRan = false;
    client.onDidChangeState(({ newState }) => {
      if (this.client !== client) return;
      // While restarting after a crash the status keeps saying so until the jobs are recovered.
      if (newState === State.Starting && this.connection !== 'restarting') this.setConnection('starting');
      if (newState === State.Running) {
        this.watchExit(client);
        // After an automatic restart the new process knows nothing: send the settings again, then the lost jobs.
        if (everRan) void this.afterStart(client);
        everRan = true;
      }
      if (newState === State.Stopped && this.connection === 'running') {
        // Stopped without a restart (the connection kept failing): nothing will bring the lost jobs back.
        this.connectionGone();
        this.setConnection('stopped');
        this.abandonLostJobs('the connection to it kept failing');
      }
      if (newState === State.StartFailed && this.connection === 'restarting') {
        this.giveUp(`The sidecar stopped unexpectedly (${this.failure ?? CONNECTION_CLOSED}) and did not start again`);
      }
    });
    return client;
  }

  private async start(): Promise<LanguageClient> {
    if (this.client) await this.stopClient();
    this.setConnection('starting');
    const client = this.createClient();
    this.client = client;
    try {
      await client.start();
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      this.log.error(`The sidecar did not start: ${message}`);
      this.setConnection('failed', message);
      this.abandonLostJobs(`it did not start: ${message}`);
      // Start-up failure is the one case where the log opens by itself.
      this.log.show(true);
      void vscode.window.showErrorMessage(`VRAM Relay: the sidecar did not start (${message}).`, 'Restart Sidecar', 'Show Logs').then((choice) => {
        if (choice === 'Restart Sidecar') void vscode.commands.executeCommand('vramRelay.restartSidecar');
        if (choice === 'Show Logs') this.log.show();
      });
      throw error;
    }
    await this.afterStart(client);
    return client;
  }

  /** Checks the protocol version, sends the settings and fetches the first snapshot. */
  private async afterStart(client: LanguageClient): Promise<void> {
    try {
      const version = (await client.sendRequest(Version)) as VersionResult;
      if (version.protocol !== PROTOCOL_VERSION) {
        this.log.warn(`The sidecar speaks protocol ${version.protocol}, this extension ${PROTOCOL_VERSION}: rebuild with "npm run build".`);
      }
      this.log.info(`Sidecar ${version.sidecar} is running (protocol ${version.protocol}).`);
    } catch (error) {
      this.log.warn(`The sidecar did not answer ${Version}: ${String(error)}`);
    }
    await this.configure(client);
    try {
      await this.recoverLostJobs(client);
    } catch (error) {
      this.log.error(`Recovering the jobs lost in the restart: ${errorText(error)}`);
      this.abandonLostJobs(`recovery failed: ${errorText(error)}`);
    }
    if (this.client !== client) return;
    this.setConnection('running');
    try {
      this.acceptSnapshot((await client.sendRequest(GetSnapshot)) as SidecarSnapshot);
    } catch (error) {
      this.log.warn(`No snapshot yet: ${String(error)}`);
    }
  }

  private async configure(client: LanguageClient): Promise<ConfigureResult | undefined> {
    try {
      const result = (await client.sendRequest(Configure, this.settings())) as ConfigureResult;
      if (result.restartNeeded.length > 0) this.log.info(`Settings that take effect after a restart: ${result.restartNeeded.join(', ')}`);
      return result;
    } catch (error) {
      this.log.error(`The sidecar refused the settings: ${String(error)}`);
      void vscode.window.showWarningMessage(`VRAM Relay: the sidecar refused the settings (${String(error)}).`, 'Show Logs').then((choice) => {
        if (choice) this.log.show();
      });
      return undefined;
    }
  }

  private async stopClient(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    // Jobs in flight are lost with the process; a restart that follows recovers them.
    this.connectionGone();
    if (!client) return;
    try {
      if (client.state !== State.Stopped) await client.stop(3000);
    } catch (error) {
      this.log.warn(`Stopping the sidecar: ${String(error)}`);
    }
    try {
      await client.dispose(1000);
    } catch {
      // Already stopped: nothing left to release.
    }
    if (!this.disposed) this.setConnection('stopped');
  }
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function capitalise(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/** True when every file exists (and there is at least one). */
async function allExist(files: readonly string[]): Promise<boolean> {
  if (files.length === 0) return false;
  const found = await Promise.all(files.map((file) => fs.stat(file).then((s) => s.isFile() && s.size > 0, () => false)));
  return found.every(Boolean);
}

/** Thrown by requests while the sidecar is down; the message says how to bring it back. */
export class SidecarUnavailableError extends Error {
  constructor(reason?: string) {
    super(`The VRAM Relay sidecar is not running${reason ? ` (${reason})` : ''}. Run "VRAM Relay: Restart Sidecar".`);
    this.name = 'SidecarUnavailableError';
  }
}
