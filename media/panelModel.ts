/**
 * What the budget panel draws, as pure functions of the snapshot and history: bar segments, timeline
 * geometry, the decision list and the running stage's estimate vs measurement. No DOM here, so it is tested
 * under Node.
 */

import type { DecisionEvent, JobInfo, StageName } from '../sidecar/core/types';
import type { JobProgressParams, SidecarSnapshot } from '../sidecar/protocol';
import type { MemorySample, PanelConnection } from './panelMessages';

export type SegmentKind =
  | 'llm-weights'
  | 'llm-kv'
  | 'image-te'
  | 'image-diffusion'
  | 'image-vae'
  | 'compute'
  | 'other'
  | 'free'
  | 'margin';

export interface BarSegment {
  kind: SegmentKind;
  label: string;
  bytes: number;
  /** Share of the bar, 0..1. */
  fraction: number;
}

type BreakdownEntry = SidecarSnapshot['breakdown'][string][number];

/** The colour class of one breakdown entry, from its kind and label. */
export function segmentKind(entry: BreakdownEntry): SegmentKind {
  const label = entry.label.toLowerCase();
  switch (entry.kind) {
    case 'llm':
      return /kv|cache|context/.test(label) ? 'llm-kv' : 'llm-weights';
    case 'image':
      if (/vae|decode/.test(label)) return 'image-vae';
      if (/text|clip|t5|encoder|te\b/.test(label)) return 'image-te';
      return 'image-diffusion';
    default:
      return entry.kind;
  }
}

/**
 * Segments of one device's bar. Falls back to used/free when the sidecar sent no breakdown. When the parts add
 * up to more than the device (estimates can overshoot), the bar scales to the sum so it never overflows.
 */
export function barSegments(snapshot: SidecarSnapshot, deviceId: string): BarSegment[] {
  const device = snapshot.devices.find((d) => d.id === deviceId);
  const total = device?.total ?? 0;
  let entries = snapshot.breakdown[deviceId];
  if (!entries || entries.length === 0) {
    entries = device
      ? [
          { label: 'In use', bytes: device.used, kind: 'other' },
          { label: 'Free', bytes: device.free, kind: 'free' },
        ]
      : [];
  }
  const shown = entries.filter((e) => e.bytes > 0);
  const sum = shown.reduce((s, e) => s + e.bytes, 0);
  const scale = Math.max(total, sum);
  if (scale <= 0) return [];
  return shown.map((e) => ({ kind: segmentKind(e), label: e.label, bytes: e.bytes, fraction: e.bytes / scale }));
}

export interface TimelineSeries {
  deviceId: string;
  /** `x,y` pairs for an SVG polyline of everything in use. */
  used: string;
  /** Closed polygon of what we hold, from the baseline. */
  ours: string;
  /** y of the line above which the safety margin starts (total - margin). */
  marginY: number;
}

/**
 * Timeline geometry in a `width` x `height` box: x is time (now at the right, `windowMs` ago at the left), y is
 * the share of the device in use (full at the top).
 */
export function timelineSeries(
  samples: readonly MemorySample[],
  deviceId: string,
  now: number,
  windowMs: number,
  width: number,
  height: number,
  margin: number,
): TimelineSeries {
  const x = (at: number) => Math.max(0, Math.min(width, width - ((now - at) / windowMs) * width));
  const y = (bytes: number, total: number) => (total > 0 ? height - Math.max(0, Math.min(1, bytes / total)) * height : height);
  const points: { x: number; used: number; ours: number }[] = [];
  let total = 0;
  for (const sample of samples) {
    if (now - sample.at > windowMs) continue;
    const d = sample.devices.find((dev) => dev.id === deviceId);
    if (!d) continue;
    total = d.total;
    points.push({ x: x(sample.at), used: y(d.used, d.total), ours: y(d.ours, d.total) });
  }
  const round = (n: number) => Math.round(n * 10) / 10;
  const used = points.map((p) => `${round(p.x)},${round(p.used)}`).join(' ');
  const ours =
    points.length === 0
      ? ''
      : [`${round(points[0].x)},${height}`, ...points.map((p) => `${round(p.x)},${round(p.ours)}`), `${round(points[points.length - 1].x)},${height}`].join(' ');
  return { deviceId, used, ours, marginY: round(y(total - margin, total)) };
}

/** Merges decisions without duplicates (identity: seq and time), oldest first, keeping the newest `max`. */
export function mergeDecisions(existing: readonly DecisionEvent[], incoming: readonly DecisionEvent[], max = 500): DecisionEvent[] {
  const byKey = new Map<string, DecisionEvent>();
  for (const d of [...existing, ...incoming]) byKey.set(`${d.seq}@${d.at}`, d);
  const all = [...byKey.values()].sort((a, b) => a.at - b.at || a.seq - b.seq);
  return all.slice(Math.max(0, all.length - max));
}

/** The decisions of one job (or all when `jobId` is empty), newest first, for the log table. */
export function filterDecisions(decisions: readonly DecisionEvent[], jobId: string): DecisionEvent[] {
  return decisions.filter((d) => !jobId || d.jobId === jobId).reverse();
}

/** Job ids that appear in the decisions, newest first, for the filter. */
export function jobIdsOf(decisions: readonly DecisionEvent[]): string[] {
  const ids: string[] = [];
  for (let i = decisions.length - 1; i >= 0; i--) {
    const id = decisions[i].jobId;
    if (id && !ids.includes(id)) ids.push(id);
  }
  return ids;
}

const PROGRESS_STAGE_TO_PLAN: Record<string, StageName> = {
  textEncode: 'textEncode',
  diffusion: 'diffusion',
  vaeDecode: 'vaeDecode',
  generating: 'llmInfer',
};

export interface RunningRow {
  jobId: string;
  what: string;
  stage: string;
  steps: string;
  /** The plan's expected peak for the current stage. */
  estimate?: number;
  /** The latest measurement a decision reported for this job. */
  measured?: number;
}

function describeJob(job: JobInfo): string {
  const spec = job.spec;
  if (spec.kind === 'image') return `image ${spec.width}×${spec.height}${spec.batch > 1 ? ` ×${spec.batch}` : ''}`;
  return `LLM ${spec.task}${job.ranOn === 'cpu-copy' ? ' on the CPU copy' : ''}`;
}

/** One row per running job: its current stage, the plan's estimate for it and what was measured. */
export function runningRows(snapshot: SidecarSnapshot, progress: ReadonlyMap<string, JobProgressParams>, decisions: readonly DecisionEvent[]): RunningRow[] {
  return snapshot.running.map((job) => {
    const p = progress.get(job.id);
    const planStage = p ? PROGRESS_STAGE_TO_PLAN[p.stage] : undefined;
    const stagePlan = planStage ? job.plan?.stages.find((s) => s.stage === planStage) : undefined;
    let measured: number | undefined;
    for (let i = decisions.length - 1; i >= 0; i--) {
      const d = decisions[i];
      if (d.jobId === job.id && d.measured !== undefined) {
        measured = d.measured;
        break;
      }
    }
    return {
      jobId: job.id,
      what: describeJob(job),
      stage: p?.stage ?? job.status,
      steps: p?.step !== undefined && p.totalSteps ? `${p.step}/${p.totalSteps}` : '',
      estimate: stagePlan?.peak ?? job.plan?.peak,
      measured,
    };
  });
}

/** The banner over the panel while the sidecar is down; undefined while it runs (or has not been started). */
export interface ConnectionBanner {
  severity: 'warning' | 'error';
  text: string;
  /** Offer Restart Sidecar: nothing restarts it by itself any more. */
  offerRestart: boolean;
}

export function connectionBanner(connection: PanelConnection, failure: string | undefined, lastReadingAt: number | undefined): ConnectionBanner | undefined {
  const readings = lastReadingAt !== undefined ? ` The figures below are from ${new Date(lastReadingAt).toLocaleTimeString()}, before it stopped.` : '';
  if (connection === 'restarting') {
    return {
      severity: 'warning',
      text: `The sidecar stopped unexpectedly${failure ? ` (${failure})` : ''} and is restarting. Image jobs in flight are resubmitted when it is back; LLM requests in flight are reported.${readings}`,
      offerRestart: false,
    };
  }
  if (connection === 'failed') {
    return {
      severity: 'error',
      text: `The sidecar stopped${failure ? `: ${failure}` : ''}. Nothing restarts it by itself now.${readings}`,
      offerRestart: true,
    };
  }
  return undefined;
}
