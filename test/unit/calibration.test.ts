import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  CalibrationStore,
  calibratedValue,
  estimateVsMeasured,
  loadCalibrationFile,
  recordsFromImageRun,
  recordsFromLlmRun,
  saveCalibrationFile,
  timeRecord,
  type CalibrationRecord,
} from '../../sidecar/core/calibration';
import { estimateImageJob, familyModel } from '../../sidecar/core/estimators/imageEstimator';
import { LOG_MB } from '../../sidecar/core/estimators/figures';

const base = { model: 'm.safetensors', backend: 'cuda', unit: 'bytes' as const, source: 'log', recordedAt: 100 };
const record = (fields: Partial<CalibrationRecord> & Pick<CalibrationRecord, 'key' | 'setting' | 'value'>): CalibrationRecord => ({ ...base, ...fields });
const query = { model: 'm.safetensors', backend: 'cuda', key: 'vae.compute' };

describe('calibratedValue', () => {
  it('keeps the prior when nothing was measured', () => {
    assert.deepEqual(calibratedValue(undefined, { ...query, setting: '512x512' }, 42), { value: 42, calibrated: false });
    assert.deepEqual(calibratedValue(new CalibrationStore(), { ...query, setting: '512x512' }, 42), { value: 42, calibrated: false });
  });

  it('prefers an exact setting, then the nearest linear scale, then the measured/estimated ratio', () => {
    const store = new CalibrationStore([
      record({ key: 'vae.compute', setting: '512x512', value: 1000, scale: 100, recordedAt: 1 }),
      record({ key: 'vae.compute', setting: '2048x2048', value: 20000, scale: 1600, recordedAt: 2 }),
    ]);
    assert.equal(calibratedValue(store, { ...query, setting: '512x512', scale: 100 }, 1).value, 1000);
    // Distances are on a log axis: 300 is nearer to 100 (3x) than to 1600; 900 is nearer to 1600.
    assert.equal(calibratedValue(store, { ...query, setting: '1024x1024', scale: 300 }, 1).value, 3000);
    assert.equal(calibratedValue(store, { ...query, setting: '1536x1536', scale: 900 }, 1).value, 900 * 12.5);

    const ratio = new CalibrationStore([record({ key: 'diffusion.compute', setting: '768x768', value: 110, estimate: 100 })]);
    const corrected = calibratedValue(ratio, { ...query, key: 'diffusion.compute', setting: '1024x1024' }, 500);
    assert.ok(Math.abs(corrected.value - 550) < 1e-9);
    assert.equal(corrected.calibrated, true);
    assert.equal(corrected.source, 'log');
  });

  it('never mixes models, backends or keys', () => {
    const store = new CalibrationStore([record({ key: 'vae.compute', setting: '512x512', value: 7 })]);
    assert.equal(calibratedValue(store, { ...query, model: 'other', setting: '512x512' }, 1).calibrated, false);
    assert.equal(calibratedValue(store, { ...query, backend: 'vulkan', setting: '512x512' }, 1).calibrated, false);
    assert.equal(calibratedValue(store, { ...query, key: 'vae.computeTiled', setting: '512x512' }, 1).calibrated, false);
  });
});

describe('CalibrationStore', () => {
  it('keeps the newest record per setting and rejects invalid ones', () => {
    const store = new CalibrationStore();
    assert.equal(store.add(record({ key: 'k', setting: 's', value: 1, recordedAt: 5 })), true);
    assert.equal(store.add(record({ key: 'k', setting: 's', value: 2, recordedAt: 9 })), true);
    assert.equal(store.add(record({ key: 'k', setting: 's', value: 3, recordedAt: 7 })), false, 'older than what is kept');
    assert.deepEqual(
      store.records(base.model, base.backend, 'k').map((r) => r.value),
      [2],
    );
    for (const bad of [{ value: Number.NaN }, { value: -1 }, { key: '' }, { unit: 'kg' }, { recordedAt: Number.POSITIVE_INFINITY }, { source: 3 }]) {
      assert.equal(store.add({ ...record({ key: 'k', setting: 'x', value: 1 }), ...bad } as CalibrationRecord), false, JSON.stringify(bad));
    }
    assert.equal(store.size, 1);
  });

  it('keeps at most 32 records per key, newest first', () => {
    const store = new CalibrationStore();
    for (let i = 0; i < 40; i++) store.add(record({ key: 'k', setting: `s${i}`, value: i, recordedAt: i }));
    const kept = store.records(base.model, base.backend, 'k');
    assert.equal(kept.length, 32);
    assert.equal(kept[0].value, 39);
    assert.equal(kept.at(-1)!.value, 8);
  });

  it('round-trips through JSON and drops malformed rows', () => {
    const store = new CalibrationStore([record({ key: 'a', setting: '', value: 1 }), record({ key: 'b', setting: '', value: 2, recordedAt: 200 })]);
    const copy = CalibrationStore.fromJSON(JSON.parse(JSON.stringify(store)));
    assert.deepEqual(copy.all(), store.all());
    assert.equal(copy.all()[0].key, 'b');
    assert.equal(CalibrationStore.fromJSON({ version: 1, records: [{ nonsense: true }, record({ key: 'c', setting: '', value: 3 })] }).size, 1);
    assert.equal(CalibrationStore.fromJSON(null).size, 0);
    assert.equal(CalibrationStore.fromJSON({ records: 'no' }).size, 0);
  });
});

describe('calibration file', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vram-relay-calibration-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('is empty when missing, and saves atomically into a new folder', async () => {
    const file = join(dir, 'nested', 'calibration.json');
    const loaded = await loadCalibrationFile(file);
    assert.equal(loaded.store.size, 0);
    assert.equal(loaded.problem, undefined);
    const store = new CalibrationStore([record({ key: 'vae.compute', setting: '512x512', value: 1664 * LOG_MB, scale: 512 * 512 })]);
    await saveCalibrationFile(store, file);
    assert.deepEqual(await readdir(join(dir, 'nested')), ['calibration.json'], 'no temporary file is left');
    const reloaded = await loadCalibrationFile(file);
    assert.deepEqual(reloaded.store.all(), store.all());
    assert.equal(JSON.parse(await readFile(file, 'utf8')).version, 1);
    store.add(record({ key: 'vae.compute', setting: '1024x1024', value: 6656 * LOG_MB, recordedAt: 300 }));
    await saveCalibrationFile(store, file);
    assert.equal((await loadCalibrationFile(file)).store.size, 2);
  });

  it('moves a corrupt file aside instead of losing or rereading it', async () => {
    const file = join(dir, 'broken.json');
    await writeFile(file, '{"version":1,"records":[');
    const loaded = await loadCalibrationFile(file, 1234);
    assert.equal(loaded.store.size, 0);
    assert.match(loaded.problem ?? '', /not valid JSON; moved it to .*broken\.json\.corrupt-1234/);
    assert.equal(await readFile(`${file}.corrupt-1234`, 'utf8'), '{"version":1,"records":[');
  });
});

describe('records from worker runs', () => {
  it('maps image buffers onto keys and settings, with the plan estimate beside each', () => {
    const model = familyModel('sdxl', 'sdxl.safetensors');
    const estimate = estimateImageJob(model, { width: 1024, height: 1024, batch: 1, frames: 1 }, { backend: 'cuda' });
    const context = { model: 'sdxl.safetensors', backend: 'cuda', width: 1024, height: 1024, estimate, source: 'sd-cli log', at: 500 };
    const [vae, diffusion, textEncoder] = recordsFromImageRun({ ...context, placement: { vaeTiling: false, flashAttention: true } }, [
      { key: 'vae.compute', bytes: 6656.25 * LOG_MB, where: 'gpu' },
      { key: 'diffusion.compute', bytes: 300 * LOG_MB, where: 'gpu' },
      { key: 'textEncoder.weights', bytes: 1.6e9, where: 'cpu' },
    ]);
    assert.deepEqual(
      [vae.key, vae.setting, vae.scale, vae.estimate, vae.backend],
      ['vae.compute', '1024x1024', 1024 * 1024, estimate.compute.vaeDecode, 'cuda'],
    );
    assert.deepEqual([diffusion.key, diffusion.estimate], ['diffusion.computeFlash', estimate.compute.diffusionFlash]);
    assert.deepEqual([textEncoder.backend, textEncoder.estimate], ['cpu', estimate.weights.textEncoder]);

    const [tiled] = recordsFromImageRun({ ...context, placement: { vaeTiling: true, flashAttention: false } }, [{ key: 'vae.compute', bytes: 400 * LOG_MB, where: 'gpu' }]);
    assert.deepEqual([tiled.key, tiled.setting, tiled.estimate], ['vae.computeTiled', 'tile=32x32', estimate.compute.vaeDecodeTiled]);
  });

  it('feed the next estimate: measured beats the prior', () => {
    const model = familyModel('sd1', 'sd15.safetensors');
    const store = new CalibrationStore(
      recordsFromImageRun({ model: 'sd15.safetensors', backend: 'cuda', width: 512, height: 512, placement: { vaeTiling: false, flashAttention: false }, source: 'log', at: 1 }, [
        { key: 'vae.compute', bytes: 1800 * LOG_MB, where: 'gpu' },
      ]),
    );
    const costs = estimateImageJob(model, { width: 768, height: 768, batch: 1, frames: 1 }, { backend: 'cuda', calibration: store });
    assert.equal(costs.compute.vaeDecode, Math.round(1800 * LOG_MB * 2.25));
  });

  it('maps LLM buffers with a KV scale that carries across context sizes and cache types', () => {
    const records = recordsFromLlmRun(
      { model: 'llm.gguf', backend: 'cuda', gpuLayers: 33, contextSize: 8192, kvType: 'q8_0', kvBytesPerElement: 34 / 32, gpuBlocks: 32, ubatch: 512, flashAttention: true, source: 'log', at: 3 },
      [
        { key: 'llm.weights', bytes: 4e9, where: 'gpu' },
        { key: 'llm.kv', bytes: 5e8, where: 'gpu' },
        { key: 'llm.compute', bytes: 1e8, where: 'gpu' },
      ],
    );
    assert.deepEqual(
      records.map((r) => [r.key, r.setting]),
      [
        ['llm.weights', 'ngl=33'],
        ['llm.kv', 'ctx=8192,kv=q8_0,ngl=33'],
        ['llm.compute', 'ctx=8192,ub=512,fa=1'],
      ],
    );
    assert.equal(records[1].scale, 8192 * 32 * (34 / 32));
  });

  it('records transition times', () => {
    const time = timeRecord({ model: 'llm.gguf', backend: 'cuda', source: 'worker', at: 9 }, 'time.llmReload', 812, { scale: 4e9 });
    assert.deepEqual([time.unit, time.value, time.scale, time.setting], ['ms', 812, 4e9, '']);
  });
});

describe('estimateVsMeasured', () => {
  it('gives one row per record with an estimate, error positive on the safe side', () => {
    const rows = estimateVsMeasured([
      record({ key: 'vae.compute', setting: '512x512', value: 1000, estimate: 1100 }),
      record({ key: 'llm.kv', setting: 'x', value: 400, estimate: 300 }),
      record({ key: 'no.estimate', setting: '', value: 5 }),
    ]);
    assert.equal(rows.length, 2);
    assert.ok(Math.abs(rows[0].errorPct - 10) < 1e-9);
    assert.ok(Math.abs(rows[1].errorPct + 25) < 1e-9);
    assert.equal(rows[0].source, 'log');
  });
});
