/**
 * Real-GPU check: runs the LLM worker with a random-weight model of a real shape (7B at Q4_0, 8k context) and
 * records device memory per state against the estimates. Memory depends on shapes, not on weight values, so the
 * figures are those of a real 7B model.
 *
 *   node --import tsx bench/gpu-check.ts [--layers 32] [--context 8192] [--out results.json]
 *
 * Prints `SKIP` and exits 0 on a machine without a GPU. Writes a ~3.8 GB model to the temp folder.
 */

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { selectProbe } from '../sidecar/devices/selectProbe';
import { readLlmModelMeta } from '../sidecar/models/llmModelMeta';
import { estimateLlm, offloadableLayers } from '../sidecar/core/estimators/llmEstimator';
import { EmbeddedLlm, sourceLlmWorkerEntry } from '../sidecar/workers/llm/embeddedLlm';
import { formatBytes } from '../sidecar/core/format';
import type { DeviceProbe, LlmState } from '../sidecar/core/types';
import { writeLlamaGguf } from '../test/helpers/ggufWriter';

const { values } = parseArgs({
  options: { layers: { type: 'string', default: '32' }, context: { type: 'string', default: '8192' }, out: { type: 'string' } },
});

async function usedNow(probe: DeviceProbe, deviceId: string): Promise<number> {
  const sample = (await probe.sample()).find((s) => s.id === deviceId);
  if (!sample) throw new Error(`device ${deviceId} disappeared`);
  return sample.used;
}

async function main(): Promise<void> {
  const selection = await selectProbe('auto');
  if (selection.kind === 'cpu' || selection.kind === 'simulated') {
    console.log(`SKIP: no GPU on this machine (${selection.reason})`);
    return;
  }
  const device = selection.snapshots[0];
  console.log(`device: ${device.name} (${device.id}), ${formatBytes(device.total)} total, ${formatBytes(device.free)} free`);

  const dir = mkdtempSync(join(tmpdir(), 'vram-relay-gpu-check-'));
  try {
    const modelPath = join(dir, 'random-7b-q4_0.gguf');
    const layers = Number(values.layers);
    const contextSize = Number(values.context);
    await writeLlamaGguf(modelPath, {
      layers,
      embeddingLength: 4096,
      headCount: 32,
      headCountKv: 8,
      feedForwardLength: 11008,
      contextLength: contextSize,
      weightType: 'q4_0',
      name: 'random 7B-shaped',
    });
    const meta = await readLlmModelMeta(modelPath);
    const gpuLayers = offloadableLayers(meta);
    const estimate = estimateLlm(meta, { gpuLayers, contextSize, kvType: 'f16' });

    const llm = new EmbeddedLlm({ modelPath, contextSize, gpuLayers, gpu: 'auto', worker: sourceLlmWorkerEntry() });
    const baseline = await usedNow(selection.probe, device.id);
    const rows: { state: LlmState; tookMs: number; measured: number; estimated: number }[] = [];
    const expected: Record<LlmState, number> = {
      hot: estimate.weights + estimate.kvCache + estimate.compute,
      warm: estimate.weights,
      cold: 0,
      stopped: 0,
    };
    for (const state of ['warm', 'hot', 'warm', 'cold', 'hot', 'stopped'] as LlmState[]) {
      const { tookMs } = await llm.setState(state);
      // The driver's figure lags; give it a moment to settle.
      await new Promise((resolve) => setTimeout(resolve, 1500));
      const measured = (await usedNow(selection.probe, device.id)) - baseline;
      rows.push({ state, tookMs, measured, estimated: expected[state] });
    }
    await llm.dispose();

    console.log('\nstate    took      measured   estimated   error');
    for (const row of rows) {
      const error = row.estimated > 0 ? `${(((row.estimated - row.measured) / row.measured) * 100).toFixed(1)}%` : '-';
      console.log(
        `${row.state.padEnd(8)} ${`${row.tookMs.toFixed(0)} ms`.padEnd(9)} ${formatBytes(row.measured).padEnd(10)} ${formatBytes(row.estimated).padEnd(11)} ${error}`,
      );
    }
    if (values.out) writeFileSync(values.out, JSON.stringify({ device, estimate, rows }, null, 2));
    console.log('\nsd.cpp: run the same check with a real sd-cli through the sidecar (vramRelay/submitJob); its logged buffers go to calibration.');
  } finally {
    selection.probe.dispose();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : error);
  process.exitCode = 1;
});
