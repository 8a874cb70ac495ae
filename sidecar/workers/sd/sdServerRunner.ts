/**
 * The image worker for a resident `sd-server`: the model stays loaded between jobs (no reload per image) while
 * memory allows; the arbiter calls `stopResident()` to give the weights back.
 *
 * Placement flags are fixed for the life of the process, so a job whose plan needs other ones restarts the server;
 * VAE tiling is per request in the native API and needs no restart. Jobs go through the native async API
 * (`POST /sdcpp/v1/img_gen`, `GET /sdcpp/v1/jobs/{id}`, `POST /sdcpp/v1/jobs/{id}/cancel`); progress and buffer
 * sizes come from the server's log, as with sd-cli. Images are checked and delivered exactly as sd-cli's are.
 */

import { writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { dirname, join } from 'node:path';
import type { ImageRunner, ImageRunResult, MeasuredBuffer, StageProgress } from '../../core/ports';
import type { Bytes, ImageJobSpec, ImagePlacement, Plan } from '../../core/types';
import { loadExeca } from '../../loadExeca';
import { stopTree, trackProcessGroup } from '../processTree';
import { buildSdArgs, GPU_PLACEMENT, InvalidImageJobError, isVideoJob, modelInputArgs, placementArgs, UnsupportedPlacementError } from './sdArgs';
import { DEFAULT_HANG_TIMEOUT_MS, DEFAULT_KILL_GRACE_MS } from './sdCliRunner';
import { SdBinaryError, SdHelpCache, type SdHelpInfo } from './sdHelp';
import { peakBuffers, SdLogParser } from './sdLogParser';
import {
  cancelled,
  deliver,
  exitFailure,
  failure,
  type Failure,
  inputFailure,
  mergedEnv,
  missingInputs,
  outputFolderProblem,
  removeTemps,
  RunFollower,
  settle,
  type Settled,
  SETTING_BINARY,
  splitRuns,
  stageWords,
  tempStemFor,
} from './sdRunSupport';

export interface SdServerRunnerOptions {
  /** The sd-server binary. */
  binaryPath: string;
  help?: SdHelpInfo;
  /** A job whose server prints nothing and whose status does not change for this long is stopped as hung. */
  hangTimeoutMs?: number;
  /** Time the server may take to load the model and answer (default 10 min). */
  readyTimeoutMs?: number;
  killGraceMs?: number;
  /** How often a job's status is asked for (default 250 ms). */
  pollIntervalMs?: number;
  env?: NodeJS.ProcessEnv;
  threads?: number;
  onLog?: (line: string, stream: 'stdout' | 'stderr') => void;
}

interface JobStatus {
  id: string;
  status: 'queued' | 'generating' | 'completed' | 'failed' | 'cancelled';
  result?: { images?: { index: number; b64_json: string }[] } | null;
  error?: { code?: string; message?: string } | null;
}

interface Resident {
  pid: number;
  port: number;
  /** Model inputs and placement flags it was started with. */
  key: string;
  exited: Promise<Settled>;
  ended: boolean;
  parsers: { stdout: SdLogParser; stderr: SdLogParser };
  /** Receives the log events: the loading follower, then each job's. */
  follow: RunFollower;
  /** Buffers logged while loading (the weights), reported with every job. */
  startupBuffers: MeasuredBuffer[];
  lastActivity: number;
}

/** Runs image jobs on a resident sd-server, one job at a time. */
export class SdServerRunner implements ImageRunner {
  private readonly help: SdHelpCache;
  private resident: Resident | undefined;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly options: SdServerRunnerOptions) {
    this.help = new SdHelpCache(options.binaryPath, () => mergedEnv(options.env), options.help);
  }

  capabilities(): Promise<SdHelpInfo> {
    return this.help.get();
  }

  /** The running server, with the weights it logged on the device (undefined before they are known). */
  residentInfo(): { pid: number; port: number; weightsOnDevice?: Bytes } | undefined {
    const r = this.resident;
    if (!r || r.ended) return undefined;
    const weights = r.startupBuffers.find((b) => b.key === 'total.weights' && b.where === 'gpu');
    return { pid: r.pid, port: r.port, ...(weights ? { weightsOnDevice: weights.bytes } : {}) };
  }

  /** Stops the server (SIGTERM, then SIGKILL): its weights leave the device. */
  stopResident(): Promise<void> {
    return this.serialize(() => this.stopNow());
  }

  run(job: ImageJobSpec, plan: Plan, onProgress: (p: StageProgress) => void, signal: AbortSignal): Promise<ImageRunResult> {
    return this.serialize(() => this.runNow(job, plan, onProgress, signal));
  }

  private serialize<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.then(fn, fn);
    this.queue = next.catch(() => undefined);
    return next;
  }

  private async runNow(job: ImageJobSpec, plan: Plan, onProgress: (p: StageProgress) => void, signal: AbortSignal): Promise<ImageRunResult> {
    const started = Date.now();
    const measured: MeasuredBuffer[] = [];
    if (signal.aborted) return cancelled(measured);

    let help: SdHelpInfo;
    try {
      help = await this.capabilities();
    } catch (error) {
      return inputFailure(error instanceof SdBinaryError ? error.message : `The sd.cpp binary could not be probed: ${(error as Error).message}`);
    }
    if (help.kind !== 'sd-server') {
      return inputFailure(`${help.binaryPath} is ${help.kind}, not sd-server: set the resident image worker's binary to sd-server, or run jobs with sd-cli.`);
    }
    if (isVideoJob(job)) return inputFailure('Video jobs run through sd-cli (-M vid_gen), not through a resident sd-server.');
    const placement = plan.placement ?? GPU_PLACEMENT;
    let serverArgs: string[];
    try {
      // Validates the job and the placement against the binary before anything starts.
      buildSdArgs(job, placement, help.capabilities, 'check.png');
      serverArgs = [
        ...modelInputArgs(job),
        ...placementArgs({ ...placement, vaeTiling: false }, help.capabilities, { autoFit: help.autoFit, legacyCpuFlags: help.legacyCpuFlags }),
      ];
    } catch (error) {
      if (error instanceof UnsupportedPlacementError || error instanceof InvalidImageJobError) return inputFailure(error.message);
      throw error;
    }
    const problem = (await missingInputs(job)) ?? (await outputFolderProblem(dirname(job.outputPath)));
    if (problem) return inputFailure(problem);

    const key = JSON.stringify(serverArgs);
    if (this.resident && (this.resident.ended || this.resident.key !== key)) await this.stopNow();
    if (!this.resident) {
      const startedServer = await this.start(job, serverArgs, key, onProgress, signal);
      if ('failure' in startedServer) return startedServer;
    }
    const resident = this.resident!;
    measured.push(...resident.startupBuffers);

    const outDir = dirname(job.outputPath);
    const tempStem = tempStemFor(job.outputPath);
    const runs = splitRuns(job, plan);
    const produced: { file: string; allocationError: boolean }[] = [];
    try {
      for (const [i, part] of runs.entries()) {
        const follow = new RunFollower(job, { firstImage: part.first, totalImages: job.batch, ...(runs.length > 1 ? { runLabel: `run ${i + 1}/${runs.length}` } : {}) }, onProgress);
        resident.follow = follow;
        resident.parsers.stdout.resetStage();
        resident.parsers.stderr.resetStage();
        const outcome = await this.runJob(resident, job, placement, part, follow, signal);
        measured.push(...follow.buffers);
        if ('failure' in outcome) return { ...outcome, measured: peakBuffers(measured) };
        for (const [n, png] of outcome.images.entries()) {
          const file = join(outDir, `${tempStem}-${i}_${n}.png`);
          await writeFile(file, png);
          produced.push({ file, allocationError: follow.oomLine() !== undefined });
        }
      }
      return await deliver(produced, job, measured, onProgress, started);
    } finally {
      await removeTemps(outDir, tempStem);
    }
  }

  /** Starts the server and waits until it answers; a failure when it dies or never answers. */
  private async start(
    job: ImageJobSpec,
    serverArgs: string[],
    key: string,
    onProgress: (p: StageProgress) => void,
    signal: AbortSignal,
  ): Promise<{ ok: true } | Failure> {
    const port = await freePort();
    const args = [...serverArgs, '--listen-ip', '127.0.0.1', '--listen-port', String(port), '-v'];
    if (this.options.threads) args.push('-t', String(this.options.threads));
    const execa = await loadExeca();
    const child = execa(this.options.binaryPath, args, {
      reject: false,
      buffer: false,
      stdin: 'ignore',
      env: mergedEnv(this.options.env),
      detached: process.platform !== 'win32',
    });
    if (child.pid === undefined) {
      const end = await settle(child);
      return inputFailure(`The sd-server binary ${this.options.binaryPath} could not be started (${end.spawnError ?? 'unknown error'}): check ${SETTING_BINARY}.`);
    }
    const untrack = trackProcessGroup(child.pid);
    const follow = new RunFollower(job, { firstImage: 0, totalImages: job.batch }, onProgress);
    const resident: Resident = {
      pid: child.pid,
      port,
      key,
      exited: settle(child).finally(() => {
        resident.ended = true;
        untrack();
      }),
      ended: false,
      parsers: { stdout: new SdLogParser(), stderr: new SdLogParser() },
      follow,
      startupBuffers: [],
      lastActivity: Date.now(),
    };
    for (const stream of ['stdout', 'stderr'] as const) {
      const readable = child[stream];
      if (!readable) continue;
      readable.setEncoding('utf8');
      readable.on('data', (chunk: string) => {
        resident.lastActivity = Date.now();
        if (this.options.onLog) for (const line of chunk.split(/\r?\n|\r/)) if (line.trim()) this.options.onLog(line, stream);
        resident.follow.handle(resident.parsers[stream].push(chunk));
      });
    }
    this.resident = resident;

    const deadline = Date.now() + (this.options.readyTimeoutMs ?? 10 * 60_000);
    for (;;) {
      if (resident.ended) {
        const end = await resident.exited;
        this.resident = undefined;
        return exitFailure(end, follow, job, follow.buffers);
      }
      if (signal.aborted) {
        await this.stopNow();
        return cancelled(follow.buffers);
      }
      if (Date.now() > deadline) {
        await this.stopNow();
        return failure('crash', `sd-server did not answer on port ${port} within ${Math.round((this.options.readyTimeoutMs ?? 600_000) / 1000)} s of starting and was stopped.`, follow.buffers, 'textEncode');
      }
      const answered = await fetch(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(1_000) }).then(
        async (r) => {
          await r.arrayBuffer().catch(() => undefined);
          return true;
        },
        () => false,
      );
      if (answered) break;
      await delay(200);
    }
    resident.startupBuffers = [...follow.buffers];
    return { ok: true };
  }

  /** One job on the server; the decoded images, or a failure. */
  private async runJob(
    resident: Resident,
    job: ImageJobSpec,
    placement: ImagePlacement,
    part: { first: number; batch: number },
    follow: RunFollower,
    signal: AbortSignal,
  ): Promise<{ images: Buffer[] } | Failure> {
    const base = `http://127.0.0.1:${resident.port}`;
    const body = {
      prompt: job.prompt,
      negative_prompt: job.negativePrompt ?? '',
      width: job.width,
      height: job.height,
      seed: job.seed + part.first,
      batch_count: part.batch,
      sample_params: {
        sample_steps: job.steps,
        ...(job.samplingMethod ? { sample_method: job.samplingMethod } : {}),
        ...(job.cfgScale !== undefined ? { guidance: { txt_cfg: job.cfgScale } } : {}),
      },
      vae_tiling_params: { enabled: placement.vaeTiling, temporal_tiling: false },
      output_format: 'png',
    };
    let submitted: Response;
    try {
      submitted = await fetch(`${base}/sdcpp/v1/img_gen`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(30_000),
      });
    } catch (error) {
      return this.lostServer(resident, follow, job, `the job could not be submitted (${(error as Error).message})`);
    }
    const submitText = await submitted.text();
    if (submitted.status === 404) {
      return inputFailure(`This sd-server has no native job API (/sdcpp/v1/img_gen): update stable-diffusion.cpp, or run jobs with sd-cli.`);
    }
    if (submitted.status !== 202 && submitted.status !== 200) {
      return failure(submitted.status === 400 ? 'input' : 'crash', `sd-server refused the job (HTTP ${submitted.status}: ${submitText.slice(0, 200)}).`, follow.buffers);
    }
    const id = (JSON.parse(submitText) as { id?: string }).id;
    if (!id) return failure('crash', `sd-server accepted the job but gave no job id (${submitText.slice(0, 200)}).`, follow.buffers);

    const hangMs = this.options.hangTimeoutMs ?? DEFAULT_HANG_TIMEOUT_MS;
    let lastStatus = '';
    for (;;) {
      if (resident.ended) return this.lostServer(resident, follow, job, 'the server stopped during the job');
      if (signal.aborted) return this.cancelJob(resident, id, follow);
      if (Date.now() - resident.lastActivity > hangMs) {
        await this.stopNow();
        return failure('crash', `sd-server showed no progress for ${Math.round(hangMs / 1000)} s during ${stageWords(follow.failureStage())} and was stopped as hung.`, follow.buffers, follow.failureStage());
      }
      const status = await this.jobStatus(base, id);
      if (status) {
        if (status.status !== lastStatus) {
          lastStatus = status.status;
          resident.lastActivity = Date.now();
        }
        if (status.status === 'completed' || status.status === 'failed' || status.status === 'cancelled') {
          // The log lines of the end of the job may still be in the pipe.
          await delay(50);
          return this.finished(status, follow);
        }
      }
      await delay(this.options.pollIntervalMs ?? 250);
    }
  }

  private finished(status: JobStatus, follow: RunFollower): { images: Buffer[] } | Failure {
    const stage = follow.failureStage();
    if (status.status === 'cancelled') return cancelled(follow.buffers, stage);
    if (status.status === 'failed') {
      const reason = status.error?.message ?? 'no reason given';
      const oomLine = follow.oomLine();
      if (oomLine) return failure('oom', `sd-server ran out of memory during ${stageWords(stage)} ("${oomLine}"); the job failed (${reason}).`, follow.buffers, stage);
      return failure('crash', `sd-server failed the job during ${stageWords(stage)}: ${reason}.`, follow.buffers, stage);
    }
    const images = (status.result?.images ?? []).slice().sort((a, b) => a.index - b.index).map((i) => Buffer.from(i.b64_json, 'base64'));
    if (images.length === 0) return failure('crash', 'sd-server completed the job without an image.', follow.buffers, stage);
    return { images };
  }

  private async jobStatus(base: string, id: string): Promise<JobStatus | undefined> {
    try {
      const r = await fetch(`${base}/sdcpp/v1/jobs/${encodeURIComponent(id)}`, { signal: AbortSignal.timeout(10_000) });
      if (!r.ok) {
        await r.arrayBuffer().catch(() => undefined);
        return undefined;
      }
      return (await r.json()) as JobStatus;
    } catch {
      return undefined;
    }
  }

  /** Asks the server to cancel; stops the server when it does not within the grace time (that frees VRAM too). */
  private async cancelJob(resident: Resident, id: string, follow: RunFollower): Promise<Failure> {
    const base = `http://127.0.0.1:${resident.port}`;
    await fetch(`${base}/sdcpp/v1/jobs/${encodeURIComponent(id)}/cancel`, { method: 'POST', signal: AbortSignal.timeout(5_000) })
      .then((r) => r.arrayBuffer())
      .catch(() => undefined);
    const deadline = Date.now() + (this.options.killGraceMs ?? DEFAULT_KILL_GRACE_MS) + 2_000;
    while (Date.now() < deadline && !resident.ended) {
      const status = await this.jobStatus(base, id);
      if (status && status.status !== 'queued' && status.status !== 'generating') return cancelled(follow.buffers, follow.failureStage());
      await delay(100);
    }
    await this.stopNow();
    return cancelled(follow.buffers, follow.failureStage());
  }

  private async lostServer(resident: Resident, follow: RunFollower, job: ImageJobSpec, what: string): Promise<Failure> {
    if (!resident.ended) await this.stopNow();
    const end = await resident.exited;
    if (this.resident === resident) this.resident = undefined;
    const result = exitFailure(end, follow, job, follow.buffers);
    return result.failure === 'crash' ? { ...result, message: `${result.message.replace(/\.$/, '')}; ${what}.` } : result;
  }

  private async stopNow(): Promise<void> {
    const r = this.resident;
    this.resident = undefined;
    if (!r) return;
    if (!r.ended) await stopTree(r.pid, r.exited, this.options.killGraceMs ?? DEFAULT_KILL_GRACE_MS);
    await r.exited;
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A port nothing listens on right now (the OS picks it). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}
