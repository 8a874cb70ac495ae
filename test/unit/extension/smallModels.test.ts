import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { GiB, MiB } from '../../../sidecar/core/types';
import { DecisionLog } from '../../../src/decisionLog';
import { findOnPath } from '../../../src/engineLocator';
import { formatBytes, formatDuration, formatGiB } from '../../../src/format';
import { imageDimensions } from '../../../src/imageFacts';
import { progressMessage, progressPercent } from '../../../src/imageProgress';
import { llmAvailability } from '../../../src/llmAvailability';
import { MemoryHistory } from '../../../src/memoryHistory';
import { modelFitness, rankModelFiles } from '../../../src/modelFiles';
import { RestartBudget } from '../../../src/restartPolicy';
import { decision, imageJob, plan, snapshot } from './fixtures';

describe('format', () => {
  it('formats sizes and durations', () => {
    assert.equal(formatBytes(5.2 * GiB), '5.2 GB');
    assert.equal(formatBytes(512 * MiB), '512 MB');
    assert.equal(formatBytes(-2 * GiB), '-2.0 GB');
    assert.equal(formatGiB(12 * GiB), '12.0');
    assert.equal(formatDuration(850), '850 ms');
    assert.equal(formatDuration(1800), '1.8 s');
    assert.equal(formatDuration(125_000), '2 min 5 s');
  });
});

describe('RestartBudget', () => {
  it('allows a few restarts in the window, then refuses until the window passes or a reset', () => {
    const budget = new RestartBudget(2, 1000);
    assert.equal(budget.allowRestart(0), true);
    assert.equal(budget.allowRestart(10), true);
    assert.equal(budget.allowRestart(20), false);
    assert.equal(budget.allowRestart(1500), true);
    budget.reset();
    assert.equal(budget.allowRestart(1510), true);
  });
});

describe('MemoryHistory', () => {
  it('samples used and our share per device, and forgets old samples', () => {
    const history = new MemoryHistory(1000);
    const first = history.add(snapshot({ at: 0 }));
    assert.equal(first.devices[0].ours, 4.5 * GiB);
    assert.equal(first.devices[0].used, 5.2 * GiB);
    history.add(snapshot({ at: 500 }));
    history.add(snapshot({ at: 1600 }));
    assert.deepEqual(history.all().map((s) => s.at), [1600]);
  });

  it('replaces a sample with the same time instead of duplicating it', () => {
    const history = new MemoryHistory();
    history.add(snapshot({ at: 100 }));
    history.add(snapshot({ at: 100 }));
    assert.equal(history.all().length, 1);
  });
});

describe('DecisionLog', () => {
  it('merges without duplicates, in time order, bounded', () => {
    const log = new DecisionLog(3);
    assert.equal(log.add([decision({ seq: 2, at: 20 }), decision({ seq: 1, at: 10 })]).length, 2);
    assert.equal(log.add([decision({ seq: 2, at: 20 })]).length, 0);
    log.add([decision({ seq: 3, at: 30 }), decision({ seq: 4, at: 40 })]);
    assert.deepEqual(log.all().map((d) => d.seq), [2, 3, 4]);
  });

  it('keeps decisions of a restarted sidecar whose numbering starts again', () => {
    const log = new DecisionLog();
    log.add([decision({ seq: 1, at: 10 })]);
    assert.equal(log.add([decision({ seq: 1, at: 99 })]).length, 1);
  });
});

describe('model files', () => {
  it('offers GGUF to the LLM and checkpoints to the image model, skipping auxiliary files', () => {
    assert.equal(modelFitness('/m/llama-3.2-1b-q4_k_m.gguf', 'llm'), 2);
    assert.equal(modelFitness('/m/sdxl.safetensors', 'llm'), 0);
    assert.equal(modelFitness('/m/sdxl.safetensors', 'image'), 2);
    assert.equal(modelFitness('/m/ae-vae.safetensors', 'image'), 0);
    assert.equal(modelFitness('/m/mmproj-model.gguf', 'llm'), 0);
    assert.equal(modelFitness('/m/flux1-dev-q4_0.gguf', 'image'), 2);
    assert.equal(modelFitness('/m/flux1-dev-q4_0.gguf', 'llm'), 1);
  });

  it('ranks the best fits first', () => {
    assert.deepEqual(rankModelFiles(['/m/qwen.gguf', '/m/flux1-dev.gguf', '/m/sd15.ckpt', '/m/vae.safetensors'], 'image'), ['/m/flux1-dev.gguf', '/m/sd15.ckpt', '/m/qwen.gguf']);
  });
});

describe('imageDimensions', () => {
  it('reads PNG, GIF and JPEG headers', () => {
    const png = Buffer.alloc(24);
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]).copy(png);
    png.writeUInt32BE(1216, 16);
    png.writeUInt32BE(832, 20);
    assert.deepEqual(imageDimensions(png), { width: 1216, height: 832 });

    const gif = Buffer.from('GIF89a\x40\x00\x20\x00', 'latin1');
    assert.deepEqual(imageDimensions(gif), { width: 64, height: 32 });

    const jpeg = Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0x00, 0x04, 0x00, 0x00, 0xff, 0xc0, 0x00, 0x11, 0x08, 0x02, 0x00, 0x03, 0x00, 0x03]);
    assert.deepEqual(imageDimensions(jpeg), { width: 768, height: 512 });
  });

  it('says nothing for other files', () => {
    assert.equal(imageDimensions(Buffer.from('not an image at all, sorry')), undefined);
  });
});

describe('findOnPath', () => {
  it('finds sd.cpp binaries in PATH order', () => {
    const files = new Set(['/opt/sd/sd-cli', '/usr/bin/sd-server', '/usr/local/bin/llama-server']);
    assert.deepEqual(findOnPath('image', '/opt/sd:/usr/bin', 'linux', (f) => files.has(f)), ['/opt/sd/sd-cli', '/usr/bin/sd-server']);
    assert.deepEqual(findOnPath('llmServer', '/usr/local/bin', 'linux', (f) => files.has(f)), ['/usr/local/bin/llama-server']);
  });

  it('tries Windows extensions', () => {
    const files = new Set(['C:\\sd\\sd-cli.exe']);
    assert.deepEqual(findOnPath('image', 'C:\\sd;C:\\other', 'win32', (f) => files.has(f)), ['C:\\sd\\sd-cli.exe']);
  });
});

describe('llmAvailability', () => {
  it('is lent while an image job runs and the LLM is not hot', () => {
    const lent = snapshot({ running: [imageJob()], llm: { ...snapshot().llm, state: 'cold' } });
    assert.equal(llmAvailability(lent, true), 'lent');
    assert.equal(llmAvailability(snapshot({ running: [imageJob()] }), true), 'ready');
    assert.equal(llmAvailability(snapshot(), false), 'unconfigured');
  });

  it('is lent when a running plan yielded the LLM', () => {
    const job = imageJob({ spec: { kind: 'llm', task: 'chat', contextSize: 1 }, plan: plan({ yields: [{ resident: 'llm', from: 'hot', to: 'warm', frees: 1, restoreMs: 1 }] }) });
    assert.equal(llmAvailability(snapshot({ running: [job], llm: { ...snapshot().llm, state: 'warm' } }), true), 'lent');
  });

  it('is ready while lent when the CPU copy of the model can answer, and lent again once it was set aside', () => {
    const withCopy = (cpuCopy: 'available' | 'running' | 'set-aside') => snapshot({ running: [imageJob()], llm: { ...snapshot().llm, state: 'cold', cpuCopy } });
    assert.equal(llmAvailability(withCopy('available'), true), 'ready');
    assert.equal(llmAvailability(withCopy('running'), true), 'ready');
    assert.equal(llmAvailability(withCopy('set-aside'), true), 'lent');
  });
});

describe('image progress', () => {
  it('moves through the stages and fills sampling by step', () => {
    assert.equal(progressPercent({ jobId: 'a', stage: 'queued' }), 0);
    assert.equal(progressPercent({ jobId: 'a', stage: 'diffusion', step: 10, totalSteps: 20 }), 48);
    assert.equal(progressPercent({ jobId: 'a', stage: 'vaeDecode' }), 88);
    assert.equal(progressMessage({ jobId: 'a', stage: 'diffusion', step: 3, totalSteps: 20 }), 'Sampling 3/20');
    assert.equal(progressMessage({ jobId: 'a', stage: 'retrying', message: 'tiled VAE' }), 'Retrying with a safer plan: tiled VAE');
  });
});
