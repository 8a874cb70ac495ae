/**
 * The sd.cpp command line for one run of an image job under a plan's placement. Pure: no file system, no shell;
 * the result is an argv array passed to the binary as it is.
 */

import type { ImageJobSpec, ImagePlacement, SdCapabilities } from '../../core/types';

/** Everything on the GPU, no tiling: what a plan without a placement means. */
export const GPU_PLACEMENT: ImagePlacement = {
  textEncoder: 'gpu',
  diffusion: 'gpu',
  vae: 'gpu',
  vaeTiling: false,
  flashAttention: false,
};

/** The plan asks for something this binary cannot do; the planner should not have chosen it. */
export class UnsupportedPlacementError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UnsupportedPlacementError';
  }
}

/** The job itself is malformed (sizes, steps): no plan can run it. */
export class InvalidImageJobError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InvalidImageJobError';
  }
}

export interface SdArgsOptions {
  /** The binary has `--auto-fit`: turn it off so that sd.cpp keeps the placement the plan chose. */
  autoFit?: boolean;
  /** The binary accepts printf-style `-o` patterns; video frames are then written as numbered PNGs. */
  outputPattern?: boolean;
  /** The binary has only one of the legacy flags (very old builds). Absent: both. */
  legacyCpuFlags?: { clip: boolean; vae: boolean };
  /** `-t`: CPU threads for the parts that run on the CPU. */
  threads?: number;
  /** Overrides for this run only (a batch split image by image). */
  batch?: number;
  seed?: number;
}

const UPDATE_HINT = 'update stable-diffusion.cpp to a current release, or let the planner choose another placement';

/** Split files and the flag that loads each. */
const PART_FLAGS: Record<keyof NonNullable<ImageJobSpec['parts']>, string> = {
  clipL: '--clip_l',
  clipG: '--clip_g',
  t5xxl: '--t5xxl',
  llm: '--llm',
  vae: '--vae',
  taesd: '--taesd',
};

/** A video job: more than one frame, run with `-M vid_gen`. */
export function isVideoJob(job: ImageJobSpec): boolean {
  return (job.frames ?? 1) > 1;
}

/**
 * The argv (without the binary) for `job` under `placement`, writing to `outputPath` (a temporary name chosen by
 * the runner; for video with pattern support, a `%03d` pattern). Throws UnsupportedPlacementError when the
 * binary lacks a flag the placement needs, InvalidImageJobError for a job no binary could run.
 */
export function buildSdArgs(
  job: ImageJobSpec,
  placement: ImagePlacement | undefined,
  caps: SdCapabilities,
  outputPath: string,
  options: SdArgsOptions = {},
): string[] {
  validateJob(job);
  const place = placement ?? GPU_PLACEMENT;
  const video = isVideoJob(job);
  const args: string[] = [];

  if (video) {
    if (!caps.videoGeneration) {
      throw new UnsupportedPlacementError(`This sd.cpp build cannot generate video (no -M vid_gen): ${UPDATE_HINT}.`);
    }
    args.push('-M', 'vid_gen');
  }

  args.push(...modelInputArgs(job));
  args.push(...placementArgs(place, caps, options, video));

  args.push('-p', job.prompt);
  if (job.negativePrompt) args.push('-n', job.negativePrompt);
  args.push('-W', String(job.width), '-H', String(job.height));
  args.push('--steps', String(job.steps));
  if (job.cfgScale !== undefined) args.push('--cfg-scale', String(job.cfgScale));
  if (job.samplingMethod) args.push('--sampling-method', job.samplingMethod);
  args.push('-s', String(options.seed ?? job.seed));
  if (video) {
    args.push('--video-frames', String(job.frames));
  } else {
    args.push('-b', String(options.batch ?? job.batch));
  }
  if (options.threads !== undefined && options.threads > 0) args.push('-t', String(options.threads));
  args.push('-o', outputPath);
  // Buffer sizes are only logged at debug level; calibration needs them.
  args.push('-v');
  return args;
}

/** Model inputs: one checkpoint (`-m`), or a diffusion model with its text encoders and VAE in separate files. */
export function modelInputArgs(job: Pick<ImageJobSpec, 'modelPath' | 'parts'>): string[] {
  const parts = job.parts ?? {};
  const splitTextEncoders = Boolean(parts.clipL || parts.clipG || parts.t5xxl || parts.llm);
  const args = [splitTextEncoders ? '--diffusion-model' : '-m', job.modelPath];
  for (const [part, flag] of Object.entries(PART_FLAGS) as [keyof typeof PART_FLAGS, string][]) {
    const path = parts[part];
    if (path) args.push(flag, path);
  }
  return args;
}

/** The flags that carry a placement, for the kind of CPU placement flags the binary has. */
export function placementArgs(
  place: ImagePlacement,
  caps: SdCapabilities,
  options: Pick<SdArgsOptions, 'autoFit' | 'legacyCpuFlags'> = {},
  video = false,
): string[] {
  const args: string[] = [];
  const onCpu: ('te' | 'vae')[] = [];
  if (place.textEncoder === 'cpu') onCpu.push('te');
  if (place.vae === 'cpu') onCpu.push('vae');

  if (onCpu.length > 0) {
    if (caps.cpuPlacementFlags === 'backend') {
      args.push('--backend', onCpu.map((module) => `${module}=cpu`).join(','));
    } else if (caps.cpuPlacementFlags === 'legacy') {
      const legacy = options.legacyCpuFlags ?? { clip: true, vae: true };
      for (const module of onCpu) {
        const has = module === 'te' ? legacy.clip : legacy.vae;
        const flag = module === 'te' ? '--clip-on-cpu' : '--vae-on-cpu';
        if (!has) throw new UnsupportedPlacementError(`This sd.cpp build has no ${flag}: ${UPDATE_HINT}.`);
        args.push(flag);
      }
    } else {
      throw new UnsupportedPlacementError(
        `This sd.cpp build cannot run the ${onCpu.map(moduleName).join(' or the ')} on the CPU (neither --backend nor ` +
          `--clip-on-cpu/--vae-on-cpu): ${UPDATE_HINT}.`,
      );
    }
  }
  if (place.diffusion === 'offload') {
    if (!caps.offloadToCpu) throw new UnsupportedPlacementError(`This sd.cpp build has no --offload-to-cpu: ${UPDATE_HINT}.`);
    args.push('--offload-to-cpu');
  }
  if (place.vaeTiling) {
    if (!caps.vaeTiling) throw new UnsupportedPlacementError(`This sd.cpp build has no --vae-tiling: ${UPDATE_HINT}.`);
    args.push('--vae-tiling');
    // Many frames decoded at once are the video form of the VAE danger zone; decode them a few at a time.
    if (video && caps.temporalTiling) args.push('--temporal-tiling');
  }
  if (place.flashAttention) {
    if (!caps.diffusionFlashAttention) throw new UnsupportedPlacementError(`This sd.cpp build has no --diffusion-fa: ${UPDATE_HINT}.`);
    args.push('--diffusion-fa');
  }
  // Without this, newer builds move weights around on their own and the plan's figures no longer hold.
  if (options.autoFit) args.push('--auto-fit', 'off');
  return args;
}

function moduleName(module: 'te' | 'vae'): string {
  return module === 'te' ? 'text encoder' : 'VAE';
}

function validateJob(job: ImageJobSpec): void {
  const problems: string[] = [];
  const positiveInt = (value: number | undefined, what: string) => {
    if (value === undefined || !Number.isInteger(value) || value < 1) problems.push(`${what} must be a whole number of 1 or more (got ${value})`);
  };
  positiveInt(job.width, 'the width');
  positiveInt(job.height, 'the height');
  positiveInt(job.steps, 'the number of steps');
  positiveInt(job.batch, 'the batch size');
  if (job.frames !== undefined) positiveInt(job.frames, 'the number of frames');
  if (job.width % 8 !== 0 || job.height % 8 !== 0) problems.push(`the size ${job.width}x${job.height} must be a multiple of 8 pixels`);
  if (!Number.isInteger(job.seed)) problems.push(`the seed must be a whole number (got ${job.seed})`);
  if (!job.modelPath) problems.push('no model file is given');
  if (!job.outputPath) problems.push('no output path is given');
  if (problems.length > 0) throw new InvalidImageJobError(`This image job cannot run: ${problems.join('; ')}.`);
}
