/**
 * Real-GPU check: runs both workers with random-weight models of real shapes and records device memory against
 * the estimates. Memory depends on shapes, not on weight values, so the figures are those of the real models.
 * - LLM: the embedded llama.cpp worker with a 7B-shaped model at Q4_0 (8k context), per state (hot/warm/cold).
 * - sd.cpp: a real sd-cli (SD_CPP_BIN, or on PATH) through the image worker with an SD1.5-shaped fp16 checkpoint,
 *   at 512x512 and 1024x1024 with and without VAE tiling: peak per stage and logged buffers against the estimator.
 *
 *   node --import tsx bench/gpu-check.ts [--part all|llm|sd] [--layers 32] [--context 8192]
 *                                        [--sd-sizes 512,1024] [--sd-steps 4] [--out results.json]
 *
 * Prints `SKIP` and exits 0 on a machine without a GPU (and skips the sd.cpp part without a binary). Writes a
 * ~3.8 GB model and a ~2.1 GB checkpoint to the temp folder.
 */

import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { selectProbe } from '../sidecar/devices/selectProbe';
import { readLlmModelMeta } from '../sidecar/models/llmModelMeta';
import { estimateLlm, offloadableLayers } from '../sidecar/core/estimators/llmEstimator';
import { EmbeddedLlm, sourceLlmWorkerEntry } from '../sidecar/workers/llm/embeddedLlm';
import { formatBytes } from '../sidecar/core/format';
import type { DeviceProbe, DeviceSnapshot, LlmState } from '../sidecar/core/types';
import { writeLlamaGguf } from '../test/helpers/ggufWriter';
import { writeRandomSd15 } from './gpuCheck/randomCheckpoint';
import { findSdCli, formatSdCheck, runSdCheck, type SdCheckRun } from './gpuCheck/sdCheck';

const { values } = parseArgs({
  options: {
    part: { type: 'string', default: 'all' },
    layers: { type: 'string', default: '32' },
    context: { type: 'string', default: '8192' },
    'sd-sizes': { type: 'string', default: '512,1024' },
    'sd-steps': { type: 'string', default: '4' },
    out: { type: 'string' },
  },
});

async function usedNow(probe: DeviceProbe, deviceId: string): Promise<number> {
  const sample = (await probe.sample()).find((s) => s.id === deviceId);
  if (!sample) throw new Error(`device ${deviceId} disappeared`);
  return sample.used;
}

type Part = 'all' | 'llm' | 'sd';

function partOption(): Part {
  const part = values.part;
  if (part === 'all' || part === 'llm' || part === 'sd') return part;
  throw new Error(`--part must be all, llm or sd (got ${part})`);
}

function sizesOption(): number[] {
  const sizes = (values['sd-sizes'] ?? '').split(',').map((size) => Number(size.trim()));
  if (sizes.length === 0 || !sizes.every((size) => Number.isInteger(size) && size >= 64 && size % 64 === 0)) {
    throw new Error(`--sd-sizes wants sizes in pixels, multiples of 64, like 512,1024 (got ${values['sd-sizes']})`);
  }
  return sizes;
}

async function main(): Promise<void> {
  const part = partOption();
  const sizes = sizesOption();
  const steps = Number(values['sd-steps']);
  if (!Number.isInteger(steps) || steps < 1) throw new Error(`--sd-steps wants a whole number of steps (got ${values['sd-steps']})`);
  const sd = part === 'llm' ? { missing: 'not asked for (--part llm)' } : findSdCli();

  const selection = await selectProbe('auto');
  if (selection.kind === 'cpu' || selection.kind === 'simulated') {
    selection.probe.dispose();
    console.log(`SKIP: no GPU on this machine (${selection.reason})`);
    console.log(sd.binary ? `SKIP sd.cpp: ${sd.binary} was found, but there is no GPU to measure it on` : `SKIP sd.cpp: ${sd.missing}`);
    return;
  }
  const device = selection.snapshots[0];
  console.log(`device: ${device.name} (${device.id}), ${formatBytes(device.total)} total, ${formatBytes(device.free)} free`);

  const dir = mkdtempSync(join(tmpdir(), 'vram-relay-gpu-check-'));
  const results: { device: typeof device; llm?: Awaited<ReturnType<typeof llmCheck>>; sd?: SdCheckRun[] } = { device };
  try {
    if (part !== 'sd') results.llm = await llmCheck(selection.probe, device.id, dir);
    if (part !== 'llm') {
      if (sd.binary) results.sd = await sdCheck(selection.probe, device, dir, sd.binary, sizes, steps);
      else console.log(`\nSKIP sd.cpp: ${sd.missing}`);
    }
    if (values.out) writeFileSync(values.out, JSON.stringify(results, null, 2));
  } finally {
    selection.probe.dispose();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function llmCheck(probe: DeviceProbe, deviceId: string, dir: string) {
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
  const baseline = await usedNow(probe, deviceId);
  const rows: { state: LlmState; tookMs: number; measured: number; estimated: number }[] = [];
  const expected: Record<LlmState, number> = {
    hot: estimate.weights + estimate.kvCache + estimate.compute,
    warm: estimate.weights,
    cold: 0,
    stopped: 0,
  };
  try {
    for (const state of ['warm', 'hot', 'warm', 'cold', 'hot', 'stopped'] as LlmState[]) {
      const { tookMs } = await llm.setState(state);
      // The driver's figure lags; give it a moment to settle.
      await new Promise((resolve) => setTimeout(resolve, 1500));
      const measured = (await usedNow(probe, deviceId)) - baseline;
      rows.push({ state, tookMs, measured, estimated: expected[state] });
    }
  } finally {
    await llm.dispose();
    rmSync(modelPath, { force: true });
  }

  console.log('\nLLM (7B-shaped, Q4_0)');
  console.log('state    took      measured   estimated   error');
  for (const row of rows) {
    const error = row.estimated > 0 ? `${(((row.estimated - row.measured) / row.measured) * 100).toFixed(1)}%` : '-';
    console.log(
      `${row.state.padEnd(8)} ${`${row.tookMs.toFixed(0)} ms`.padEnd(9)} ${formatBytes(row.measured).padEnd(10)} ${formatBytes(row.estimated).padEnd(11)} ${error}`,
    );
  }
  return { estimate, rows };
}

async function sdCheck(probe: DeviceProbe, device: DeviceSnapshot, dir: string, binaryPath: string, sizes: number[], steps: number): Promise<SdCheckRun[]> {
  console.log(`\nsd.cpp: ${binaryPath}; writing a random-weight SD1.5 checkpoint (fp16)...`);
  const modelPath = join(dir, 'random-sd15-f16.safetensors');
  let lastTenth = -1;
  const model = await writeRandomSd15(modelPath, (written, total) => {
    const tenth = Math.floor((written / total) * 10);
    if (tenth !== lastTenth) process.stdout.write(tenth === 10 ? ' done\n' : ` ${tenth * 10}%`);
    lastTenth = tenth;
  });
  const outDir = join(dir, 'sd-out');
  mkdirSync(outDir, { recursive: true });
  try {
    const runs = await runSdCheck({ binaryPath, modelPath, model, probe, deviceId: device.id, deviceKind: device.kind, outDir, sizes, steps });
    console.log(formatSdCheck(runs));
    return runs;
  } finally {
    rmSync(modelPath, { force: true });
  }
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : error);
  process.exitCode = 1;
});
