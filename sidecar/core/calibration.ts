/**
 * Calibration: what the workers really measured (buffer sizes from their logs, transition times), stored per
 * model + backend + key + setting. Once a measurement exists it beats the estimators' prior:
 * 1. a record for exactly this setting gives its value;
 * 2. otherwise a record of a quantity that is linear in something (pixels for `vae.compute`, KV elements for
 *    `llm.kv`) is scaled from the nearest measured setting;
 * 3. otherwise the newest record's measured/estimated ratio corrects the prior;
 * 4. otherwise the prior stands.
 *
 * The store is a plain in-memory class; `loadCalibrationFile`/`saveCalibrationFile` persist it for the shell
 * (atomic write: temporary file + rename, so a crash never leaves half a file).
 */

import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { MeasuredBuffer } from './ports';
import type { ImageJobCosts, ImagePlacement, LlmCosts, Millis } from './types';

export type CalibrationUnit = 'bytes' | 'ms';

export interface CalibrationRecord {
  /** The model the figure belongs to (its path, as given to the estimator). */
  model: string;
  /** `cuda`, `vulkan`, `rocm`, `metal`, `cpu` (buffers in RAM), or `unknown`. */
  backend: string;
  /** What was measured, e.g. `vae.compute`, `llm.kv`, `time.llmReload` (see CALIBRATION_KEYS). */
  key: string;
  /** Under which setting, e.g. `1024x1024`, `tile=32x32`, `ctx=8192,kv=f16,ngl=33` (see the *Setting helpers). */
  setting: string;
  value: number;
  unit: CalibrationUnit;
  /** The quantity the value is linear in at this setting (pixels, KV bytes), when it is. */
  scale?: number;
  /** The estimator's prior for this setting when the value was measured (for ratio correction and the panel). */
  estimate?: number;
  /** Where the value came from: the log line, or `published: ...`. */
  source: string;
  recordedAt: Millis;
}

/** What the estimators read: the records of one key, newest first. */
export interface CalibrationLookup {
  records(model: string, backend: string, key: string): readonly CalibrationRecord[];
}

export interface CalibrationQuery {
  model: string;
  backend: string;
  key: string;
  setting: string;
  /** This setting's linear quantity, for keys that scale linearly. */
  scale?: number;
}

export interface Calibrated {
  value: number;
  calibrated: boolean;
  /** The record used, when one was. */
  source?: string;
}

export const CALIBRATION_KEYS = {
  textEncoderWeights: 'textEncoder.weights',
  diffusionWeights: 'diffusion.weights',
  vaeWeights: 'vae.weights',
  textEncoderCompute: 'textEncoder.compute',
  diffusionCompute: 'diffusion.compute',
  diffusionComputeFlash: 'diffusion.computeFlash',
  vaeCompute: 'vae.compute',
  vaeComputeTiled: 'vae.computeTiled',
  llmWeights: 'llm.weights',
  llmKv: 'llm.kv',
  llmCompute: 'llm.compute',
  textEncodeMs: 'time.textEncode',
  textEncodeCpuMs: 'time.textEncodeCpu',
  samplingStepMs: 'time.samplingStep',
  vaeDecodeMs: 'time.vaeDecode',
  vaeDecodeCpuMs: 'time.vaeDecodeCpu',
  llmReloadMs: 'time.llmReload',
  llmContextMs: 'time.llmContext',
  llmStartMs: 'time.llmStart',
} as const;

/** `1024x1024`, or `832x480x33f` for a video of 33 frames. */
export function imageSizeSetting(width: number, height: number, frames = 1): string {
  return frames > 1 ? `${width}x${height}x${frames}f` : `${width}x${height}`;
}

export function tileSetting(tileLatent: number): string {
  return `tile=${tileLatent}x${tileLatent}`;
}

export function llmLayersSetting(gpuLayers: number): string {
  return `ngl=${gpuLayers}`;
}

export function llmKvSetting(contextSize: number, kvType: string, gpuLayers: number): string {
  return `ctx=${contextSize},kv=${kvType},ngl=${gpuLayers}`;
}

export function llmComputeSetting(contextSize: number, ubatch: number, flashAttention: boolean): string {
  return `ctx=${contextSize},ub=${ubatch},fa=${flashAttention ? 1 : 0}`;
}

/** The calibrated value for a query, or the prior when nothing was measured (pure). */
export function calibratedValue(lookup: CalibrationLookup | undefined, query: CalibrationQuery, prior: number): Calibrated {
  const records = lookup?.records(query.model, query.backend, query.key) ?? [];
  const exact = records.find((record) => record.setting === query.setting);
  if (exact) return { value: exact.value, calibrated: true, source: exact.source };

  if (query.scale !== undefined && query.scale > 0) {
    const scalable = records.filter((record) => record.scale !== undefined && record.scale > 0);
    const nearest = scalable.sort((a, b) => distance(a.scale!, query.scale!) - distance(b.scale!, query.scale!))[0];
    if (nearest) return { value: (nearest.value / nearest.scale!) * query.scale, calibrated: true, source: nearest.source };
  }

  const ratioRecord = records.find((record) => record.estimate !== undefined && record.estimate > 0);
  if (ratioRecord) return { value: prior * (ratioRecord.value / ratioRecord.estimate!), calibrated: true, source: ratioRecord.source };
  return { value: prior, calibrated: false };
}

/** Distance between two scales on a log axis: 2x larger and 2x smaller are equally far. */
function distance(a: number, b: number): number {
  return Math.abs(Math.log(a / b));
}

// ---------------------------------------------------------------------------------------------------------------
// The store

/** Records kept per model + backend + key; the oldest go first. */
const MAX_RECORDS_PER_KEY = 32;

export interface CalibrationFileContent {
  version: 1;
  records: CalibrationRecord[];
}

export class CalibrationStore implements CalibrationLookup {
  private readonly byKey = new Map<string, CalibrationRecord[]>();

  constructor(records: Iterable<CalibrationRecord> = []) {
    for (const record of records) this.add(record);
  }

  /** Adds a measurement; the newest record for the same setting replaces older ones. Returns false when invalid. */
  add(record: CalibrationRecord): boolean {
    if (!isValidRecord(record)) return false;
    const id = storeKey(record.model, record.backend, record.key);
    const kept = (this.byKey.get(id) ?? []).filter((other) => other.setting !== record.setting || other.recordedAt > record.recordedAt);
    if (kept.some((other) => other.setting === record.setting)) return false;
    kept.push({ ...record });
    kept.sort((a, b) => b.recordedAt - a.recordedAt);
    this.byKey.set(id, kept.slice(0, MAX_RECORDS_PER_KEY));
    return true;
  }

  addAll(records: Iterable<CalibrationRecord>): number {
    let added = 0;
    for (const record of records) if (this.add(record)) added++;
    return added;
  }

  records(model: string, backend: string, key: string): readonly CalibrationRecord[] {
    return this.byKey.get(storeKey(model, backend, key)) ?? [];
  }

  /** Every record, newest first. */
  all(): CalibrationRecord[] {
    return [...this.byKey.values()].flat().sort((a, b) => b.recordedAt - a.recordedAt);
  }

  get size(): number {
    let count = 0;
    for (const records of this.byKey.values()) count += records.length;
    return count;
  }

  toJSON(): CalibrationFileContent {
    return { version: 1, records: this.all() };
  }

  /** A store from parsed file content; rows that are not valid records are dropped. */
  static fromJSON(content: unknown): CalibrationStore {
    const records = (content as Partial<CalibrationFileContent> | null)?.records;
    return new CalibrationStore(Array.isArray(records) ? records : []);
  }
}

function storeKey(model: string, backend: string, key: string): string {
  return JSON.stringify([model, backend, key]);
}

function isValidRecord(record: unknown): record is CalibrationRecord {
  if (typeof record !== 'object' || record === null) return false;
  const r = record as Record<string, unknown>;
  const finite = (value: unknown) => typeof value === 'number' && Number.isFinite(value) && value >= 0;
  const text = (value: unknown) => typeof value === 'string';
  return (
    text(r.model) &&
    text(r.backend) &&
    text(r.key) &&
    r.key !== '' &&
    text(r.setting) &&
    finite(r.value) &&
    (r.unit === 'bytes' || r.unit === 'ms') &&
    (r.scale === undefined || finite(r.scale)) &&
    (r.estimate === undefined || finite(r.estimate)) &&
    text(r.source) &&
    finite(r.recordedAt)
  );
}

// ---------------------------------------------------------------------------------------------------------------
// From worker measurements to records

export interface ImageRunContext {
  model: string;
  backend: string;
  width: number;
  height: number;
  frames?: number;
  placement: Pick<ImagePlacement, 'vaeTiling' | 'flashAttention'>;
  /** sd.cpp tile size in latent pixels, when tiling. */
  tileLatent?: number;
  /** The estimate the plan used, stored beside each measurement. */
  estimate?: ImageJobCosts;
  source: string;
  at: Millis;
}

/**
 * Records for the buffers an image worker logged. `vae.compute` under a tiled plan is stored as
 * `vae.computeTiled`, and `diffusion.compute` under flash attention as `diffusion.computeFlash`. Buffers in RAM
 * (`where: 'cpu'`) are stored under the `cpu` backend.
 */
export function recordsFromImageRun(context: ImageRunContext, measured: readonly MeasuredBuffer[]): CalibrationRecord[] {
  const frames = context.frames ?? 1;
  const size = imageSizeSetting(context.width, context.height, frames);
  const pixels = context.width * context.height * frames;
  const costs = context.estimate;
  return measured.map((buffer) => {
    let key = buffer.key;
    let setting = '';
    let scale: number | undefined;
    let estimate: number | undefined;
    if (buffer.key === CALIBRATION_KEYS.vaeCompute && context.placement.vaeTiling) {
      key = CALIBRATION_KEYS.vaeComputeTiled;
      setting = tileSetting(context.tileLatent ?? 32);
      estimate = costs?.compute.vaeDecodeTiled;
    } else if (buffer.key === CALIBRATION_KEYS.vaeCompute) {
      setting = size;
      scale = pixels;
      estimate = costs?.compute.vaeDecode;
    } else if (buffer.key === CALIBRATION_KEYS.diffusionCompute) {
      key = context.placement.flashAttention ? CALIBRATION_KEYS.diffusionComputeFlash : buffer.key;
      setting = size;
      estimate = context.placement.flashAttention ? costs?.compute.diffusionFlash : costs?.compute.diffusion;
    } else if (buffer.key === CALIBRATION_KEYS.textEncoderCompute) {
      estimate = costs?.compute.textEncoder;
    } else if (buffer.key.endsWith('.weights')) {
      const component = buffer.key.slice(0, -'.weights'.length) as keyof ImageJobCosts['weights'];
      estimate = costs?.weights[component];
    }
    const backend = buffer.where === 'cpu' ? 'cpu' : context.backend;
    return { model: context.model, backend, key, setting, value: buffer.bytes, unit: 'bytes', scale, estimate, source: context.source, recordedAt: context.at };
  });
}

export interface LlmRunContext {
  model: string;
  backend: string;
  gpuLayers: number;
  contextSize: number;
  kvType: string;
  /** Bytes per KV element of `kvType`, so that KV records scale across context sizes and cache types. */
  kvBytesPerElement: number;
  /** Blocks whose KV cache sits on the GPU. */
  gpuBlocks: number;
  ubatch: number;
  flashAttention: boolean;
  estimate?: LlmCosts;
  source: string;
  at: Millis;
}

/** Records for the buffers the LLM worker reported (`llm.weights`, `llm.kv`, `llm.compute`). */
export function recordsFromLlmRun(context: LlmRunContext, measured: readonly MeasuredBuffer[]): CalibrationRecord[] {
  return measured.map((buffer) => {
    const base = { model: context.model, backend: buffer.where === 'cpu' ? 'cpu' : context.backend, key: buffer.key, value: buffer.bytes };
    const common = { unit: 'bytes' as const, source: context.source, recordedAt: context.at };
    switch (buffer.key) {
      case CALIBRATION_KEYS.llmWeights:
        return { ...base, ...common, setting: llmLayersSetting(context.gpuLayers), estimate: context.estimate?.weights };
      case CALIBRATION_KEYS.llmKv:
        return {
          ...base,
          ...common,
          setting: llmKvSetting(context.contextSize, context.kvType, context.gpuLayers),
          scale: context.contextSize * context.gpuBlocks * context.kvBytesPerElement,
          estimate: context.estimate?.kvCache,
        };
      case CALIBRATION_KEYS.llmCompute:
        return {
          ...base,
          ...common,
          setting: llmComputeSetting(context.contextSize, context.ubatch, context.flashAttention),
          estimate: context.estimate?.compute,
        };
      default:
        return { ...base, ...common, setting: '' };
    }
  });
}

/** A measured transition time (e.g. `time.llmReload` after a warm <- cold move). */
export function timeRecord(
  context: { model: string; backend: string; source: string; at: Millis },
  key: string,
  ms: number,
  options: { setting?: string; scale?: number; estimate?: number } = {},
): CalibrationRecord {
  return { model: context.model, backend: context.backend, key, setting: options.setting ?? '', value: ms, unit: 'ms', ...options, source: context.source, recordedAt: context.at };
}

// ---------------------------------------------------------------------------------------------------------------
// Estimate vs measured, for the panel and the accuracy table

export interface EstimateRow {
  model: string;
  backend: string;
  key: string;
  setting: string;
  estimate: number;
  measured: number;
  unit: CalibrationUnit;
  /** (estimate - measured) / measured, in percent: positive when the estimate was on the safe side. */
  errorPct: number;
  source: string;
}

export function estimateRow(fields: Omit<EstimateRow, 'errorPct'>): EstimateRow {
  const errorPct = fields.measured > 0 ? ((fields.estimate - fields.measured) / fields.measured) * 100 : 0;
  return { ...fields, errorPct };
}

/** One row per record that carries the estimate it was measured against. */
export function estimateVsMeasured(records: readonly CalibrationRecord[]): EstimateRow[] {
  return records.flatMap((record) =>
    record.estimate === undefined
      ? []
      : [
          estimateRow({
            model: record.model,
            backend: record.backend,
            key: record.key,
            setting: record.setting,
            estimate: record.estimate,
            measured: record.value,
            unit: record.unit,
            source: record.source,
          }),
        ],
  );
}

// ---------------------------------------------------------------------------------------------------------------
// Persistence (for the shell)

/**
 * Loads the calibration file. A missing file is an empty store. A file that cannot be parsed is moved aside
 * (`<file>.corrupt-<time>`) so that it is neither lost nor read again, and the store starts empty; `problem` says so.
 */
export async function loadCalibrationFile(file: string, now: Millis = Date.now()): Promise<{ store: CalibrationStore; problem?: string }> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { store: new CalibrationStore() };
    throw error;
  }
  try {
    return { store: CalibrationStore.fromJSON(JSON.parse(text)) };
  } catch {
    const aside = `${file}.corrupt-${now}`;
    await rename(file, aside);
    return { store: new CalibrationStore(), problem: `Calibration file ${file} was not valid JSON; moved it to ${aside} and started afresh.` };
  }
}

/** Writes the store atomically: a temporary file in the same folder, then a rename over the old file. */
export async function saveCalibrationFile(store: CalibrationStore, file: string): Promise<void> {
  await mkdir(dirname(file), { recursive: true });
  const temporary = `${file}.${process.pid}.${Date.now()}.tmp`;
  try {
    await writeFile(temporary, `${JSON.stringify(store.toJSON(), null, 1)}\n`, { encoding: 'utf8', flush: true });
    await rename(temporary, file);
  } catch (error) {
    await rm(temporary, { force: true });
    throw error;
  }
}
