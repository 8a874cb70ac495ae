import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { CalibrationRecord } from '../../../sidecar/core/calibration';
import {
  ACCURACY_CATEGORIES,
  calibrationRows,
  errorPercent,
  imageRecordPrior,
  llmOffloaded,
  llmRecordPrior,
  markdownTable,
  scoreRow,
  storedEstimateComparable,
  summarize,
  textTable,
  type AccuracyRow,
} from '../../../sidecar/core/estimators/accuracy';
import { LOG_MB } from '../../../sidecar/core/estimators/figures';
import { estimateImageJob } from '../../../sidecar/core/estimators/imageEstimator';
import { kvCacheBytes, llmComputeBytes, llmWeightBytes } from '../../../sidecar/core/estimators/llmEstimator';
import { PUBLISHED_NOT_COMPARED, publishedComparisons } from '../../../sidecar/core/estimators/publishedFigures';
import { publishedModels } from './publishedModels';

const rows = publishedComparisons(publishedModels());

/**
 * Published rows that miss, each with the reason written in its note (docs/bench/estimator-accuracy.md) and the
 * error it must stay within: a regression makes them worse, a fix makes them pass (then drop them from here).
 */
const KNOWN_MISSES: { what: RegExp; source: string; minPct: number; maxPct: number }[] = [
  { what: /^SD1\.5 VAE decode, Vulkan, --vae-conv-direct$/, source: 'memory-facts.md:13', minPct: -14, maxPct: 0 },
  { what: /^SD2 compute saved by --diffusion-fa$/, source: 'memory-facts.md:29', minPct: 0, maxPct: 12 },
  // Quotes of PyTorch front ends against sd.cpp's defaults: the estimate must stay above them (the danger zone).
  { what: /^SDXL job in use/, source: 'memory-facts.md:36', minPct: 0, maxPct: 50 },
  { what: /^Flux\.1-dev fp8 job in use/, source: 'memory-facts.md:36', minPct: 0, maxPct: 70 },
];

const known = (row: AccuracyRow) => KNOWN_MISSES.find((miss) => miss.what.test(row.what) && miss.source === row.source);
const label = (row: AccuracyRow) => `${row.what} ${row.setting} (${row.source}): ${row.errorPct?.toFixed(2)}%`;

describe('published figures against the estimators (issue 5 targets)', () => {
  it('meet the targets: VAE decode and diffusion within 10%, LLM weights and KV cache within 5%', () => {
    let checked = 0;
    for (const row of rows.filter((candidate) => ['vaeDecode', 'diffusion', 'llmWeights', 'llmKv'].includes(candidate.category))) {
      if (row.status === 'NOT SCORED' || known(row)) continue;
      const limit = ACCURACY_CATEGORIES[row.category].targetPct!;
      assert.equal(row.status, 'PASS', label(row));
      if (typeof row.measured === 'number') assert.ok(Math.abs(row.errorPct!) <= limit, label(row));
      checked++;
    }
    assert.ok(checked >= 13, `${checked} rows checked`);
  });

  it('every other scored row passes too, except the known misses', () => {
    for (const row of rows) {
      if (row.status === 'NOT SCORED' || row.status === 'INFO') continue;
      if (known(row)) continue;
      assert.equal(row.status, 'PASS', label(row));
    }
  });

  it('the known misses still miss within their bounds, and say why', () => {
    for (const miss of KNOWN_MISSES) {
      const row = rows.find((candidate) => miss.what.test(candidate.what) && candidate.source === miss.source);
      assert.ok(row, `${miss.what} is still a row`);
      assert.equal(row.status, 'MISS', label(row));
      assert.ok(row.errorPct! >= miss.minPct && row.errorPct! <= miss.maxPct, label(row));
      assert.ok((row.note ?? '').length > 40, `${label(row)} explains itself`);
    }
  });

  it('covers the VAE, diffusion, weights, whole-job and KV figures, each with its memory-facts.md line', () => {
    for (const row of rows) {
      assert.match(row.source, /^memory-facts\.md:\d+(-\d+)?$/, row.what);
      assert.ok(row.basis.length > 0 && Number.isFinite(row.estimate) && row.estimate > 0, row.what);
    }
    const count = (category: AccuracyRow['category']) => rows.filter((row) => row.category === category).length;
    assert.ok(count('vaeDecode') >= 8 && count('diffusion') >= 4 && count('imageWeights') >= 6 && count('wholeJob') >= 5 && count('llmKv') >= 4);
    const older = rows.find((row) => row.source === 'memory-facts.md:11');
    assert.equal(older?.status, 'NOT SCORED', 'the older build is shown, not counted');
    for (const entry of PUBLISHED_NOT_COMPARED) {
      assert.match(entry.source, /^memory-facts\.md:\d+(-\d+)?$/);
      assert.ok(entry.reason.length > 10, entry.figure);
      assert.ok(!rows.some((row) => row.source === entry.source && entry.figure.includes(row.quoted ?? '\u0000')), `${entry.figure} is not both compared and left out`);
    }
  });

  it('uses estimates derived from the shapes: the VAE figures come out to the byte per pixel', () => {
    const cuda512 = rows.find((row) => row.source === 'memory-facts.md:9')!;
    assert.equal(cuda512.estimate, 1664 * LOG_MB);
    const vulkan = rows.find((row) => row.source === 'memory-facts.md:12' && row.setting === '1024x1024')!;
    assert.equal(vulkan.estimate, 2560 * 1024 * 1024);
  });
});

describe('scoring', () => {
  const base = { category: 'vaeDecode' as const, what: 'x', setting: 's', unit: 'bytes' as const, source: 'here', basis: 'b' };

  it('scores a figure against its category target, and a range by containment', () => {
    assert.equal(scoreRow({ ...base, estimate: 109, measured: 100 }).status, 'PASS');
    assert.equal(scoreRow({ ...base, estimate: 111, measured: 100 }).status, 'MISS');
    assert.equal(scoreRow({ ...base, estimate: 89, measured: 100 }).status, 'MISS');
    assert.equal(scoreRow({ ...base, category: 'llmKv', estimate: 106, measured: 100 }).status, 'MISS');
    assert.equal(scoreRow({ ...base, estimate: 150, measured: { min: 100, max: 200 } }).status, 'PASS');
    const outside = scoreRow({ ...base, estimate: 250, measured: { min: 100, max: 200 } });
    assert.deepEqual([outside.status, outside.errorPct], ['MISS', 25]);
    assert.equal(scoreRow({ ...base, estimate: 1, measured: 100, scored: false }).status, 'NOT SCORED');
    assert.equal(scoreRow({ ...base, category: 'time', estimate: 1, measured: 100 }).status, 'INFO');
    assert.equal(errorPercent(Number.NaN, 1), undefined);
    assert.equal(errorPercent(1, 0), undefined);
  });

  it('summarises per category: a miss fails the category, rows set aside do not count', () => {
    const scored = [
      scoreRow({ ...base, estimate: 100, measured: 100 }),
      scoreRow({ ...base, estimate: 50, measured: 100, scored: false }),
      scoreRow({ ...base, category: 'llmKv', estimate: 100, measured: 100 }),
      scoreRow({ ...base, category: 'llmKv', estimate: 120, measured: 100 }),
    ];
    const summary = Object.fromEntries(summarize(scored).map((entry) => [entry.category, entry]));
    assert.deepEqual([summary.vaeDecode.verdict, summary.vaeDecode.passed, summary.vaeDecode.rows, summary.vaeDecode.worstPct], ['PASS', 1, 2, 0]);
    assert.deepEqual([summary.llmKv.verdict, summary.llmKv.missed], ['MISS', 1]);
    assert.equal(summary.diffusion.verdict, 'NO DATA');
  });

  it('renders every row in the text and Markdown tables', () => {
    const text = textTable(rows);
    const markdown = markdownTable(rows);
    assert.equal(text.split('\n').length, rows.length + 1);
    assert.equal(markdown.split('\n').length, rows.length + 2);
    assert.match(text, /SDXL VAE decode, CUDA\s+1024x1024\s+6656\.00 MiB\s+6656\.25 MiB \(6656\.25 MB\)/);
    assert.ok(!markdown.split('\n').slice(2).some((line) => line.split(' | ').length !== 11), 'no stray | inside a cell');
  });
});

describe('priors for calibration records', () => {
  const models = publishedModels();
  const meta = models.mistral7b;
  const record = (fields: Partial<CalibrationRecord> & Pick<CalibrationRecord, 'key' | 'setting'>): CalibrationRecord => ({
    model: meta.path,
    backend: 'cuda',
    value: 1,
    unit: 'bytes',
    source: 'log',
    recordedAt: 1,
    ...fields,
  });
  const value = (prior: ReturnType<typeof llmRecordPrior>) => ('value' in prior ? prior.value : Number.NaN);

  it('splits LLM weights and KV cache between device and host by -ngl', () => {
    const device = value(llmRecordPrior(meta, record({ key: 'llm.weights', setting: 'ngl=20' }), true));
    const host = value(llmRecordPrior(meta, record({ key: 'llm.weights', setting: 'ngl=20', backend: 'cpu' }), true));
    assert.equal(device, llmWeightBytes(meta, 20));
    assert.equal(device + host, meta.tensorBytes);
    const kvDevice = value(llmRecordPrior(meta, record({ key: 'llm.kv', setting: 'ctx=8192,kv=f16,ngl=20' }), true));
    const kvHost = value(llmRecordPrior(meta, record({ key: 'llm.kv', setting: 'ctx=8192,kv=f16,ngl=20', backend: 'cpu' }), true));
    assert.equal(kvDevice + kvHost, kvCacheBytes(meta, 8192, 'f16'));
    assert.equal(kvDevice, kvCacheBytes(meta, 8192, 'f16', 20));
  });

  it('estimates a compute buffer on the device, or on the host of a run without offload only', () => {
    const setting = 'ctx=4096,ub=256,fa=1';
    assert.equal(value(llmRecordPrior(meta, record({ key: 'llm.compute', setting }), true)), llmComputeBytes(meta, 4096, { batchSize: 256, flashAttention: true }));
    assert.equal(value(llmRecordPrior(meta, record({ key: 'llm.compute', setting, backend: 'cpu' }), false)), llmComputeBytes(meta, 4096, { batchSize: 256, flashAttention: true }));
    assert.ok('missing' in llmRecordPrior(meta, record({ key: 'llm.compute', setting, backend: 'cpu' }), true));
    assert.ok('missing' in llmRecordPrior(meta, record({ key: 'llm.kv', setting: 'ctx=x' }), false));
    assert.ok('missing' in llmRecordPrior(meta, record({ key: 'time.llmReload', setting: '' }), false));
  });

  it('reads image sizes and tiles from the setting', () => {
    const sdxl = models.sdxl;
    const at = (key: string, setting: string, backend = 'cuda') => {
      const prior = imageRecordPrior(sdxl, record({ model: sdxl.modelPath, key, setting, backend }));
      return 'value' in prior ? prior.value : Number.NaN;
    };
    const costs = estimateImageJob(sdxl, { width: 1024, height: 768, batch: 1, frames: 1 }, { backend: 'cuda' });
    assert.equal(at('vae.compute', '1024x768'), costs.compute.vaeDecode);
    assert.equal(at('diffusion.compute', '1024x768'), costs.compute.diffusion);
    assert.equal(at('diffusion.computeFlash', '1024x768'), costs.compute.diffusionFlash);
    assert.equal(at('vae.computeTiled', 'tile=32x32'), 6656 * 256 * 256);
    assert.equal(at('vae.computeTiled', 'tile=32x32', 'vulkan'), 2560 * 256 * 256);
    assert.equal(at('diffusion.weights', ''), sdxl.weights.diffusion);
    assert.ok(Number.isNaN(at('vae.compute', 'big')));
  });

  it('trusts a stored estimate for a host buffer only when no layer was on the device', () => {
    const host = record({ key: 'llm.weights', setting: 'ngl=0', backend: 'cpu', estimate: 5 });
    assert.equal(storedEstimateComparable(host, false), true);
    assert.equal(storedEstimateComparable(host, true), false);
    assert.equal(storedEstimateComparable({ ...host, estimate: 0 }, false), false);
    assert.equal(storedEstimateComparable(record({ key: 'vae.compute', setting: '512x512', estimate: 5 }), true), true);
    const gpu = record({ key: 'llm.kv', setting: 'ctx=1,kv=f16,ngl=1' });
    assert.equal(llmOffloaded(host, [host]), false);
    assert.equal(llmOffloaded(host, [host, gpu]), true);
  });

  it('turns records into scored rows, and says why a record has no estimate', () => {
    const records = [record({ key: 'llm.kv', setting: 'ctx=8192,kv=f16,ngl=33', value: 1024 ** 3 }), record({ key: 'time.llmReload', setting: '', unit: 'ms', value: 900 })];
    const scored = calibrationRows(records, (entry) => (entry.key === 'llm.kv' ? { value: 1.01 * 1024 ** 3, basis: 'shapes' } : { missing: 'no estimate stored with this time' }));
    assert.deepEqual(
      scored.map((row) => [row.category, row.status]),
      [
        ['llmKv', 'PASS'],
        ['time', 'INFO'],
      ],
    );
    assert.ok(Math.abs(scored[0].errorPct! - 1) < 1e-9);
    assert.equal(scored[1].note, 'no estimate stored with this time');
  });
});
