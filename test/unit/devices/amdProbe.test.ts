import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  AmdProbe,
  amdSnapshot,
  parseRocmSmiCsv,
  parseRocmSmiJson,
  parseRocmSmiOutput,
  readAmdSysfs,
} from '../../../sidecar/devices/amdProbe';
import type { DeviceSnapshot } from '../../../sidecar/core/types';
import { fakeTools } from './fakeTools';

const fixture = (name: string) => readFileSync(fileURLToPath(new URL(`../../fixtures/devices/rocm-smi/${name}`, import.meta.url)), 'utf8');

describe('rocm-smi parsing', () => {
  it('reads the JSON shape with the product name', () => {
    assert.deepEqual(parseRocmSmiJson(fixture('meminfo-vram.json')), [
      { index: 0, name: 'Radeon RX 7900 XT', total: 21458059264, used: 27856896 },
    ]);
  });

  it('reads two cards from an older rocm-smi, ignoring the system block and an N/A name', () => {
    const readings = parseRocmSmiJson(fixture('meminfo-vram-2.json'));
    assert.deepEqual(
      readings.map((r) => [r.index, r.name, r.total, r.used]),
      [
        [0, 'Radeon RX 7900 XTX', 25753026560, 12876513280],
        [1, '', 4294967296, 72495104],
      ],
    );
    assert.equal(amdSnapshot(readings[1], 0).name, 'AMD GPU 1');
  });

  it('reads the CSV shape by column name', () => {
    assert.deepEqual(parseRocmSmiCsv(fixture('meminfo-vram.csv')), [
      { index: 0, name: 'Radeon RX 7900 XT', total: 21458059264, used: 27856896 },
    ]);
  });

  it('skips a warning printed before the JSON', () => {
    const [reading] = parseRocmSmiOutput(fixture('meminfo-vram-warning.json'));
    assert.equal(reading.total, 17163091968);
    assert.equal(reading.name, 'Navi 21 [Radeon RX 6800/6800 XT / 6900 XT]');
  });

  it('picks the shape by itself and returns nothing for garbage', () => {
    assert.equal(parseRocmSmiOutput(fixture('meminfo-vram.csv')).length, 1);
    assert.equal(parseRocmSmiOutput(fixture('meminfo-vram.json')).length, 1);
    assert.deepEqual(parseRocmSmiOutput('ERROR: GPU[0] : Unable to get GPU memory use.'), []);
    assert.deepEqual(parseRocmSmiOutput('{"card0": {"VRAM Total Memory (B)": "N/A"}}'), []);
    assert.deepEqual(parseRocmSmiOutput('{ broken'), []);
  });

  it('makes a snapshot with free = total - used', () => {
    const snapshot = amdSnapshot({ index: 2, name: 'MI300X', total: 1000, used: 400 }, 7);
    assert.deepEqual(snapshot, { id: 'amd:2', name: 'MI300X', kind: 'amd', total: 1000, used: 400, free: 600, unified: false, at: 7 });
  });
});

function fakeDrm(cards: { n: number; vendor: string; total?: number; used?: number }[]): string {
  const root = mkdtempSync(join(tmpdir(), 'vram-relay-drm-'));
  for (const card of cards) {
    const device = join(root, `card${card.n}`, 'device');
    mkdirSync(device, { recursive: true });
    writeFileSync(join(device, 'vendor'), `${card.vendor}\n`);
    if (card.total !== undefined) writeFileSync(join(device, 'mem_info_vram_total'), `${card.total}\n`);
    if (card.used !== undefined) writeFileSync(join(device, 'mem_info_vram_used'), `${card.used}\n`);
  }
  mkdirSync(join(root, 'card0-DP-1'));
  return root;
}

describe('amdgpu sysfs', () => {
  it('reads the VRAM files of AMD cards only, in card order', () => {
    const root = fakeDrm([
      { n: 1, vendor: '0x1002', total: 21458059264, used: 100 },
      { n: 0, vendor: '0x8086' },
      { n: 2, vendor: '0x1002' },
    ]);
    try {
      assert.deepEqual(readAmdSysfs(root), [{ card: 1, total: 21458059264, used: 100 }]);
      assert.deepEqual(readAmdSysfs(join(root, 'missing')), []);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});

describe('AmdProbe', { skip: process.platform === 'win32' && 'needs a POSIX shell' }, () => {
  it('asks rocm-smi first, then reads sysfs while watching when the cards match', async () => {
    const tools = fakeTools(['rocm-smi'], 'ok');
    const root = fakeDrm([{ n: 0, vendor: '0x1002', total: 21458059264, used: 5 * 1024 * 1024 * 1024 }]);
    const probe = new AmdProbe({ env: tools.env, sysfsRoot: root });
    try {
      const [first] = await probe.sample();
      assert.equal(first.used, 27856896);
      const watched = await new Promise<DeviceSnapshot[]>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('no sample within 10 s')), 10_000);
        const stop = probe.watch(10, (snapshots) => {
          clearTimeout(timer);
          stop();
          resolve(snapshots);
        });
      });
      assert.equal(watched[0].used, 5 * 1024 * 1024 * 1024, 'the figure came from sysfs');
      assert.equal(watched[0].name, 'Radeon RX 7900 XT', 'with the name rocm-smi gave');
    } finally {
      probe.dispose();
      tools.cleanup();
      rmSync(root, { recursive: true, force: true });
    }
  });

  it('keeps asking rocm-smi when sysfs lists other cards', async () => {
    const tools = fakeTools(['rocm-smi'], 'ok');
    const root = fakeDrm([{ n: 0, vendor: '0x1002', total: 999, used: 1 }]);
    const probe = new AmdProbe({ env: tools.env, sysfsRoot: root });
    try {
      await probe.sample();
      const watched = await new Promise<DeviceSnapshot[]>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('no sample within 10 s')), 10_000);
        const stop = probe.watch(10, (snapshots) => {
          clearTimeout(timer);
          stop();
          resolve(snapshots);
        });
      });
      assert.equal(watched[0].total, 21458059264);
    } finally {
      probe.dispose();
      tools.cleanup();
      rmSync(root, { recursive: true, force: true });
    }
  });
});
