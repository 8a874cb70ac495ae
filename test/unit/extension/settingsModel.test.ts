import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { changedRestartSettings, toExtensionSettings, toSidecarSettings, touchesSidecar } from '../../../src/settingsModel';

const from = (values: Record<string, unknown>) => (key: string) => values[key];

describe('toSidecarSettings', () => {
  it('uses the defaults when nothing is set', () => {
    const s = toSidecarSettings(from({}), { storageDir: '/store', trusted: true });
    assert.equal(s.device, 'auto');
    assert.equal(s.safetyMarginMiB, 512);
    assert.equal(s.llm.engine, 'embedded');
    assert.equal(s.llm.contextSize, 4096);
    assert.equal(s.image.keepResident, true);
    assert.equal(s.storageDir, '/store');
    assert.equal(s.allowBinaries, true);
  });

  it('maps every setting and trims paths', () => {
    const s = toSidecarSettings(
      from({
        'memory.device': 'simulated',
        'memory.simulatedCapacityMiB': 8192,
        'llm.modelPath': ' /m/llm.gguf ',
        'llm.engine': 'server',
        'llm.serverPath': '/bin/llama-server',
        'llm.idleWarmSeconds': 60,
        'llm.idleColdSeconds': 0,
        'llm.cpuWhileImageRuns': false,
        'image.binaryPath': '/bin/sd-cli',
        'image.modelPath': '/m/sdxl.safetensors',
        'image.keepResident': false,
      }),
      { storageDir: '/s', trusted: true },
    );
    assert.equal(s.device, 'simulated');
    assert.equal(s.simulatedCapacityMiB, 8192);
    assert.equal(s.llm.modelPath, '/m/llm.gguf');
    assert.equal(s.llm.engine, 'server');
    assert.equal(s.llm.idleColdSeconds, 0);
    assert.equal(s.llm.cpuWhileImageRuns, false);
    assert.equal(s.image.binaryPath, '/bin/sd-cli');
    assert.equal(s.image.keepResident, false);
  });

  it('answers on the CPU copy of the LLM while an image runs unless the user turned it off', () => {
    assert.equal(toSidecarSettings(from({}), { storageDir: '', trusted: true }).llm.cpuWhileImageRuns, true);
    assert.equal(toSidecarSettings(from({ 'llm.cpuWhileImageRuns': 'no' }), { storageDir: '', trusted: true }).llm.cpuWhileImageRuns, true);
  });

  it('clamps numbers and ignores unknown choices', () => {
    const s = toSidecarSettings(from({ 'memory.pollIntervalMs': 5, 'memory.device': 'gpu', 'llm.contextSize': 'big' }), { storageDir: '', trusted: true });
    assert.equal(s.pollIntervalMs, 100);
    assert.equal(s.device, 'auto');
    assert.equal(s.llm.contextSize, 4096);
  });

  it('launches no binaries in an untrusted workspace', () => {
    assert.equal(toSidecarSettings(from({}), { storageDir: '', trusted: false }).allowBinaries, false);
  });
});

describe('extension settings', () => {
  it('reads output, style and model folders', () => {
    const s = toExtensionSettings(from({ 'prompt.enhancementStyle': 'tags', 'models.folders': [' ~/models ', '', 3], 'completions.enabled': false }));
    assert.equal(s.imageFolder, 'assets/generated');
    assert.equal(s.enhancementStyle, 'tags');
    assert.deepEqual(s.modelFolders, ['~/models']);
    assert.equal(s.completionsEnabled, false);
    assert.equal(s.imagePriority, 'normal');
  });
});

describe('configuration changes', () => {
  it('names the settings that need a sidecar restart', () => {
    const touched = new Set(['memory.device', 'memory.safetyMarginMiB']);
    assert.deepEqual(changedRestartSettings((k) => touched.has(k)), ['vramRelay.memory.device']);
  });

  it('knows which changes the sidecar must hear about', () => {
    assert.equal(touchesSidecar((k) => k === 'memory.safetyMarginMiB'), true);
    assert.equal(touchesSidecar((k) => k === 'output.imageFolder' || k === 'prompt.enhancementStyle'), false);
  });
});
