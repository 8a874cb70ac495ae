/**
 * Fuzzing of the device tools' output parsers (nvidia-smi CSV, rocm-smi JSON and CSV). Properties: no exception,
 * and every reading they do return is usable: whole, finite, non-negative figures and a positive total.
 */

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { amdSnapshot, parseRocmSmiOutput } from '../../../sidecar/devices/amdProbe';
import { nvidiaSnapshot, parseNvidiaComputeApps, parseNvidiaGpuCsv, processesByGpu } from '../../../sidecar/devices/nvidiaProbe';
import type { DeviceSnapshot } from '../../../sidecar/core/types';
import { cases, describeCase, fuzz, mutateTextTimes } from './fuzzKit';

const fixtures = (tool: string): string[] => {
  const dir = fileURLToPath(new URL(`../../fixtures/devices/${tool}/`, import.meta.url));
  return readdirSync(dir).map((name) => readFileSync(`${dir}${name}`, 'utf8'));
};

const NVIDIA = fixtures('nvidia-smi');
const ROCM = fixtures('rocm-smi');
const NUMBER_WORDS = ['99999999999999999999999', '1e400', '-5', '0', '[N/A]', '[Not Supported]', ' MiB', '4294967296', '18446744073709551616', ', ', ',,,,'];

/** Figures a snapshot must have for the arbiter to use it. */
function checkSnapshot(snapshot: DeviceSnapshot, where: string): void {
  for (const key of ['total', 'used', 'free'] as const) {
    const value = snapshot[key];
    assert.ok(Number.isSafeInteger(value) && value >= 0, `${where}: ${key} is ${value}`);
  }
  assert.ok(snapshot.total > 0, `${where}: total is ${snapshot.total}`);
  for (const process of snapshot.processes ?? []) {
    assert.ok(Number.isSafeInteger(process.pid) && process.pid >= 0, `${where}: pid ${process.pid}`);
    assert.ok(Number.isSafeInteger(process.used) && process.used >= 0, `${where}: process use ${process.used}`);
  }
}

describe('fuzz: nvidia-smi output', () => {
  it('returns only usable readings from mutated CSV', { timeout: 60_000 }, async () => {
    let readingsSeen = 0;
    await fuzz('nvidia', cases(2000), (random, index) => {
      const gpus = mutateTextTimes(random, random.pick(NVIDIA), NUMBER_WORDS);
      const apps = mutateTextTimes(random, random.pick(NVIDIA), NUMBER_WORDS);
      const where = describeCase('nvidia', index, `${gpus}\n---\n${apps}`);
      const processes = processesByGpu(parseNvidiaComputeApps(apps));
      for (const reading of parseNvidiaGpuCsv(gpus)) {
        readingsSeen++;
        assert.ok(Number.isSafeInteger(reading.index) && reading.index >= 0, `${where}: index ${reading.index}`);
        checkSnapshot(nvidiaSnapshot(reading, 0, processes), where);
      }
    });
    assert.ok(readingsSeen > 0, 'some mutated outputs still hold readings');
  });
});

describe('fuzz: rocm-smi output', () => {
  it('returns only usable readings from mutated JSON and CSV', { timeout: 60_000 }, async () => {
    let readingsSeen = 0;
    await fuzz('rocm', cases(2000), (random, index) => {
      const text = mutateTextTimes(random, random.pick(ROCM), [...NUMBER_WORDS, '"card1": ', '{', '}', '"VRAM Total Memory (B)": ', 'card3,']);
      const where = describeCase('rocm', index, text);
      for (const reading of parseRocmSmiOutput(text)) {
        readingsSeen++;
        assert.ok(Number.isSafeInteger(reading.index) && reading.index >= 0, `${where}: index ${reading.index}`);
        checkSnapshot(amdSnapshot(reading, 0), where);
      }
    });
    assert.ok(readingsSeen > 0, 'some mutated outputs still hold readings');
  });

  it('copes with deeply nested and huge JSON', { timeout: 30_000 }, () => {
    for (const text of [`${'['.repeat(200_000)}${']'.repeat(200_000)}`, `{"card0": ${'{"a":'.repeat(50_000)}1${'}'.repeat(50_000)}}`, `{"card0": {"VRAM Total Memory (B)": "${'9'.repeat(100_000)}", "VRAM Total Used Memory (B)": "1"}}`]) {
      assert.deepEqual(parseRocmSmiOutput(text), []);
    }
  });
});
