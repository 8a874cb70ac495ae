/**
 * The sd.cpp part of the real-GPU check: runs a real sd-cli through the image worker (SdCliRunner) on a
 * random-weight SD1.5 checkpoint at several sizes, with and without VAE tiling, samples the device while it runs,
 * and sets the peak of each stage and the buffer sizes sd.cpp logs against the image estimator's figures.
 */

import { statSync } from 'node:fs';
import { join } from 'node:path';
import { findOnPath } from '../../src/engineLocator';
import { estimateImageJob, type ImageBackend } from '../../sidecar/core/estimators/imageEstimator';
import { formatBytes } from '../../sidecar/core/format';
import type { MeasuredBuffer, StageProgress } from '../../sidecar/core/ports';
import type { Bytes, DeviceKind, DeviceProbe, ImageJobCosts, ImageJobSpec, ImagePlacement, Plan } from '../../sidecar/core/types';
import type { ImageModelInfo } from '../../sidecar/models/imageModelInfo';
import { GPU_PLACEMENT } from '../../sidecar/workers/sd/sdArgs';
import { SdCliRunner } from '../../sidecar/workers/sd/sdCliRunner';

/** Stages as the device sampler tells them apart; `load` is reading the weights before text encoding. */
export const SD_STAGES = ['load', 'textEncode', 'diffusion', 'vaeDecode'] as const;
export type SdCheckStage = (typeof SD_STAGES)[number];

export interface SdCheckRun {
  width: number;
  height: number;
  tiling: boolean;
  outcome: string;
  tookMs: number;
  /** Peak device use above the baseline while the stage ran (includes the process's CUDA context). */
  measuredPeak: Partial<Record<SdCheckStage, Bytes>>;
  estimatedPeak: Record<SdCheckStage, Bytes>;
  /** Buffer sizes from sd.cpp's log against the estimator's. */
  buffers: { key: string; logged?: Bytes; estimated: Bytes }[];
}

/** The sd.cpp binary to check: SD_CPP_BIN, else sd-cli (or sd) on PATH. A reason when there is none. */
export function findSdCli(env: NodeJS.ProcessEnv = process.env): { binary?: string; missing?: string } {
  const given = env.SD_CPP_BIN?.trim();
  if (given) {
    const exists = (() => {
      try {
        return statSync(given).isFile();
      } catch {
        return false;
      }
    })();
    return exists ? { binary: given } : { missing: `SD_CPP_BIN=${given} is not a file` };
  }
  const isFile = (candidate: string) => {
    try {
      return statSync(candidate).isFile();
    } catch {
      return false;
    }
  };
  // sd-server keeps a model loaded and is not what the per-job runner runs.
  const found = findOnPath('image', env.PATH ?? '', process.platform, isFile, env.PATHEXT).find((file) => !/sd-server(\.exe)?$/i.test(file));
  return found ? { binary: found } : { missing: 'no sd.cpp binary: set SD_CPP_BIN=/path/to/sd-cli or put sd-cli on PATH' };
}

/** Follows the device while a run goes, keeping the highest use per stage. */
class StagePeaks {
  readonly peaks: Partial<Record<SdCheckStage, Bytes>> = {};
  private stage: SdCheckStage = 'load';
  private stopWatch: (() => void) | undefined;

  constructor(
    private readonly probe: DeviceProbe,
    private readonly deviceId: string,
    private readonly baseline: Bytes,
  ) {}

  start(intervalMs: number): void {
    this.stopWatch = this.probe.watch(intervalMs, (samples) => {
      const sample = samples.find((s) => s.id === this.deviceId);
      if (!sample) return;
      const above = Math.max(0, sample.used - this.baseline);
      this.peaks[this.stage] = Math.max(this.peaks[this.stage] ?? 0, above);
    });
  }

  progress(p: StageProgress): void {
    if (p.stage === 'saving') return;
    if (p.stage === 'textEncode') this.stage = /loading/i.test(p.message ?? '') ? 'load' : 'textEncode';
    else if (p.stage === 'diffusion' || p.stage === 'vaeDecode') this.stage = p.stage;
  }

  stop(): void {
    this.stopWatch?.();
  }
}

export interface SdCheckOptions {
  binaryPath: string;
  modelPath: string;
  model: ImageModelInfo;
  probe: DeviceProbe;
  deviceId: string;
  deviceKind: DeviceKind;
  outDir: string;
  sizes: number[];
  steps: number;
  /** Device sampling interval (default 100 ms). */
  sampleMs?: number;
  onLog?: (line: string) => void;
}

export async function runSdCheck(options: SdCheckOptions): Promise<SdCheckRun[]> {
  const runner = new SdCliRunner({ binaryPath: options.binaryPath, onLog: options.onLog ? (line) => options.onLog?.(line) : undefined });
  const help = await runner.capabilities();
  const backend: ImageBackend = help.capabilities.backend !== 'unknown' ? help.capabilities.backend : options.deviceKind === 'nvidia' ? 'cuda' : 'unknown';
  const runs: SdCheckRun[] = [];
  for (const size of options.sizes) {
    for (const tiling of help.capabilities.vaeTiling ? [false, true] : [false]) {
      const placement: ImagePlacement = { ...GPU_PLACEMENT, vaeTiling: tiling, flashAttention: false };
      const job: ImageJobSpec = {
        kind: 'image',
        modelPath: options.modelPath,
        prompt: 'a lighthouse on a cliff at dusk, oil painting',
        width: size,
        height: size,
        batch: 1,
        steps: options.steps,
        seed: 42,
        outputPath: join(options.outDir, `sd15-${size}-${tiling ? 'tiled' : 'whole'}.png`),
      };
      const costs = estimateImageJob(options.model, { width: size, height: size, batch: 1, frames: 1, steps: options.steps }, { backend });
      // Let the driver's figure settle after the previous run's process exit.
      await new Promise((resolve) => setTimeout(resolve, 1500));
      const baseline = (await options.probe.sample()).find((s) => s.id === options.deviceId)?.used ?? 0;
      const peaks = new StagePeaks(options.probe, options.deviceId, baseline);
      peaks.start(options.sampleMs ?? 100);
      const started = Date.now();
      const result = await runner
        .run(job, checkPlan(options.deviceId, placement), (p) => peaks.progress(p), AbortSignal.timeout(20 * 60_000))
        .finally(() => peaks.stop());
      runs.push({
        width: size,
        height: size,
        tiling,
        outcome: result.ok ? 'ok' : `${result.failure}: ${result.message}`,
        tookMs: Date.now() - started,
        measuredPeak: peaks.peaks,
        estimatedPeak: estimatedStagePeaks(costs, placement),
        buffers: bufferRows(result.measured, costs, placement),
      });
    }
  }
  return runs;
}

/** A plan that runs everything on the GPU, as sd.cpp does by default (tiling as asked). */
function checkPlan(deviceId: string, placement: ImagePlacement): Plan {
  return {
    jobId: 'gpu-check',
    deviceId,
    fits: true,
    placement,
    yields: [],
    stages: [],
    peak: 0,
    available: 0,
    extraTimeMs: 0,
    reason: 'real-GPU check: fixed placement',
    suggestions: [],
  };
}

/** sd.cpp keeps every weight on the GPU for the whole run and frees each stage's compute buffer after it. */
export function estimatedStagePeaks(costs: ImageJobCosts, placement: ImagePlacement): Record<SdCheckStage, Bytes> {
  const weights = costs.weights.textEncoder + costs.weights.diffusion + costs.weights.vae;
  return {
    load: weights,
    textEncode: weights + costs.compute.textEncoder,
    diffusion: weights + (placement.flashAttention ? costs.compute.diffusionFlash : costs.compute.diffusion),
    vaeDecode: weights + (placement.vaeTiling ? costs.compute.vaeDecodeTiled : costs.compute.vaeDecode),
  };
}

export function bufferRows(measured: readonly MeasuredBuffer[], costs: ImageJobCosts, placement: ImagePlacement): SdCheckRun['buffers'] {
  const logged = (key: string) => {
    const hits = measured.filter((b) => b.key === key && b.where === 'gpu');
    return hits.length > 0 ? Math.max(...hits.map((b) => b.bytes)) : undefined;
  };
  const componentWeights = measured.filter((b) => b.key.endsWith('.weights') && b.key !== 'total.weights' && b.where === 'gpu');
  const totalWeights = logged('total.weights') ?? (componentWeights.length > 0 ? componentWeights.reduce((sum, b) => sum + b.bytes, 0) : undefined);
  return [
    { key: 'textEncoder.compute', logged: logged('textEncoder.compute'), estimated: costs.compute.textEncoder },
    {
      key: 'diffusion.compute',
      logged: logged('diffusion.compute'),
      estimated: placement.flashAttention ? costs.compute.diffusionFlash : costs.compute.diffusion,
    },
    { key: 'vae.compute', logged: logged('vae.compute'), estimated: placement.vaeTiling ? costs.compute.vaeDecodeTiled : costs.compute.vaeDecode },
    { key: 'textEncoder.weights', logged: logged('textEncoder.weights'), estimated: costs.weights.textEncoder },
    { key: 'diffusion.weights', logged: logged('diffusion.weights'), estimated: costs.weights.diffusion },
    { key: 'vae.weights', logged: logged('vae.weights'), estimated: costs.weights.vae },
    { key: 'weights (VRAM total)', logged: totalWeights, estimated: costs.weights.textEncoder + costs.weights.diffusion + costs.weights.vae },
  ];
}

/** `+12.3%`: how far the estimate is from the measurement (positive: the estimate is larger, the safe side). */
function errorOf(estimated: number, measured: number | undefined): string {
  if (measured === undefined || measured <= 0) return '-';
  const percent = ((estimated - measured) / measured) * 100;
  return `${percent >= 0 ? '+' : ''}${percent.toFixed(1)}%`;
}

export function formatSdCheck(runs: readonly SdCheckRun[]): string {
  const lines: string[] = [];
  const cell = (text: string, width: number) => text.padEnd(width);
  for (const run of runs) {
    lines.push('', `sd.cpp ${run.width}x${run.height}, VAE tiling ${run.tiling ? 'on' : 'off'}: ${run.outcome} (${(run.tookMs / 1000).toFixed(1)} s)`);
    lines.push(`  ${cell('stage', 21)}${cell('measured peak', 15)}${cell('estimated', 12)}error`);
    for (const stage of SD_STAGES) {
      const measured = run.measuredPeak[stage];
      lines.push(
        `  ${cell(stage, 21)}${cell(measured === undefined ? '-' : formatBytes(measured), 15)}${cell(formatBytes(run.estimatedPeak[stage]), 12)}${errorOf(run.estimatedPeak[stage], measured)}`,
      );
    }
    lines.push(`  ${cell('log buffer', 21)}${cell('logged', 15)}${cell('estimated', 12)}error`);
    for (const buffer of run.buffers) {
      lines.push(
        `  ${cell(buffer.key, 21)}${cell(buffer.logged === undefined ? '-' : formatBytes(buffer.logged), 15)}${cell(formatBytes(buffer.estimated), 12)}${errorOf(buffer.estimated, buffer.logged)}`,
      );
    }
  }
  lines.push(
    '',
    'Measured peaks are device use above the idle baseline while the stage ran (nvidia-smi sampling), so they include',
    "the sd.cpp process's own CUDA context and lag stage changes by up to one sample; the logged buffers are exact.",
  );
  return lines.join('\n');
}
