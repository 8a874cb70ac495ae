import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { GiB } from '../../../sidecar/core/types';
import { barSegments, connectionBanner, filterDecisions, jobIdsOf, mergeDecisions, runningRows, segmentKind, timelineSeries } from '../../../media/panelModel';
import type { MemorySample } from '../../../media/panelMessages';
import { decision, imageJob, plan, snapshot } from './fixtures';

describe('bar segments', () => {
  it('colours each part by what it is', () => {
    assert.equal(segmentKind({ label: 'LLM weights', bytes: 1, kind: 'llm' }), 'llm-weights');
    assert.equal(segmentKind({ label: 'KV cache', bytes: 1, kind: 'llm' }), 'llm-kv');
    assert.equal(segmentKind({ label: 'Text encoder (CLIP)', bytes: 1, kind: 'image' }), 'image-te');
    assert.equal(segmentKind({ label: 'VAE', bytes: 1, kind: 'image' }), 'image-vae');
    assert.equal(segmentKind({ label: 'UNet', bytes: 1, kind: 'image' }), 'image-diffusion');
    assert.equal(segmentKind({ label: 'Safety margin', bytes: 1, kind: 'margin' }), 'margin');
  });

  it('splits the bar in shares of the device', () => {
    const segments = barSegments(snapshot(), 'nvidia:0');
    assert.deepEqual(segments.map((s) => s.kind), ['llm-weights', 'llm-kv', 'other', 'free', 'margin']);
    assert.equal(segments[0].fraction, 4 / 12);
    assert.ok(Math.abs(segments.reduce((sum, s) => sum + s.fraction, 0) - 1) < 1e-9);
  });

  it('never overflows when estimates add up to more than the device', () => {
    const s = snapshot({ breakdown: { 'nvidia:0': [{ label: 'LLM weights', bytes: 10 * GiB, kind: 'llm' }, { label: 'VAE', bytes: 6 * GiB, kind: 'image' }] } });
    const total = barSegments(s, 'nvidia:0').reduce((sum, seg) => sum + seg.fraction, 0);
    assert.ok(Math.abs(total - 1) < 1e-9);
  });

  it('falls back to used and free without a breakdown', () => {
    assert.deepEqual(barSegments(snapshot({ breakdown: {} }), 'nvidia:0').map((s) => s.kind), ['other', 'free']);
  });
});

describe('timeline', () => {
  const sample = (at: number, used: number, ours: number): MemorySample => ({ at, devices: [{ id: 'd', total: 10, used, ours }] });

  it('puts now at the right and full memory at the top', () => {
    const series = timelineSeries([sample(0, 5, 2), sample(1000, 10, 5)], 'd', 1000, 1000, 100, 50, 1);
    assert.equal(series.used, '0,25 100,0');
    assert.equal(series.ours, '0,50 0,40 100,25 100,50');
    assert.equal(series.marginY, 5);
  });

  it('leaves out samples older than the window', () => {
    assert.equal(timelineSeries([sample(0, 5, 2), sample(900, 5, 2)], 'd', 1000, 500, 100, 50, 0).used, '80,25');
  });
});

describe('decision log', () => {
  const events = [decision({ seq: 1, at: 1, jobId: 'a' }), decision({ seq: 2, at: 2, jobId: 'b' }), decision({ seq: 3, at: 3, jobId: 'a' })];

  it('merges without duplicates and filters by job, newest first', () => {
    const merged = mergeDecisions(events.slice(0, 2), events.slice(1));
    assert.deepEqual(merged.map((d) => d.seq), [1, 2, 3]);
    assert.deepEqual(filterDecisions(merged, 'a').map((d) => d.seq), [3, 1]);
    assert.deepEqual(filterDecisions(merged, '').map((d) => d.seq), [3, 2, 1]);
    assert.deepEqual(jobIdsOf(merged), ['a', 'b']);
  });

  it('keeps the newest when over the limit', () => {
    assert.deepEqual(mergeDecisions(events, [], 2).map((d) => d.seq), [2, 3]);
  });
});

describe('running rows', () => {
  it('shows the estimate of the current stage beside the latest measurement', () => {
    const s = snapshot({ running: [imageJob({ plan: plan() })] });
    const progress = new Map([['job-1', { jobId: 'job-1', stage: 'vaeDecode' as const }]]);
    const rows = runningRows(s, progress, [decision({ jobId: 'job-1', measured: 6.6 * GiB, kind: 'calibrate' })]);
    assert.equal(rows.length, 1);
    assert.equal(rows[0].what, 'image 1024×1024');
    assert.equal(rows[0].estimate, 6.5 * GiB);
    assert.equal(rows[0].measured, 6.6 * GiB);
  });

  it('says when an LLM request runs on the CPU copy of the model', () => {
    const llmJob = (ranOn?: 'cpu-copy') => imageJob({ id: 'job-2', spec: { kind: 'llm', task: 'infill', contextSize: 8192 }, ...(ranOn ? { ranOn } : {}) });
    const whats = (job: ReturnType<typeof imageJob>) => runningRows(snapshot({ running: [job] }), new Map(), []).map((r) => r.what);
    assert.deepEqual(whats(llmJob('cpu-copy')), ['LLM infill on the CPU copy']);
    assert.deepEqual(whats(llmJob()), ['LLM infill']);
  });
});

describe('connection banner', () => {
  it('shows a warning while the sidecar restarts, saying why and what the figures are', () => {
    const banner = connectionBanner('restarting', 'killed by SIGKILL', 0);
    assert.equal(banner?.severity, 'warning');
    assert.equal(banner?.offerRestart, false);
    assert.match(banner?.text ?? '', /stopped unexpectedly \(killed by SIGKILL\) and is restarting/);
    assert.match(banner?.text ?? '', /Image jobs in flight are resubmitted/);
    assert.match(banner?.text ?? '', /figures below are from/);
  });

  it('offers a restart once the sidecar stopped for good', () => {
    const banner = connectionBanner('failed', 'the sidecar stopped 5 times in 3 minutes and was not restarted again', undefined);
    assert.equal(banner?.severity, 'error');
    assert.equal(banner?.offerRestart, true);
    assert.match(banner?.text ?? '', /5 times in 3 minutes/);
    assert.doesNotMatch(banner?.text ?? '', /figures below/);
  });

  it('is gone while the sidecar runs or has not been started', () => {
    assert.equal(connectionBanner('running', undefined, 0), undefined);
    assert.equal(connectionBanner('starting', undefined, undefined), undefined);
    assert.equal(connectionBanner('stopped', undefined, undefined), undefined);
  });
});
