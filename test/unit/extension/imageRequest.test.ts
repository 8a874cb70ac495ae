import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  parseSeed,
  parseSize,
  sizeMultipleFor,
  toImageJobSpec,
  validateBatch,
  validateImageRequest,
  validateSide,
  validateSteps,
  type ImageRequest,
} from '../../../src/imageRequest';

describe('image size', () => {
  it('parses the usual ways of writing a size', () => {
    assert.deepEqual(parseSize('1024x768'), { width: 1024, height: 768 });
    assert.deepEqual(parseSize(' 1024 × 768 '), { width: 1024, height: 768 });
    assert.deepEqual(parseSize('832*1216'), { width: 832, height: 1216 });
    assert.deepEqual(parseSize('512'), { width: 512, height: 512 });
  });

  it('explains what is wrong and what to type instead', () => {
    const notMultiple = parseSize('1001x1000');
    assert.ok('error' in notMultiple);
    assert.match(notMultiple.error, /Width 1001 is not a multiple of 8.*use 1000 or 1008/);
    assert.match((parseSize('32x32') as { error: string }).error, /out of range: use 64 to 4096/);
    assert.match((parseSize('8192x512') as { error: string }).error, /Width 8192 is out of range/);
    assert.match((parseSize('big') as { error: string }).error, /not a size/);
    assert.match((parseSize('') as { error: string }).error, /Type a size/);
  });

  it('asks transformer models for multiples of 16', () => {
    assert.equal(sizeMultipleFor('/models/flux1-dev-Q4_K.gguf'), 16);
    assert.equal(sizeMultipleFor('C:\\models\\sd3.5_medium.safetensors'), 16);
    assert.equal(sizeMultipleFor('/models/sd_xl_base_1.0.safetensors'), 8);
    assert.equal(validateSide('Height', 1032, 16), 'Height 1032 is not a multiple of 16 (this model needs it): use 1024 or 1040.');
    assert.equal(validateSide('Height', 1032, 8), undefined);
  });
});

describe('steps, batch and seed', () => {
  it('accepts sensible values and rejects others with a range', () => {
    assert.equal(validateSteps('20'), undefined);
    assert.match(validateSteps('0') ?? '', /between 1 and 150/);
    assert.match(validateSteps('2.5') ?? '', /whole number/);
    assert.equal(validateBatch('4'), undefined);
    assert.match(validateBatch('17') ?? '', /between 1 and 16/);
  });

  it('treats blank, random and -1 as a random seed', () => {
    assert.equal(parseSeed(''), undefined);
    assert.equal(parseSeed('random'), undefined);
    assert.equal(parseSeed('-1'), undefined);
    assert.equal(parseSeed('42'), 42);
    assert.ok(typeof parseSeed('-5') === 'object');
  });
});

describe('whole request', () => {
  const good: ImageRequest = { prompt: 'a fox', modelPath: '/m/sdxl.safetensors', width: 1024, height: 1024, steps: 20, batch: 1, seed: 7 };

  it('has no problems when everything is right', () => {
    assert.deepEqual(validateImageRequest(good), []);
  });

  it('lists every problem', () => {
    const problems = validateImageRequest({ ...good, prompt: ' ', modelPath: '', width: 100, batch: 0 });
    assert.equal(problems.length, 4);
    assert.match(problems.join('\n'), /Describe the image/);
    assert.match(problems.join('\n'), /Select Models/);
  });

  it('becomes a job spec with a trimmed prompt', () => {
    const spec = toImageJobSpec({ ...good, prompt: '  a fox  ', negativePrompt: 'blurry' }, '/w/a.png');
    assert.equal(spec.kind, 'image');
    assert.equal(spec.prompt, 'a fox');
    assert.equal(spec.negativePrompt, 'blurry');
    assert.equal(spec.outputPath, '/w/a.png');
  });
});
