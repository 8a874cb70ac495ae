/**
 * The image worker for `sd-cli` (or `sd` in older releases): one process per run, with the plan's flags.
 *
 * The process writes to a hidden temporary name in the output folder; every image is checked (a uniform image is
 * a failure, whatever the log says) and only then renamed to its final name. Every failure path removes the
 * temporary files, so the output folder never holds a half-written or blank image. The process runs in a private
 * working folder, removed afterwards, so that whatever it leaves there (a core dump after an abort) is not left
 * among the images either.
 *
 * Saving can fail for reasons no safer plan fixes: a full disk or a read-only folder ends the job with what to do;
 * an output folder deleted while the job ran is made again and the job run once more with the same plan.
 */

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import type { ImageRunner, ImageRunResult, MeasuredBuffer, StageProgress } from '../../core/ports';
import type { ImageJobSpec, ImagePlacement, Plan } from '../../core/types';
import { loadExeca } from '../../loadExeca';
import { stopTree, trackProcessGroup } from '../processTree';
import { buildSdArgs, InvalidImageJobError, isVideoJob, UnsupportedPlacementError } from './sdArgs';
import { SdBinaryError, SdHelpCache, type SdHelpInfo } from './sdHelp';
import { SdLogParser } from './sdLogParser';
import {
  cancelled,
  deliver,
  exitFailure,
  failure,
  type Failure,
  folderExists,
  inputFailure,
  mergedEnv,
  missingInputs,
  outputFolderProblem,
  producedFiles,
  removeTemps,
  type RunContext,
  RunFollower,
  sdSaveFailure,
  settle,
  SETTING_BINARY,
  splitRuns,
  stageWords,
  tempStemFor,
  withAbsolutePaths,
} from './sdRunSupport';

export interface SdCliRunnerOptions {
  /** The sd-cli / sd binary (a path, or a name found on PATH). */
  binaryPath: string;
  /** What the binary supports, when already probed; otherwise probed on the first run. */
  help?: SdHelpInfo;
  /** A run that prints nothing for this long is stopped as hung (default 15 min: a CPU VAE decode can be slow). */
  hangTimeoutMs?: number;
  /** Time between SIGTERM and SIGKILL when stopping (default 3 s). */
  killGraceMs?: number;
  /** Extra environment for the process (merged over the sidecar's). */
  env?: NodeJS.ProcessEnv;
  /** `-t` threads for the parts on the CPU. */
  threads?: number;
  /** Every log line, for the sidecar's own log. */
  onLog?: (line: string, stream: 'stdout' | 'stderr') => void;
}

export const DEFAULT_HANG_TIMEOUT_MS = 15 * 60_000;
export const DEFAULT_KILL_GRACE_MS = 3_000;

interface OneRun extends RunContext {
  tempPath: string;
  batch: number;
  seed: number;
  /** The process's working folder: private to the job, so that nothing it leaves (a core dump) lands among the images. */
  workDir: string;
}

export class SdCliRunner implements ImageRunner {
  private readonly help: SdHelpCache;

  constructor(private readonly options: SdCliRunnerOptions) {
    this.help = new SdHelpCache(options.binaryPath, () => mergedEnv(options.env), options.help);
  }

  /** What the binary supports (probed once; a failed probe is retried next time). */
  capabilities(): Promise<SdHelpInfo> {
    return this.help.get();
  }

  /** Forget the probed capabilities (the user replaced the binary). */
  refreshCapabilities(): void {
    this.help.forget();
  }

  /** A per-job runner keeps nothing resident. */
  async stopResident(): Promise<void> {}

  async run(spec: ImageJobSpec, plan: Plan, onProgress: (p: StageProgress) => void, signal: AbortSignal): Promise<ImageRunResult> {
    const started = Date.now();
    if (signal.aborted) return cancelled([]);

    let help: SdHelpInfo;
    try {
      help = await this.capabilities();
    } catch (error) {
      return inputFailure(error instanceof SdBinaryError ? error.message : `The sd.cpp binary could not be probed: ${(error as Error).message}`);
    }
    if (help.kind === 'sd-server') {
      return inputFailure(
        `${help.binaryPath} is sd-server, which keeps a model loaded; this worker runs sd-cli per job. ` +
          `Set ${SETTING_BINARY} to the sd-cli binary from the same release.`,
      );
    }
    // sd.cpp runs in a private folder: relative paths must mean what the checks below read.
    const job = withAbsolutePaths(spec);
    const outDir = dirname(job.outputPath);
    const problem = (await missingInputs(job)) ?? (await outputFolderProblem(outDir));
    if (problem) return inputFailure(problem);

    const first = await this.runJob(job, plan, help, onProgress, signal, started);
    if (first.ok || first.failure === 'cancelled' || signal.aborted || (await folderExists(outDir))) return first;
    // The folder existed when the job started: it was deleted while the job ran, taking the images with it. Make it
    // again and run the job once more with the same seed and plan, rather than climbing to a safer plan for nothing.
    const again = await outputFolderProblem(outDir);
    if (again) return inputFailure(`The output folder was deleted while the job ran and could not be made again. ${again}`, first.measured);
    onProgress({ stage: 'textEncode', message: `the output folder ${outDir} was deleted while the job ran: made it again, running the job again` });
    return this.runJob(job, plan, help, onProgress, signal, started);
  }

  /** Every run of the job (one, or image by image), then the check and the move to the final names. */
  private async runJob(
    job: ImageJobSpec,
    plan: Plan,
    help: SdHelpInfo,
    onProgress: (p: StageProgress) => void,
    signal: AbortSignal,
    started: number,
  ): Promise<ImageRunResult> {
    const measured: MeasuredBuffer[] = [];
    const outDir = dirname(job.outputPath);
    const video = isVideoJob(job);
    const tempStem = tempStemFor(job.outputPath);
    const runs = splitRuns(job, plan);
    const produced: { file: string; allocationError: boolean }[] = [];
    const workDir = await mkdtemp(join(tmpdir(), 'vrelay-sd-')).catch(() => outDir);
    try {
      for (const [i, part] of runs.entries()) {
        const outcome = await this.runOnce(
          job,
          plan.placement,
          help,
          {
            tempPath: join(outDir, `${tempStem}-${i}${video && help.outputPattern ? '_%03d' : ''}.png`),
            batch: part.batch,
            seed: job.seed + part.first,
            firstImage: part.first,
            totalImages: video ? 1 : job.batch,
            workDir,
            ...(runs.length > 1 ? { runLabel: `run ${i + 1}/${runs.length}` } : {}),
          },
          onProgress,
          signal,
          measured,
        );
        if (!outcome.ok) return outcome;
        produced.push(...outcome.files.map((file) => ({ file, allocationError: outcome.allocationError })));
      }
      return await deliver(produced, job, measured, onProgress, started);
    } finally {
      await removeTemps(outDir, tempStem);
      if (workDir !== outDir) await rm(workDir, { recursive: true, force: true }).catch(() => undefined);
    }
  }

  /** One sd.cpp process: spawn, follow the log, and say what came out. */
  private async runOnce(
    job: ImageJobSpec,
    placement: ImagePlacement | undefined,
    help: SdHelpInfo,
    run: OneRun,
    onProgress: (p: StageProgress) => void,
    signal: AbortSignal,
    measured: MeasuredBuffer[],
  ): Promise<Failure | { ok: true; files: string[]; allocationError: boolean }> {
    let args: string[];
    try {
      args = buildSdArgs(job, placement, help.capabilities, run.tempPath, {
        autoFit: help.autoFit,
        outputPattern: help.outputPattern,
        legacyCpuFlags: help.legacyCpuFlags,
        threads: this.options.threads,
        batch: run.batch,
        seed: run.seed,
      });
    } catch (error) {
      if (error instanceof UnsupportedPlacementError || error instanceof InvalidImageJobError) return inputFailure(error.message, measured);
      throw error;
    }

    const follow = new RunFollower(job, run, onProgress);
    const execa = await loadExeca();
    const child = execa(this.options.binaryPath, args, {
      reject: false,
      buffer: false,
      stdin: 'ignore',
      cwd: run.workDir,
      env: mergedEnv(this.options.env),
      // Its own process group, so that stopping it reaches anything it started.
      detached: process.platform !== 'win32',
    });
    // What it may leave if this sidecar is killed before it can clean up: the next one removes it.
    const leftovers = [
      { dir: dirname(run.tempPath), prefix: basename(run.tempPath).replace(/(_%0?\d*d)?\.png$/, '') },
      ...(run.workDir !== dirname(run.tempPath) ? [{ dir: dirname(run.workDir), prefix: basename(run.workDir) }] : []),
    ];
    const untrack = child.pid !== undefined ? trackProcessGroup(child.pid, leftovers) : () => undefined;
    const exited = settle(child);

    let stopReason: 'cancelled' | 'hung' | undefined;
    const graceMs = this.options.killGraceMs ?? DEFAULT_KILL_GRACE_MS;
    const stop = (reason: 'cancelled' | 'hung') => {
      if (stopReason) return;
      stopReason = reason;
      if (child.pid !== undefined) void stopTree(child.pid, exited, graceMs);
    };
    const hangMs = this.options.hangTimeoutMs ?? DEFAULT_HANG_TIMEOUT_MS;
    let hangTimer = setTimeout(() => stop('hung'), hangMs);
    const onActivity = () => {
      clearTimeout(hangTimer);
      hangTimer = setTimeout(() => stop('hung'), hangMs);
    };
    const onAbort = () => stop('cancelled');
    signal.addEventListener('abort', onAbort, { once: true });
    if (signal.aborted) onAbort();

    const parsers = { stdout: new SdLogParser(), stderr: new SdLogParser() };
    for (const stream of ['stdout', 'stderr'] as const) {
      const readable = child[stream];
      if (!readable) continue;
      readable.setEncoding('utf8');
      readable.on('data', (chunk: string) => {
        onActivity();
        if (this.options.onLog) for (const line of chunk.split(/\r?\n|\r/)) if (line.trim()) this.options.onLog(line, stream);
        follow.handle(parsers[stream].push(chunk));
      });
    }

    const result = await exited;
    clearTimeout(hangTimer);
    signal.removeEventListener('abort', onAbort);
    untrack();
    follow.handle([...parsers.stdout.end(), ...parsers.stderr.end()]);
    measured.push(...follow.buffers);

    const stage = follow.failureStage();
    const oomLine = follow.oomLine();
    if (stopReason === 'cancelled') return cancelled(measured, stage);
    if (stopReason === 'hung') {
      return failure('crash', `sd.cpp printed nothing for ${Math.round(hangMs / 1000)} s during ${stageWords(stage)} and was stopped as hung.`, measured, stage);
    }
    if (result.spawnError) {
      const what = result.spawnError === 'ENOENT' ? 'was not found' : `could not be started (${result.spawnError})`;
      return inputFailure(
        `The stable-diffusion.cpp binary ${this.options.binaryPath} ${what}: set ${SETTING_BINARY} to the sd-cli binary of a stable-diffusion.cpp release.`,
        measured,
      );
    }
    const outDir = dirname(run.tempPath);
    if (result.signal !== undefined || result.exitCode !== 0) {
      // Current sd-cli exits 1 when it could not open an output file: the folder is the problem, not the plan.
      if (result.signal === undefined && follow.failedSaves.length > 0 && !oomLine) return await sdSaveFailure(outDir, job, measured);
      return exitFailure(result, follow, job, measured);
    }

    const files = await producedFiles(outDir, basename(run.tempPath).replace(/(_%0?\d*d)?\.png$/, ''));
    for (const failedSave of follow.failedSaves) await rm(failedSave, { force: true });
    const expected = isVideoJob(job) ? 1 : run.batch;
    if (files.length < expected) {
      if (oomLine) {
        return failure('oom', `sd.cpp ran out of memory during ${stageWords(stage)} and wrote ${files.length} of ${expected} images ("${oomLine}").`, measured, stage);
      }
      // Older builds log a save they could not do as done; a folder that cannot take the image explains it.
      if (follow.failedSaves.length > 0 || !(await folderExists(outDir))) return await sdSaveFailure(outDir, job, measured);
      return failure('crash', `sd.cpp finished but wrote ${files.length} of ${expected} images.`, measured, stage);
    }
    // Newer builds retry a failed decode with tiling: an allocation error with good images is a success.
    return { ok: true, files, allocationError: oomLine !== undefined };
  }
}
