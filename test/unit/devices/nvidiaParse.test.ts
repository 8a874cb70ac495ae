import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import {
  nvidiaAppsQueryArgs,
  nvidiaGpuQueryArgs,
  nvidiaSnapshot,
  parseNvidiaComputeApps,
  parseNvidiaGpuCsv,
  parseNvidiaGpuLine,
  processesByGpu,
} from '../../../sidecar/devices/nvidiaProbe';
import { MiB } from '../../../sidecar/core/types';

const fixture = (name: string) => readFileSync(fileURLToPath(new URL(`../../fixtures/devices/nvidia-smi/${name}`, import.meta.url)), 'utf8');

describe('nvidia-smi --query-gpu parsing', () => {
  it('reads one GPU, keeping used and free as reported (the rest is reserved)', () => {
    assert.deepEqual(parseNvidiaGpuCsv(fixture('query-gpu-1.csv')), [
      {
        index: 0,
        uuid: 'GPU-3f2a8c41-7d2e-5b9a-0c11-8e4f2d6a9b70',
        name: 'NVIDIA GeForce RTX 3060',
        total: 12288 * MiB,
        used: 11545 * MiB,
        free: 367 * MiB,
      },
    ]);
  });

  it('reads two GPUs in index order', () => {
    const readings = parseNvidiaGpuCsv(fixture('query-gpu-2.csv'));
    assert.deepEqual(
      readings.map((r) => [r.index, r.name, r.total / MiB, r.used / MiB, r.free / MiB]),
      [
        [0, 'NVIDIA GeForce RTX 4090', 24564, 1236, 22899],
        [1, 'NVIDIA L40S', 46068, 9123, 36346],
      ],
    );
  });

  it('skips the header and accepts MiB units when the format options are left out', () => {
    const readings = parseNvidiaGpuCsv(fixture('query-gpu-header.csv'));
    assert.equal(readings.length, 1);
    assert.equal(readings[0].free, 367 * MiB);
  });

  it('skips a device whose memory figures are [N/A], and the no-driver message', () => {
    assert.deepEqual(parseNvidiaGpuCsv(fixture('query-gpu-na.csv')), []);
    assert.deepEqual(parseNvidiaGpuCsv(fixture('no-driver.txt')), []);
  });

  it('derives a missing used or free figure from the total', () => {
    assert.equal(parseNvidiaGpuLine('0, GPU-a, Tesla T4, 15360, [N/A], 14000')?.used, 1360 * MiB);
    assert.equal(parseNvidiaGpuLine('0, GPU-a, Tesla T4, 15360, 1360, [Not Supported]')?.free, 14000 * MiB);
  });

  it('rejects garbage without throwing', () => {
    for (const line of ['', 'garbage', '\u0000\u0007 not, a reading', '0, GPU-a, name, abc, 1, 2', 'x, GPU-a, n, 1, 1, 1', '0, , , 1, 1, 1']) {
      assert.equal(parseNvidiaGpuLine(line), null, JSON.stringify(line));
    }
  });

  it('reads every loop of a -lms stream', () => {
    const readings = parseNvidiaGpuCsv(fixture('stream-lms.csv'));
    assert.equal(readings.length, 6);
    assert.deepEqual(
      readings.filter((r) => r.index === 0).map((r) => r.used / MiB),
      [1236, 7380, 14292],
    );
  });

  it('asks for the documented fields, without a shell', () => {
    assert.deepEqual(nvidiaGpuQueryArgs(500), [
      '--query-gpu=index,uuid,name,memory.total,memory.used,memory.free',
      '--format=csv,noheader,nounits',
      '-lms',
      '500',
    ]);
    assert.deepEqual(nvidiaAppsQueryArgs(), ['--query-compute-apps=gpu_uuid,pid,process_name,used_memory', '--format=csv,noheader,nounits']);
  });
});

describe('nvidia-smi --query-compute-apps parsing', () => {
  it('reads pid, name and use per GPU', () => {
    const apps = parseNvidiaComputeApps(fixture('compute-apps.csv'));
    assert.equal(apps.length, 4);
    assert.deepEqual(apps[0], {
      gpuUuid: 'GPU-3f2a8c41-7d2e-5b9a-0c11-8e4f2d6a9b70',
      pid: 1106871,
      name: '/app/llama-server',
      used: 6010 * MiB,
    });
    const byGpu = processesByGpu(apps);
    assert.deepEqual(
      byGpu.get('GPU-b2d6e719-44c0-9a1f-6d3e-71a5c08f2e13')?.map((p) => [p.pid, p.used / MiB]),
      [
        [44378, 1836],
        [44966, 974],
      ],
    );
  });

  it('keeps commas inside a process path', () => {
    const [app] = parseNvidiaComputeApps('GPU-a, 77, /opt/my, odd/app, 12');
    assert.equal(app.name, '/opt/my, odd/app');
    assert.equal(app.used, 12 * MiB);
  });

  it('marks a GPU whose process use is [N/A] (Windows WDDM) as unknown', () => {
    const byGpu = processesByGpu(parseNvidiaComputeApps(fixture('compute-apps-wddm.csv')));
    assert.equal(byGpu.has('GPU-3f2a8c41-7d2e-5b9a-0c11-8e4f2d6a9b70'), true);
    assert.equal(byGpu.get('GPU-3f2a8c41-7d2e-5b9a-0c11-8e4f2d6a9b70'), undefined);
    const [reading] = parseNvidiaGpuCsv(fixture('query-gpu-1.csv'));
    assert.equal(nvidiaSnapshot(reading, 0, byGpu).processes, undefined, 'an unknown list is not an empty one');
  });

  it('reads no process from empty output, and attaches an empty list to a GPU with none', () => {
    assert.deepEqual(parseNvidiaComputeApps(''), []);
    const [reading] = parseNvidiaGpuCsv(fixture('query-gpu-1.csv'));
    const snapshot = nvidiaSnapshot(reading, 42, processesByGpu([]));
    assert.deepEqual(snapshot.processes, []);
    assert.equal(snapshot.id, 'nvidia:0');
    assert.equal(snapshot.kind, 'nvidia');
    assert.equal(snapshot.at, 42);
    assert.equal(nvidiaSnapshot(reading, 42).processes, undefined);
  });
});
