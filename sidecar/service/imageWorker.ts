/**
 * The image engine the arbiter drives: sd-cli per job, or a resident sd-server when the user keeps the model
 * loaded between jobs (vramRelay.image.keepResident) and an sd-server binary is there. Video jobs always go
 * through sd-cli when there is one (sd-server serves still images here).
 *
 * What the resident server holds is reported after every job and every stop, so that the arbiter counts it and
 * can stop it when the LLM needs the room.
 */

import type { Log } from '../api';
import type { ImageRunner, ImageRunResult, StageProgress } from '../core/ports';
import { FULL_SD_CAPABILITIES, type Bytes, type ImageJobSpec, type ImageWorkerState, type Plan, type SdCapabilities } from '../core/types';
import { isVideoJob } from '../workers/sd/sdArgs';
import { SdCliRunner } from '../workers/sd/sdCliRunner';
import type { SdHelpInfo } from '../workers/sd/sdHelp';
import { SdServerRunner } from '../workers/sd/sdServerRunner';
import type { SdBinaries } from './sdBinaries';

export interface ImageWorkerOptions {
  binaries: SdBinaries;
  /** Keep an sd-server resident between jobs when there is one. */
  keepResident: boolean;
  log: Log;
}

export type ResidentListener = (state: ImageWorkerState, heldBytes: Bytes) => void;

export class ImageWorker implements ImageRunner {
  /** Settles once the binaries have been probed (or failed to be). */
  readonly ready: Promise<void>;
  private cli: SdCliRunner | undefined;
  private server: SdServerRunner | undefined;
  private caps: SdCapabilities = FULL_SD_CAPABILITIES;
  private listener: ResidentListener | undefined;
  private reported: { state: ImageWorkerState; heldBytes: Bytes } = { state: 'stopped', heldBytes: 0 };

  constructor(private readonly options: ImageWorkerOptions) {
    const { binaries, keepResident, log } = options;
    const onLog = (line: string) => log('debug', `sd.cpp: ${line}`);
    // An empty path makes every job fail with the message that says what to set.
    if (binaries.cli || !binaries.server) this.cli = new SdCliRunner({ binaryPath: binaries.cli ?? '', onLog });
    if (binaries.server && (keepResident || !binaries.cli)) this.server = new SdServerRunner({ binaryPath: binaries.server, onLog });
    this.ready = this.probe();
  }

  /** What the binary that runs still images supports (a full set until it has been probed). */
  capabilities(): SdCapabilities {
    return this.caps;
  }

  /** Called with what the resident sd-server holds whenever that changes. */
  onResident(listener: ResidentListener): void {
    this.listener = listener;
  }

  /** The resident sd-server's pid while it runs. */
  serverPid(): number | undefined {
    return this.server?.residentInfo()?.pid;
  }

  async run(job: ImageJobSpec, plan: Plan, onProgress: (p: StageProgress) => void, signal: AbortSignal): Promise<ImageRunResult> {
    await this.ready;
    const server = this.server;
    const onServer = server && !(isVideoJob(job) && this.cli);
    try {
      if (onServer) return await server.run(job, plan, onProgress, signal);
      // A job in another process must not find the model still loaded in the server beside it.
      if (server?.residentInfo()) {
        await server.stopResident();
        this.syncResident();
      }
      return await this.cli!.run(job, plan, onProgress, signal);
    } finally {
      this.syncResident();
    }
  }

  async stopResident(): Promise<void> {
    try {
      await this.server?.stopResident();
    } finally {
      this.syncResident();
    }
  }

  /** Reports the resident server's state to the listener when it changed (it may also have died on its own). */
  syncResident(): void {
    const info = this.server?.residentInfo();
    const now = info ? { state: 'resident' as const, heldBytes: info.weightsOnDevice ?? 0 } : { state: 'stopped' as const, heldBytes: 0 };
    if (now.state === this.reported.state && now.heldBytes === this.reported.heldBytes) return;
    this.reported = now;
    this.listener?.(now.state, now.heldBytes);
  }

  private async probe(): Promise<void> {
    const { binaries, log } = this.options;
    if (!binaries.cli && !binaries.server) {
      log('info', 'no stable-diffusion.cpp binary configured or on PATH: image jobs will fail until vramRelay.image.binaryPath is set');
      return;
    }
    let [cli, server] = await Promise.all([this.cli && this.describe(this.cli), this.server && this.describe(this.server)]);
    if (cli?.kind === 'sd-server') {
      // The configured binary is an sd-server under another name: it is the only engine there is.
      this.server ??= new SdServerRunner({ binaryPath: cli.binaryPath, help: cli, onLog: (line) => log('debug', `sd.cpp: ${line}`) });
      server ??= cli;
      this.cli = undefined;
      cli = undefined;
    }
    if (server) {
      // Still images run on the server; video, when sd-cli is there, on sd-cli.
      this.caps = cli ? { ...server.capabilities, videoGeneration: cli.capabilities.videoGeneration, temporalTiling: cli.capabilities.temporalTiling } : server.capabilities;
      const why = this.options.keepResident ? 'kept resident between jobs' : 'kept resident: no sd-cli beside it';
      log('info', `image engine: ${server.binaryPath} (sd-server, ${why}, backend ${server.capabilities.backend})${cli ? `; video through ${cli.binaryPath}` : ''}`);
    } else if (cli) {
      this.caps = cli.capabilities;
      log('info', `image engine: ${cli.binaryPath} (${cli.kind}, backend ${cli.capabilities.backend})`);
    }
  }

  private async describe(runner: SdCliRunner | SdServerRunner): Promise<SdHelpInfo | undefined> {
    try {
      return await runner.capabilities();
    } catch (error) {
      this.options.log('warn', `image engine: ${(error as Error).message}`);
      return undefined;
    }
  }
}
