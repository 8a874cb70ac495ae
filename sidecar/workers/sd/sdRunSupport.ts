/**
 * What the sd-cli and sd-server runners share: checking inputs, following a run's log as progress, checking and
 * delivering outputs (temporary name -> check -> final name), and wording failures.
 */

import { randomBytes } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import { access, mkdir, readdir, rename, rm, stat, statfs } from 'node:fs/promises';
import { basename, dirname, extname, isAbsolute, join, resolve } from 'node:path';
import type { ResultPromise } from 'execa';
import type { ImageRunResult, MeasuredBuffer, StageProgress } from '../../core/ports';
import { formatBytes } from '../../core/format';
import type { ImageJobSpec, Plan, StageName } from '../../core/types';
import { KiB } from '../../core/types';
import { checkImageFile } from './imageCheck';
import { isVideoJob } from './sdArgs';
import { peakBuffers, type SdLogEvent, type SdStage } from './sdLogParser';
import { numberedOutputStem } from '../../core/outputNames';

export type Failure = Extract<ImageRunResult, { ok: false }>;

export const SETTING_MODEL = 'vramRelay.image.modelPath';
export const SETTING_BINARY = 'vramRelay.image.binaryPath';

export function failure(kind: Failure['failure'], message: string, measured: readonly MeasuredBuffer[], stage?: StageName): Failure {
  return { ok: false, failure: kind, message, measured: peakBuffers(measured), ...(stage ? { stage } : {}) };
}

export function inputFailure(message: string, measured: readonly MeasuredBuffer[] = []): Failure {
  return failure('input', message, measured);
}

export function cancelled(measured: readonly MeasuredBuffer[], stage?: StageName): Failure {
  return failure('cancelled', 'The image job was cancelled; no file was written.', measured, stage);
}

export function stageWords(stage: StageName): string {
  switch (stage) {
    case 'diffusion':
      return 'sampling';
    case 'vaeDecode':
      return 'the VAE decode';
    default:
      return 'model loading and text encoding';
  }
}

/** What is missing among the job's input files, as a message, or undefined. */
export async function missingInputs(job: ImageJobSpec): Promise<string | undefined> {
  const files: [string, string][] = [['model', job.modelPath]];
  for (const [part, path] of Object.entries(job.parts ?? {})) if (path) files.push([part, path]);
  for (const [what, path] of files) {
    const info = await stat(path).catch(() => undefined);
    if (!info) {
      return what === 'model'
        ? `The model file ${path} does not exist: set ${SETTING_MODEL} to a .safetensors, .gguf or .ckpt file.`
        : `The ${what} file ${path} does not exist: fix the path of that part of the model.`;
    }
    if (!info.isFile()) return `The ${what} path ${path} is not a file: point it to the model file itself.`;
  }
  return undefined;
}

/** Creates the output folder if needed; a message when it cannot be written. */
export async function outputFolderProblem(outDir: string): Promise<string | undefined> {
  try {
    await mkdir(outDir, { recursive: true });
    await access(outDir, fsConstants.W_OK);
    return undefined;
  } catch (error) {
    return `The output folder ${outDir} cannot be written (${(error as NodeJS.ErrnoException).code ?? (error as Error).message}): choose another output folder.`;
  }
}

/** True when `outDir` exists (as a folder); false when it was deleted. */
export async function folderExists(outDir: string): Promise<boolean> {
  return stat(outDir).then(
    (info) => info.isDirectory(),
    () => false,
  );
}

/** The job with its file paths made absolute (against the sidecar's folder, as the input checks read them). */
export function withAbsolutePaths(job: ImageJobSpec): ImageJobSpec {
  const abs = (path: string) => (path && !isAbsolute(path) ? resolve(path) : path);
  const parts = job.parts ? Object.fromEntries(Object.entries(job.parts).map(([k, v]) => [k, v ? abs(v) : v])) : undefined;
  return { ...job, modelPath: abs(job.modelPath), outputPath: abs(job.outputPath), ...(parts ? { parts } : {}) };
}

/** An upper bound of the disk space one finished image of the job takes (PNG compresses; headers and metadata aside). */
export function imageDiskBytes(job: Pick<ImageJobSpec, 'width' | 'height'>): number {
  return job.width * job.height * 3 + 64 * KiB;
}

/**
 * Why a finished image could not be written in `outDir` (a full disk, a read-only or locked folder), as a failure
 * that says what to do; undefined when the folder looks fine, or is gone (the runner makes it again). `errorCode`
 * is the error of our own write or rename, when there was one.
 */
export async function saveProblem(
  outDir: string,
  needBytes: number,
  measured: readonly MeasuredBuffer[],
  errorCode?: string,
): Promise<Failure | undefined> {
  const disk = await statfs(outDir).catch(() => undefined);
  if (!disk) return undefined;
  const free = disk.bavail * disk.bsize;
  if (errorCode === 'ENOSPC' || errorCode === 'EDQUOT' || free < needBytes) {
    return failure(
      'input',
      `The disk that holds ${outDir} is full (${formatBytes(free)} free), so the image could not be saved: free some space there or choose another output folder.`,
      measured,
      'vaeDecode',
    );
  }
  const denied =
    errorCode === 'EROFS' || errorCode === 'EACCES' || errorCode === 'EPERM'
      ? errorCode
      : await access(outDir, fsConstants.W_OK).then(
          () => undefined,
          (error: NodeJS.ErrnoException) => error.code ?? 'EACCES',
        );
  if (denied === 'EROFS') {
    return failure('input', `The output folder ${outDir} is on a read-only file system, so the image could not be saved: choose another output folder.`, measured, 'vaeDecode');
  }
  if (denied) {
    return failure(
      'input',
      `The output folder ${outDir} cannot be written (${denied}), so the image could not be saved: choose another output folder, or allow writing to it.`,
      measured,
      'vaeDecode',
    );
  }
  return undefined;
}

/** sd.cpp could not write an image (it could not open the file): what is wrong with the folder, or what to check. */
export async function sdSaveFailure(outDir: string, job: ImageJobSpec, measured: readonly MeasuredBuffer[]): Promise<Failure> {
  return (
    (await saveProblem(outDir, imageDiskBytes(job), measured)) ??
    failure(
      'input',
      `sd.cpp could not save the image in ${outDir}: check that the folder exists, can be written and has free space, or choose another output folder.`,
      measured,
      'vaeDecode',
    )
  );
}

/** A hidden name in the output folder, unique to one job, under which every temporary file of the job starts. */
export function tempStemFor(outputPath: string): string {
  return `.${basename(outputPath, extname(outputPath))}.vrelay-${randomBytes(4).toString('hex')}`;
}

/** Runs of one job: the whole batch at once, or `plan.batchPerRun` images per run (seeds continue across runs). */
export function splitRuns(job: ImageJobSpec, plan: Plan): { first: number; batch: number }[] {
  if (isVideoJob(job)) return [{ first: 0, batch: job.batch }];
  const per = Math.max(1, Math.min(job.batch, plan.batchPerRun ?? job.batch));
  const runs: { first: number; batch: number }[] = [];
  for (let first = 0; first < job.batch; first += per) runs.push({ first, batch: Math.min(per, job.batch - first) });
  return runs;
}

/** Checks one produced file; a failure when it must not be delivered. */
export async function checkOutput(file: string, allocationError: boolean, measured: readonly MeasuredBuffer[]): Promise<Failure | undefined> {
  if (!/\.png$/i.test(file)) {
    // Video containers are not decoded here; an empty one is still a failure.
    const size = await stat(file).then((s) => s.size, () => 0);
    return size > 0 ? undefined : failure('crash', `sd.cpp wrote an empty file (${basename(file)}).`, measured, 'vaeDecode');
  }
  const check = await checkImageFile(file, allocationError);
  switch (check.verdict) {
    case 'ok':
      return undefined;
    case 'nan-black':
      return failure('nan', `The image came out black: ${check.reason}.`, measured, 'vaeDecode');
    case 'blank':
      // A uniform image after a logged allocation failure is a memory failure the log admits; otherwise a silent one.
      return failure(allocationError ? 'oom' : 'blank', `sd.cpp reported success but ${check.reason}. The image was not kept.`, measured, 'vaeDecode');
    default:
      return failure('crash', `sd.cpp wrote an unusable image: ${check.reason}.`, measured, 'vaeDecode');
  }
}

/** Final paths: the job's path for one image, `name_1.png`... for a batch, `name_001.png`... for video frames. */
export function finalNames(outputPath: string, produced: readonly string[], video: boolean): string[] {
  const outExt = extname(outputPath);
  if (produced.length === 1) {
    const ext = extname(produced[0]).toLowerCase();
    return [ext === '.png' || ext === outExt.toLowerCase() ? outputPath : join(dirname(outputPath), basename(outputPath, outExt) + ext)];
  }
  const dir = dirname(outputPath);
  const stem = basename(outputPath, outExt);
  return produced.map((file, i) => {
    const ext = extname(file).toLowerCase() === '.png' ? outExt || '.png' : extname(file);
    return join(dir, `${numberedOutputStem(stem, i, produced.length, video)}${ext}`);
  });
}

/**
 * Checks every produced file, then moves them to their final names. Nothing reaches a final name unless every
 * image checked out; a failed move takes back the ones already moved.
 */
export async function deliver(
  produced: readonly { file: string; allocationError: boolean }[],
  job: ImageJobSpec,
  measured: readonly MeasuredBuffer[],
  onProgress: (p: StageProgress) => void,
  started: number,
): Promise<ImageRunResult> {
  onProgress({ stage: 'saving', message: `checking ${produced.length} image${produced.length === 1 ? '' : 's'}` });
  const need = imageDiskBytes(job);
  for (const { file, allocationError } of produced) {
    const problem = await checkOutput(file, allocationError, measured);
    // sd.cpp does not check its writes: a full disk leaves a truncated file and a log that says success.
    if (problem) return (problem.failure === 'crash' ? await saveProblem(dirname(file), need, measured) : undefined) ?? problem;
  }
  const files = produced.map((p) => p.file);
  const finals = finalNames(job.outputPath, files, isVideoJob(job));
  const moved: string[] = [];
  try {
    for (const [i, file] of files.entries()) {
      await rename(file, finals[i]);
      moved.push(finals[i]);
    }
  } catch (error) {
    await Promise.all(moved.map((f) => rm(f, { force: true })));
    const code = (error as NodeJS.ErrnoException).code;
    const problem = await saveProblem(dirname(job.outputPath), need, measured, code);
    if (problem) return problem;
    return failure(
      'input',
      `The finished image could not be moved to ${job.outputPath} (${(error as NodeJS.ErrnoException).code ?? (error as Error).message}): choose another output folder.`,
      measured,
      'vaeDecode',
    );
  }
  return { ok: true, outputs: moved, measured: peakBuffers(measured), tookMs: Date.now() - started };
}

/** Removes every file of the job that is still under its temporary stem. */
export async function removeTemps(dir: string, stem: string): Promise<void> {
  const names = await readdir(dir).catch(() => [] as string[]);
  await Promise.all(names.filter((n) => n.startsWith(stem)).map((n) => rm(join(dir, n), { force: true, recursive: true })));
}

/**
 * Files a run wrote under `stem`: `stem.png` (one image), `stem_2.png`... (older builds number from the second),
 * `stem_1.png`... (newer builds number every image of a batch), `stem_000.png`... (frame patterns), or a video.
 * Ordered by their number, the unnumbered one first.
 */
export async function producedFiles(dir: string, stem: string): Promise<string[]> {
  const names = await readdir(dir).catch(() => [] as string[]);
  const pattern = new RegExp(`^${escapeRegExp(stem)}(?:_(\\d+))?\\.(png|jpe?g|webp|avi|webm)$`, 'i');
  return names
    .map((name) => ({ name, m: pattern.exec(name) }))
    .filter((x): x is { name: string; m: RegExpExecArray } => x.m !== null)
    .sort((a, b) => Number(a.m[1] ?? -1) - Number(b.m[1] ?? -1))
    .map((x) => join(dir, x.name));
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

export interface RunContext {
  /** Index of the run's first image within the job. */
  firstImage: number;
  totalImages: number;
  /** `run 2/3` when a batch runs image by image. */
  runLabel?: string;
}

/** Turns log events into progress callbacks and keeps what the outcome of a run needs. */
export class RunFollower {
  readonly buffers: MeasuredBuffer[] = [];
  readonly failedSaves: string[] = [];
  private readonly errors: { kind: string; message: string }[] = [];
  private stage: SdStage | undefined;
  private imageInRun = 1;
  private lastReported = '';

  constructor(
    private readonly job: ImageJobSpec,
    private readonly run: RunContext,
    private readonly onProgress: (p: StageProgress) => void,
  ) {}

  handle(events: readonly SdLogEvent[]): void {
    for (const event of events) {
      switch (event.type) {
        case 'stage':
          if (event.phase === 'start') {
            this.stage = event.stage;
            this.report(this.progressFor(event.stage));
          }
          break;
        case 'image':
          this.imageInRun = event.index;
          break;
        case 'step':
          this.report({ stage: 'diffusion', step: event.step, totalSteps: event.totalSteps, message: this.imageLabel(event.secondsPerStep) });
          break;
        case 'buffer':
          this.buffers.push(event.buffer);
          break;
        case 'saved':
          if (!event.ok) this.failedSaves.push(event.path);
          break;
        case 'error':
          this.errors.push({ kind: event.kind, message: event.message });
          break;
        default:
          break;
      }
    }
  }

  /** The first logged error of one of these kinds. */
  firstError(kinds: readonly string[]): string | undefined {
    return this.errors.find((e) => kinds.includes(e.kind))?.message;
  }

  /** The first out-of-memory line (allocation failure or failed decode), if any. */
  oomLine(): string | undefined {
    return this.firstError(['oom', 'decodeFailed']);
  }

  lastError(): string | undefined {
    return this.errors.at(-1)?.message;
  }

  /** The stage the run was in, as the arbiter names stages. */
  failureStage(): StageName {
    switch (this.stage) {
      case 'diffusion':
        return 'diffusion';
      case 'vaeDecode':
      case 'save':
        return 'vaeDecode';
      default:
        return 'textEncode';
    }
  }

  private progressFor(stage: SdStage): StageProgress {
    switch (stage) {
      case 'load':
        return { stage: 'textEncode', message: withRun('loading the model', this.run.runLabel) };
      case 'textEncode':
        return { stage: 'textEncode', message: withRun('encoding the prompt', this.run.runLabel) };
      case 'diffusion':
        return { stage: 'diffusion', step: 0, totalSteps: this.job.steps, message: this.imageLabel() };
      case 'vaeDecode':
        return { stage: 'vaeDecode', message: withRun('decoding', this.run.runLabel) };
      default:
        return { stage: 'saving', message: withRun('saving', this.run.runLabel) };
    }
  }

  private imageLabel(secondsPerStep?: number): string {
    const index = this.run.firstImage + this.imageInRun;
    const image = this.run.totalImages > 1 ? `image ${index}/${this.run.totalImages}` : isVideoJob(this.job) ? 'video' : 'image';
    const speed = secondsPerStep && secondsPerStep > 0 ? `, ${secondsPerStep.toFixed(2)} s/step` : '';
    return withRun(`${image}${speed}`, this.run.runLabel);
  }

  private report(p: StageProgress): void {
    const key = `${p.stage}|${p.step ?? ''}|${p.message ?? ''}`;
    if (key === this.lastReported) return;
    this.lastReported = key;
    this.onProgress(p);
  }
}

function withRun(text: string, runLabel?: string): string {
  return runLabel ? `${text} (${runLabel})` : text;
}

/** What a process that ended badly means, from how it ended and what it logged. */
export function exitFailure(result: Settled, follow: RunFollower, job: ImageJobSpec, measured: readonly MeasuredBuffer[]): Failure {
  const stage = follow.failureStage();
  const oomLine = follow.oomLine();
  const died = result.signal !== undefined || (result.exitCode !== undefined && result.exitCode > 128);
  const how = result.signal ? `was stopped by ${result.signal}` : `exited with code ${result.exitCode}`;
  // A CUDA out-of-memory aborts the process (exit 134): the log says it was memory, so the ladder of safer plans helps.
  if (oomLine) return failure('oom', `sd.cpp ran out of memory during ${stageWords(stage)} and ${how} ("${oomLine}").`, measured, stage);
  const last = follow.lastError();
  if (died) return failure('crash', `sd.cpp ${how} during ${stageWords(stage)}${last ? ` ("${last}")` : ''}.`, measured, stage);
  const modelLine = follow.firstError(['modelLoad']);
  if (modelLine) {
    return failure(
      'input',
      `sd.cpp could not load the model ${job.modelPath} ("${modelLine}"): check that ${SETTING_MODEL} points to a model sd.cpp supports (.safetensors, .gguf, .ckpt).`,
      measured,
      stage,
    );
  }
  const usageLine = follow.firstError(['usage']);
  if (usageLine) {
    return failure(
      'input',
      `sd.cpp refused the command line ("${usageLine}"): this build does not accept a flag the plan needs; update stable-diffusion.cpp or restart the sidecar so that it probes the binary again.`,
      measured,
      stage,
    );
  }
  return failure('crash', `sd.cpp ${how} during ${stageWords(stage)}${last ? ` ("${last}")` : ''}.`, measured, stage);
}

export function mergedEnv(env: NodeJS.ProcessEnv | undefined): NodeJS.ProcessEnv | undefined {
  return env ? { ...process.env, ...env } : undefined;
}

export interface Settled {
  exitCode?: number;
  signal?: NodeJS.Signals;
  spawnError?: string;
}

/** The end of a process, whatever it was; never rejects. */
export async function settle(child: ResultPromise): Promise<Settled> {
  try {
    const result = await child;
    const code = (result as { code?: string }).code;
    if (result.failed && result.exitCode === undefined && result.signal === undefined && code) return { spawnError: code };
    return { exitCode: result.exitCode, signal: result.signal };
  } catch (error) {
    const e = error as { code?: string; exitCode?: number; signal?: NodeJS.Signals };
    if (e.exitCode === undefined && e.signal === undefined) return { spawnError: e.code ?? 'unknown error' };
    return { exitCode: e.exitCode, signal: e.signal };
  }
}
