/**
 * The link to the sidecar: a `vscode-languageclient` over IPC to `dist/sidecar.js`, started on first need,
 * restarted after a crash (within a budget) and on demand, with typed requests and events for the protocol's
 * notifications. Its log goes to a LogOutputChannel that only opens by itself when start-up fails.
 */

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
import type { DecisionEvent } from '../sidecar/core/types';
import {
  CancelJob,
  Configure,
  DecisionNotification,
  FreeGpuMemory,
  GetDecisions,
  GetSnapshot,
  JobDoneNotification,
  JobProgressNotification,
  PreviewPlan,
  PROTOCOL_VERSION,
  SetLlmState,
  SnapshotNotification,
  SubmitJob,
  Version,
  WaitJob,
  type CancelJobParams,
  type CancelJobResult,
  type ConfigureParams,
  type ConfigureResult,
  type FreeGpuMemoryResult,
  type GetDecisionsParams,
  type GetDecisionsResult,
  type JobDoneParams,
  type JobProgressParams,
  type PreviewPlanParams,
  type PreviewPlanResult,
  type SetLlmStateParams,
  type SetLlmStateResult,
  type SidecarSettings,
  type SidecarSnapshot,
  type SubmitJobParams,
  type SubmitJobResult,
  type VersionResult,
  type WaitJobParams,
  type WaitJobResult,
} from '../sidecar/protocol';
import { JobEventRouter, type JobWatcher } from './jobEvents';
import { RestartBudget } from './restartPolicy';
import type { ConnectionState } from './statusText';

/** Every request the extension sends: method -> [params, result]. */
export interface SidecarRequests {
  [Configure]: [ConfigureParams, ConfigureResult];
  [GetSnapshot]: [undefined, SidecarSnapshot];
  [GetDecisions]: [GetDecisionsParams, GetDecisionsResult];
  [PreviewPlan]: [PreviewPlanParams, PreviewPlanResult];
  [SubmitJob]: [SubmitJobParams, SubmitJobResult];
  [CancelJob]: [CancelJobParams, CancelJobResult];
  [WaitJob]: [WaitJobParams, WaitJobResult];
  [SetLlmState]: [SetLlmStateParams, SetLlmStateResult];
  [FreeGpuMemory]: [undefined, FreeGpuMemoryResult];
  [Version]: [undefined, VersionResult];
}

export type SidecarMethod = keyof SidecarRequests;

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

  /** Why the last start failed, for the status bar. */
  get lastFailure(): string | undefined {
    return this.failure;
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
    const started = client && client.state === State.Starting ? this.waitUntilRunning(client) : this.start();
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
        if (state === 'starting') return;
        clearTimeout(timer);
        listener.dispose();
        if (state === 'running' && this.client === client) resolve(client);
        else reject(new SidecarUnavailableError(this.failure));
      });
    });
  }

  async request<M extends SidecarMethod>(method: M, params: SidecarRequests[M][0], token?: vscode.CancellationToken): Promise<SidecarRequests[M][1]> {
    const client = await this.ensureStarted();
    // vscode-jsonrpc treats every extra argument as a parameter (an undefined token would turn the params into a
    // positional array): pass the params object alone, and the token only when there is one.
    const send = client.sendRequest.bind(client) as (method: string, ...args: unknown[]) => Promise<unknown>;
    const args: unknown[] = params === undefined ? [] : [params];
    if (token) args.push(token);
    return send(method, ...args) as Promise<SidecarRequests[M][1]>;
  }

  /** Watches one job's progress and end; events that came before the watch are replayed. */
  watchJob(jobId: string, watcher: JobWatcher): vscode.Disposable {
    return new vscode.Disposable(this.jobs.watch(jobId, watcher));
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
    this.connectionEmitter.dispose();
    this.snapshotEmitter.dispose();
    this.decisionEmitter.dispose();
    this.progressEmitter.dispose();
    this.doneEmitter.dispose();
    this.log.dispose();
  }

  private setConnection(state: ConnectionState, failure?: string): void {
    this.failure = failure;
    if (state === this.connection) return;
    this.connection = state;
    this.connectionEmitter.fire(state);
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
          if (this.budget.allowRestart(Date.now())) {
            this.log.warn('The sidecar stopped unexpectedly; restarting it.');
            return { action: CloseAction.Restart, handled: true };
          }
          const message = 'The sidecar stopped 5 times in 3 minutes and was not restarted again.';
          this.log.error(message);
          this.setConnection('failed', message);
          void vscode.window.showErrorMessage(`VRAM Relay: ${message}`, 'Restart Sidecar', 'Show Logs').then((choice) => {
            if (choice === 'Restart Sidecar') void vscode.commands.executeCommand('vramRelay.restartSidecar');
            if (choice === 'Show Logs') this.log.show();
          });
          return { action: CloseAction.DoNotRestart, handled: true };
        },
      },
    };
    const client = new LanguageClient('vramRelay', 'VRAM Relay Sidecar', serverOptions, clientOptions);
    client.onNotification(SnapshotNotification, (snapshot: SidecarSnapshot) => this.acceptSnapshot(snapshot));
    client.onNotification(DecisionNotification, (event: DecisionEvent) => this.decisionEmitter.fire(event));
    client.onNotification(JobProgressNotification, (progress: JobProgressParams) => {
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
      if (newState === State.Starting) this.setConnection('starting');
      if (newState === State.Running) {
        // After an automatic restart the new process knows nothing: send the settings again.
        if (everRan) void this.afterStart(client);
        everRan = true;
      }
      if (newState === State.Stopped && this.connection === 'running') this.setConnection('stopped');
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
    this.latest = undefined;
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

/** Thrown by requests while the sidecar is down; the message says how to bring it back. */
export class SidecarUnavailableError extends Error {
  constructor(reason?: string) {
    super(`The VRAM Relay sidecar is not running${reason ? ` (${reason})` : ''}. Run "VRAM Relay: Restart Sidecar".`);
    this.name = 'SidecarUnavailableError';
  }
}
