/**
 * Estimate against measurement, row by row, for the accuracy table (bench/estimator-accuracy.ts) and its regression
 * test. Pure: the published figures come from publishedFigures.ts, the measurements from calibration records; how
 * an estimate is computed for a record (reading the model file) is the caller's business.
 */

import type { ImageModelInfo } from '../../models/imageModelInfo';
import type { LlmModelMeta } from '../../models/llmModelMeta';
import { CALIBRATION_KEYS, type CalibrationRecord, type CalibrationUnit } from '../calibration';
import { MiB, type ImageComponent } from '../types';
import { KV_BYTES_PER_ELEMENT, VAE_SPATIAL_SCALE } from './figures';
import { estimateImageJob, vaeDecodeBytes, type ImageBackend } from './imageEstimator';
import { kvCacheBytes, llmComputeBytes, llmWeightBytes, offloadableLayers, type KvCacheType } from './llmEstimator';

export type AccuracyCategory = 'vaeDecode' | 'diffusion' | 'llmWeights' | 'llmKv' | 'imageWeights' | 'wholeJob' | 'otherCompute' | 'time';

export interface CategoryInfo {
  title: string;
  /** Largest |error| in percent a row may have; undefined: no target, the rows are shown for information. */
  targetPct?: number;
  /** Where the target comes from. */
  targetSource: string;
}

/** Issue 5 sets the first four targets; the others are ours, or none. */
export const ACCURACY_CATEGORIES: Record<AccuracyCategory, CategoryInfo> = {
  vaeDecode: { title: 'VAE decode buffer', targetPct: 10, targetSource: 'issue 5' },
  diffusion: { title: 'Diffusion compute buffer', targetPct: 10, targetSource: 'issue 5' },
  llmWeights: { title: 'LLM weights', targetPct: 5, targetSource: 'issue 5' },
  llmKv: { title: 'KV cache', targetPct: 5, targetSource: 'issue 5' },
  imageWeights: { title: 'Image model weights', targetPct: 10, targetSource: 'ours: the quotes have one or two significant digits' },
  wholeJob: { title: 'Whole job in use', targetPct: 10, targetSource: 'ours: quoted to one or two digits, or as a range' },
  otherCompute: { title: 'Other compute buffers', targetSource: 'none' },
  time: { title: 'Times', targetSource: 'none' },
};

export const CATEGORY_ORDER: AccuracyCategory[] = ['vaeDecode', 'diffusion', 'llmWeights', 'llmKv', 'imageWeights', 'wholeJob', 'otherCompute', 'time'];

export type AccuracyStatus = 'PASS' | 'MISS' | 'INFO' | 'NOT SCORED';

export interface Range {
  min: number;
  max: number;
}

export interface AccuracyRow {
  category: AccuracyCategory;
  /** What was measured, e.g. `SDXL VAE decode, CUDA`. */
  what: string;
  /** Under which setting, e.g. `1024x1024`, `ctx=8192`. */
  setting: string;
  estimate: number;
  /** A single figure, or a range when the source gives one. */
  measured: number | Range;
  unit: CalibrationUnit;
  /** The figure as the source writes it, e.g. `6656.25 MB`. */
  quoted?: string;
  /** (estimate - measured) / measured in percent, positive on the safe side; for a range, the distance to it. */
  errorPct?: number;
  limitPct?: number;
  status: AccuracyStatus;
  /** Where the figure comes from: `memory-facts.md:10`, or the calibration file and the record's source. */
  source: string;
  /** How the estimate relates to the figure: derived from shapes, a held-out check of a fit, ... */
  basis: string;
  /** Why a row misses, or is not scored. */
  note?: string;
}

export interface RowInput extends Omit<AccuracyRow, 'errorPct' | 'limitPct' | 'status'> {
  /** False: shown, but not counted (e.g. a figure of an older build than the estimator follows). */
  scored?: boolean;
}

/** Error and status of a row against its category's target. */
export function scoreRow(input: RowInput): AccuracyRow {
  const { scored = true, ...row } = input;
  const limitPct = ACCURACY_CATEGORIES[row.category].targetPct;
  const errorPct = errorPercent(row.estimate, row.measured);
  let status: AccuracyStatus;
  if (!scored) status = 'NOT SCORED';
  else if (errorPct === undefined || limitPct === undefined) status = 'INFO';
  else if (typeof row.measured !== 'number') status = errorPct === 0 ? 'PASS' : 'MISS';
  else status = Math.abs(errorPct) <= limitPct ? 'PASS' : 'MISS';
  return { ...row, errorPct, limitPct: typeof row.measured === 'number' ? limitPct : undefined, status };
}

/** Percent error against a figure, or the distance to a range (0 inside it); undefined when nothing to compare. */
export function errorPercent(estimate: number, measured: number | Range): number | undefined {
  if (!Number.isFinite(estimate)) return undefined;
  if (typeof measured === 'number') return measured > 0 ? ((estimate - measured) / measured) * 100 : undefined;
  if (estimate < measured.min) return ((estimate - measured.min) / measured.min) * 100;
  if (estimate > measured.max) return ((estimate - measured.max) / measured.max) * 100;
  return 0;
}

export interface CategorySummary {
  category: AccuracyCategory;
  title: string;
  targetPct?: number;
  rows: number;
  passed: number;
  missed: number;
  /** Largest |error| (or distance to a range) of the rows that are not set aside. */
  worstPct?: number;
  /** PASS: every scored row passes; MISS: one does not; INFO: no target; NO DATA: no scored row. */
  verdict: 'PASS' | 'MISS' | 'INFO' | 'NO DATA';
}

export function summarize(rows: readonly AccuracyRow[]): CategorySummary[] {
  return CATEGORY_ORDER.map((category) => {
    const info = ACCURACY_CATEGORIES[category];
    const mine = rows.filter((row) => row.category === category);
    const scored = mine.filter((row) => row.status === 'PASS' || row.status === 'MISS');
    const passed = scored.filter((row) => row.status === 'PASS').length;
    const errors = mine.filter((row) => row.status !== 'NOT SCORED' && row.errorPct !== undefined).map((row) => Math.abs(row.errorPct!));
    const verdict = scored.length === 0 ? (mine.some((row) => row.status === 'INFO') ? 'INFO' : 'NO DATA') : passed === scored.length ? 'PASS' : 'MISS';
    return {
      category,
      title: info.title,
      targetPct: info.targetPct,
      rows: mine.length,
      passed,
      missed: scored.length - passed,
      worstPct: errors.length ? Math.max(...errors) : undefined,
      verdict,
    };
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Calibration records

/** The category a calibration key belongs to. */
export function categoryOfKey(key: string): AccuracyCategory {
  switch (key) {
    case CALIBRATION_KEYS.vaeCompute:
    case CALIBRATION_KEYS.vaeComputeTiled:
      return 'vaeDecode';
    case CALIBRATION_KEYS.diffusionCompute:
    case CALIBRATION_KEYS.diffusionComputeFlash:
      return 'diffusion';
    case CALIBRATION_KEYS.llmWeights:
      return 'llmWeights';
    case CALIBRATION_KEYS.llmKv:
      return 'llmKv';
    case CALIBRATION_KEYS.textEncoderWeights:
    case CALIBRATION_KEYS.diffusionWeights:
    case CALIBRATION_KEYS.vaeWeights:
      return 'imageWeights';
    default:
      return key.startsWith('time.') ? 'time' : 'otherCompute';
  }
}

/** What the caller could work out as the estimator's prior for one record. */
export type RecordPrior = { value: number; basis: string; /** Shown when the row misses. */ note?: string } | { missing: string };

/**
 * One row per record. `priorOf` gives the estimator's figure for the record's model and setting without any
 * calibration (a calibrated estimate would only repeat the measurement), or says why there is none.
 */
export function calibrationRows(records: readonly CalibrationRecord[], priorOf: (record: CalibrationRecord) => RecordPrior): AccuracyRow[] {
  return records.map((record) => {
    const prior = priorOf(record);
    const base = {
      category: categoryOfKey(record.key),
      what: `${record.key} (${record.backend}) ${shortModel(record.model)}`,
      setting: record.setting || '-',
      measured: record.value,
      unit: record.unit,
      source: record.source,
    };
    if ('missing' in prior) return { ...base, estimate: Number.NaN, errorPct: undefined, status: 'INFO' as const, basis: 'no estimate', note: prior.missing };
    const row = scoreRow({ ...base, estimate: prior.value, basis: prior.basis });
    const note = prior.note ?? knownCause(record);
    return row.status === 'MISS' && note ? { ...row, note } : row;
  });
}

/**
 * Whether a record's stored `estimate` is the estimator's figure for the same buffer. The sidecar stores the
 * device-side estimate beside every buffer of a run, host buffers (backend `cpu`) included; when the model has
 * layers on the device, a host buffer's stored figure is another buffer's. With no layer on the device the
 * device-side figures are 0, so a positive stored estimate there was written for the host buffer itself.
 */
export function storedEstimateComparable(record: CalibrationRecord, offloadedRun: boolean): boolean {
  if (record.estimate === undefined || !(record.estimate > 0)) return false;
  return record.backend !== 'cpu' || !record.key.startsWith('llm.') || !offloadedRun;
}

/** Whether the records show device-side LLM buffers for this model (so its `cpu` records are the host share). */
export function llmOffloaded(record: CalibrationRecord, all: readonly CalibrationRecord[]): boolean {
  return all.some((other) => other.model === record.model && other.key.startsWith('llm.') && other.backend !== 'cpu');
}

const HOST_WEIGHTS_NOTE =
  'llama.cpp\'s CPU backend keeps a second, repacked copy of quantised block weights (its CPU_REPACK buffer, e.g. ' +
  'q4_0 as q4_0_8x8 on AVX2) beside the mapped file, and the sidecar adds both buffers up; the estimate counts the ' +
  'tensors once. Host memory only: device buffers are not repacked.';

/** A known reason for a record to differ from its estimate, shown when the row misses. */
export function knownCause(record: CalibrationRecord): string | undefined {
  if (record.key === CALIBRATION_KEYS.llmWeights && record.backend === 'cpu') return HOST_WEIGHTS_NOTE;
  return undefined;
}

/** `ctx=8192,kv=f16,ngl=33` -> its fields. */
export function settingFields(setting: string): Map<string, string> {
  return new Map(
    setting
      .split(',')
      .map((part) => part.split('='))
      .filter((pair): pair is [string, string] => pair.length === 2),
  );
}

const wholeNumber = (text: string | undefined): number | undefined => (text !== undefined && /^\d+$/.test(text) ? Number(text) : undefined);

/**
 * The LLM estimator's figure for a record's buffer, from the model's shapes. Records of backend `cpu` are host
 * buffers: the weights and KV cache of the layers left on the host, and the compute buffer of a run with no layer
 * on the device (`offloadedRun` false; a host compute buffer beside an offloaded model has no estimate).
 */
export function llmRecordPrior(meta: LlmModelMeta, record: CalibrationRecord, offloadedRun: boolean): RecordPrior {
  const fields = settingFields(record.setting);
  const host = record.backend === 'cpu';
  const all = offloadableLayers(meta);
  const ngl = wholeNumber(fields.get('ngl'));
  const ctx = wholeNumber(fields.get('ctx'));
  switch (record.key) {
    case CALIBRATION_KEYS.llmWeights:
      if (ngl === undefined) break;
      return host
        ? { value: meta.tensorBytes - llmWeightBytes(meta, ngl), basis: 'GGUF tensor sizes of the layers left on the host' }
        : { value: llmWeightBytes(meta, ngl), basis: 'GGUF tensor sizes of the offloaded layers' };
    case CALIBRATION_KEYS.llmKv: {
      const kv = fields.get('kv');
      if (ngl === undefined || ctx === undefined || !kv || !(kv in KV_BYTES_PER_ELEMENT)) break;
      const type = kv as KvCacheType;
      const value = host ? kvCacheBytes(meta, ctx, type, all) - kvCacheBytes(meta, ctx, type, ngl) : kvCacheBytes(meta, ctx, type, ngl);
      return { value, basis: 'layer shapes from the GGUF header' };
    }
    case CALIBRATION_KEYS.llmCompute: {
      const ubatch = wholeNumber(fields.get('ub'));
      if (ctx === undefined || ubatch === undefined) break;
      if (host && offloadedRun) return { missing: 'host compute buffer of a model with layers on the device: not estimated' };
      return { value: llmComputeBytes(meta, ctx, { batchSize: ubatch, flashAttention: fields.get('fa') === '1' }), basis: 'worst-case graph (figures.ts)' };
    }
  }
  return { missing: `no estimate for ${record.key} at "${record.setting}"` };
}

/** The image estimator's figure for a record's buffer: the setting gives the image size (`1024x1024`, `832x480x33f`). */
export function imageRecordPrior(model: ImageModelInfo, record: CalibrationRecord): RecordPrior {
  const size = /^(\d+)x(\d+)(?:x(\d+)f)?$/.exec(record.setting);
  const tile = /^tile=(\d+)x\1$/.exec(record.setting);
  const backend = record.backend as ImageBackend;
  const job = size ? { width: Number(size[1]), height: Number(size[2]), batch: 1, frames: Number(size[3] ?? 1) } : { width: 1024, height: 1024, batch: 1, frames: 1 };
  const costs = estimateImageJob(model, job, { backend });
  const component = record.key.endsWith('.weights') ? (record.key.slice(0, -'.weights'.length) as ImageComponent) : undefined;
  if (component && component in costs.weights) return { value: costs.weights[component], basis: 'tensor sizes of the model file (split parts are not recorded)' };
  switch (record.key) {
    case CALIBRATION_KEYS.textEncoderCompute:
      return { value: costs.compute.textEncoder, basis: 'assumed prior (figures.ts)' };
    case CALIBRATION_KEYS.vaeComputeTiled:
      if (!tile) break;
      return { value: vaeDecodeBytes((Number(tile[1]) * VAE_SPATIAL_SCALE) ** 2, backend), basis: 'decoder shapes, one tile' };
  }
  if (!size) return { missing: `no estimate for ${record.key} at "${record.setting}"` };
  switch (record.key) {
    case CALIBRATION_KEYS.vaeCompute:
      return { value: costs.compute.vaeDecode, basis: 'decoder shapes' };
    case CALIBRATION_KEYS.diffusionCompute:
      return { value: costs.compute.diffusion, basis: 'ComfyUI formula + attention and convolution shapes' };
    case CALIBRATION_KEYS.diffusionComputeFlash:
      return { value: costs.compute.diffusionFlash, basis: 'ComfyUI formula + convolution shapes' };
  }
  return { missing: `no estimate for ${record.key} at "${record.setting}"` };
}

function shortModel(model: string): string {
  const parts = model.split(/[\\/]/);
  return parts[parts.length - 1] || model;
}

// ---------------------------------------------------------------------------------------------------------------
// Rendering

export function formatAmount(value: number | Range, unit: CalibrationUnit): string {
  if (typeof value !== 'number') return `${formatAmount(value.min, unit)} - ${formatAmount(value.max, unit)}`;
  if (!Number.isFinite(value)) return '-';
  if (unit === 'ms') return `${Math.round(value)} ms`;
  return `${(value / MiB).toFixed(2)} MiB`;
}

export function formatError(row: AccuracyRow): string {
  if (row.errorPct === undefined) return '-';
  const sign = row.errorPct > 0 ? '+' : '';
  const text = `${sign}${row.errorPct.toFixed(1)}%`;
  return typeof row.measured === 'number' ? text : row.errorPct === 0 ? 'in range' : `${text} outside`;
}

function formatTarget(row: AccuracyRow): string {
  if (row.status === 'NOT SCORED' || ACCURACY_CATEGORIES[row.category].targetPct === undefined) return '-';
  if (typeof row.measured !== 'number') return 'in range';
  return row.limitPct === undefined ? '-' : `±${row.limitPct}%`;
}

const COLUMNS = ['#', 'Category', 'What', 'Setting', 'Estimate', 'Measured', 'Error', 'Target', 'Status', 'Source'] as const;

function cells(row: AccuracyRow, index: number): string[] {
  const measured = formatAmount(row.measured, row.unit) + (row.quoted ? ` (${row.quoted})` : '');
  return [
    String(index + 1),
    ACCURACY_CATEGORIES[row.category].title,
    row.what,
    row.setting,
    formatAmount(row.estimate, row.unit),
    measured,
    formatError(row),
    formatTarget(row),
    row.status,
    row.source,
  ];
}

/** A plain-text table with aligned columns, for the terminal. */
export function textTable(rows: readonly AccuracyRow[]): string {
  const table = [COLUMNS.slice(), ...rows.map(cells)];
  const widths = COLUMNS.map((_, column) => Math.max(...table.map((line) => line[column].length)));
  return table.map((line) => line.map((cell, column) => cell.padEnd(widths[column])).join('  ').trimEnd()).join('\n');
}

export function textSummary(summaries: readonly CategorySummary[]): string {
  return summaries
    .filter((summary) => summary.rows > 0)
    .map((summary) => {
      const worst = summary.worstPct === undefined ? '' : `, worst ${summary.worstPct.toFixed(1)}%`;
      if (summary.targetPct === undefined) return `${summary.verdict.padEnd(7)} ${summary.title}: ${summary.rows} rows, no target${worst}`;
      return `${summary.verdict.padEnd(7)} ${summary.title}: ${summary.passed}/${summary.passed + summary.missed} scored rows pass (target ±${summary.targetPct}%${worst}; ${summary.rows} rows)`;
    })
    .join('\n');
}

function escapeCell(text: string): string {
  return text.replace(/\|/g, '\\|').replace(/\n/g, ' ');
}

/** A Markdown table; it also says, per row, how the estimate relates to the figure. */
export function markdownTable(rows: readonly AccuracyRow[]): string {
  const columns = [...COLUMNS, 'Basis'];
  const header = `| ${columns.join(' | ')} |`;
  const rule = `|${columns.map(() => '---').join('|')}|`;
  return [header, rule, ...rows.map((row, index) => `| ${[...cells(row, index), row.basis].map(escapeCell).join(' | ')} |`)].join('\n');
}

export function markdownSummary(summaries: readonly CategorySummary[]): string {
  const lines = ['| Category | Target | Target set by | Scored rows passing | Worst error | Verdict |', '|---|---|---|---|---|---|'];
  for (const summary of summaries.filter((entry) => entry.rows > 0)) {
    const target = summary.targetPct === undefined ? 'none' : `±${summary.targetPct}%`;
    const worst = summary.worstPct === undefined ? '-' : `${summary.worstPct.toFixed(1)}%`;
    const passing = summary.targetPct === undefined ? `${summary.rows} rows, not scored` : `${summary.passed}/${summary.passed + summary.missed}`;
    lines.push(`| ${summary.title} | ${target} | ${ACCURACY_CATEGORIES[summary.category].targetSource} | ${passing} | ${worst} | ${summary.verdict} |`);
  }
  return lines.join('\n');
}

/** The rows that carry a note (misses, rows not scored), as a list. */
export function notesList(rows: readonly AccuracyRow[]): string[] {
  return rows.flatMap((row, index) => (row.note ? [`${index + 1}. ${row.status}, ${row.what} ${row.setting}: ${row.note}`] : []));
}
