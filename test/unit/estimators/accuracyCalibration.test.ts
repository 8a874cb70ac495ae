import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  accuracyMarkdown,
  calibrationSection,
  defaultCalibrationFiles,
  MEASURED_SHAPES,
  measuredModelName,
  measuredShapeOptions,
  UsageError,
} from '../../../bench/estimator-accuracy';
import type { CalibrationRecord } from '../../../sidecar/core/calibration';
import { kvCacheBytes, llmComputeBytes } from '../../../sidecar/core/estimators/llmEstimator';
import { publishedComparisons } from '../../../sidecar/core/estimators/publishedFigures';
import { MiB } from '../../../sidecar/core/types';
import { readLlmModelMeta } from '../../../sidecar/models/llmModelMeta';
import { writeLlamaGguf } from '../../helpers/ggufWriter';
import { publishedModels } from './publishedModels';

const FIXTURE = join('test', 'fixtures', 'calibration', 'llama-cpu.json');

describe('calibration records in the accuracy table', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vram-relay-accuracy-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('reads the checked-in llama.cpp CPU measurements: KV cache exact, f16 weights within 5%, compute within 10%', async () => {
    const section = await calibrationSection(FIXTURE);
    assert.equal(section.dropped, 0);
    assert.equal(section.rows.length, 10);
    const kv = section.rows.filter((row) => row.category === 'llmKv');
    assert.equal(kv.length, 4);
    for (const row of kv) assert.deepEqual([row.status, row.errorPct], ['PASS', 0], row.what);
    const weights = section.rows.filter((row) => row.category === 'llmWeights');
    const f16 = weights.find((row) => row.what.includes('-f16'))!;
    assert.equal(f16.status, 'PASS');
    assert.ok(Math.abs(f16.errorPct!) < 0.1);
    // On the CPU llama.cpp repacks q4_0 blocks into a second buffer; the row misses and says so.
    const q4 = weights.find((row) => row.what.includes('-q4_0'))!;
    assert.equal(q4.status, 'MISS');
    assert.match(q4.note ?? '', /CPU_REPACK/);
    const compute = section.rows.filter((row) => row.category === 'otherCompute');
    assert.equal(compute.length, 4);
    for (const row of compute) {
      assert.equal(row.status, 'INFO', 'no target for compute buffers');
      assert.ok(Math.abs(row.errorPct!) < 10, `${row.what} ${row.setting}: ${row.errorPct}`);
    }
    for (const row of section.rows) assert.match(row.source, /node-llama-cpp .* on the CPU/);
  });

  it('holds the current estimator to the same measurements, from the same model files written again', async () => {
    const paths = new Map<string, string>();
    for (const [index, shape] of MEASURED_SHAPES.entries()) {
      const path = join(dir, `${shape.name}.gguf`);
      await writeLlamaGguf(path, measuredShapeOptions(index));
      paths.set(measuredModelName(shape.name), path);
    }
    const content = JSON.parse(await readFile(FIXTURE, 'utf8')) as { version: 1; records: CalibrationRecord[] };
    const file = join(dir, 'measured-here.json');
    await writeFile(file, JSON.stringify({ ...content, records: content.records.map((record) => ({ ...record, model: paths.get(record.model)! })) }));
    const { rows } = await calibrationSection(file);
    assert.equal(rows.length, 10);
    for (const row of rows) {
      assert.notEqual(row.basis, 'estimate stored with the record', `${row.what}: recomputed from the file`);
      if (row.category === 'llmKv') assert.deepEqual([row.status, row.errorPct], ['PASS', 0]);
      if (row.category === 'otherCompute') assert.ok(Math.abs(row.errorPct!) < 10, `${row.what} ${row.setting}: ${row.errorPct}`);
      if (row.category === 'llmWeights' && row.what.includes('-f16')) assert.equal(row.status, 'PASS');
    }
  });

  it('recomputes the prior from the model file when it exists, instead of a stored (possibly calibrated) estimate', async () => {
    const model = join(dir, 'small.gguf');
    await writeLlamaGguf(model, { layers: 3, embeddingLength: 256, headCount: 4, headCountKv: 2, weightType: 'q4_0' });
    const meta = await readLlmModelMeta(model);
    const kv = kvCacheBytes(meta, 2048, 'f16', 2);
    const compute = llmComputeBytes(meta, 2048, { batchSize: 512, flashAttention: false });
    const base = { model, unit: 'bytes' as const, source: 'llama.cpp log', recordedAt: 5 };
    const records: CalibrationRecord[] = [
      // The sidecar stores the estimate the plan used, which already includes earlier calibration.
      { ...base, backend: 'cuda', key: 'llm.kv', setting: 'ctx=2048,kv=f16,ngl=2', value: kv, estimate: kv * 3 },
      { ...base, backend: 'cuda', key: 'llm.compute', setting: 'ctx=2048,ub=512,fa=0', value: compute * 1.2 },
      { ...base, backend: 'cpu', key: 'llm.weights', setting: 'ngl=2', value: 1, estimate: 999 },
      { ...base, model: join(dir, 'gone.safetensors'), backend: 'cuda', key: 'vae.compute', setting: '512x512', value: 1664 * MiB, estimate: 1664 * MiB },
      { ...base, model: join(dir, 'gone.safetensors'), backend: 'cuda', key: 'diffusion.compute', setting: '512x512', value: 600 * MiB },
      { ...base, backend: 'cuda', key: 'time.llmReload', setting: '', unit: 'ms', value: 800, estimate: 700 },
    ];
    const file = join(dir, 'calibration.json');
    await writeFile(file, JSON.stringify({ version: 1, records }));
    const { rows } = await calibrationSection(file);
    const find = (key: string) => rows.find((row) => row.what.startsWith(key))!;
    assert.deepEqual([find('llm.kv').estimate, find('llm.kv').status], [kv, 'PASS']);
    assert.match(find('llm.kv').basis, /GGUF/);
    assert.equal(find('llm.compute').estimate, compute);
    assert.equal(find('llm.compute').status, 'INFO');
    assert.equal(find('llm.weights').estimate, meta.tensorBytes - meta.layerBytes[1] - meta.layerBytes[2], 'host share of ngl=2: what stays on the host');
    assert.deepEqual([find('vae.compute').estimate, find('vae.compute').basis], [1664 * MiB, 'estimate stored with the record']);
    assert.equal(find('vae.compute').status, 'PASS');
    assert.equal(find('diffusion.compute').status, 'INFO');
    assert.match(find('diffusion.compute').note ?? '', /model file not found/);
    assert.deepEqual([find('time.llmReload').estimate, find('time.llmReload').category], [700, 'time']);
  });

  it('says clearly what is wrong with a file it cannot use, and leaves the file alone', async () => {
    await assert.rejects(calibrationSection(join(dir, 'missing.json')), (error: unknown) => error instanceof UsageError && /does not exist/.test(error.message));
    const corrupt = join(dir, 'corrupt.json');
    await writeFile(corrupt, '{"version":1,"records":[');
    await assert.rejects(calibrationSection(corrupt), (error: unknown) => error instanceof UsageError && /not valid JSON/.test(error.message));
    assert.equal(await readFile(corrupt, 'utf8'), '{"version":1,"records":[', 'not moved aside or rewritten');
    const other = join(dir, 'other.json');
    await writeFile(other, '{"hello":1}');
    await assert.rejects(calibrationSection(other), /no "records" list/);
    const partly = join(dir, 'partly.json');
    await writeFile(partly, JSON.stringify({ version: 1, records: [{ nonsense: true }] }));
    assert.deepEqual(await calibrationSection(partly).then((section) => [section.rows.length, section.dropped]), [0, 1]);
    assert.ok((await readdir(dir)).every((name) => !name.includes('.corrupt-')));
  });

  it('looks where the sidecar writes: VS Code global storage of the extension, then the --serve state folder', () => {
    const linux = defaultCalibrationFiles('linux', { XDG_CONFIG_HOME: '/cfg', XDG_STATE_HOME: '/state' }, '/home/u');
    assert.equal(linux[0], '/cfg/Code/User/globalStorage/vram-relay.vram-relay/calibration.json');
    assert.ok(linux.includes('/home/u/.vscode-server/data/User/globalStorage/vram-relay.vram-relay/calibration.json'));
    assert.equal(linux.at(-1), '/state/vram-relay/calibration.json');
    const mac = defaultCalibrationFiles('darwin', {}, '/Users/u');
    assert.equal(mac[0], '/Users/u/Library/Application Support/Code/User/globalStorage/vram-relay.vram-relay/calibration.json');
    const windows = defaultCalibrationFiles('win32', { APPDATA: 'C:\\AppData\\Roaming', LOCALAPPDATA: 'C:\\AppData\\Local' }, 'C:\\Users\\u');
    assert.ok(windows[0].startsWith('C:\\AppData\\Roaming') && windows[0].endsWith('calibration.json'));
  });

  it('writes a report that says when there are no records, and shows them when there are', async () => {
    const published = publishedComparisons(publishedModels());
    const none = accuracyMarkdown(published, [], ['/nowhere/calibration.json'], false);
    assert.match(none, /No calibration file found[^\n]*\n\n- `\/nowhere\/calibration\.json`/);
    assert.match(none, /\| SDXL VAE decode, CUDA \| 1024x1024 \| 6656\.00 MiB/);
    assert.match(none, /### Figures not compared, and why/);
    const some = accuracyMarkdown(published, [await calibrationSection(FIXTURE)], [FIXTURE], true);
    assert.match(some, /From `test\/fixtures\/calibration\/llama-cpu\.json`/);
    assert.equal((some.match(/\| llm\.kv \(cpu\)/g) ?? []).length, 4);
  });
});
