import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  askAboutCodeSpec,
  cleanCompletion,
  cleanEnhancedPrompt,
  enhancePromptSpec,
  INFILL_PREFIX_CHARS,
  INFILL_PREFIX_STEP,
  infillPrefixStart,
  infillSpec,
  parseTagAnswer,
  tagImageSpec,
} from '../../../src/llmTasks';

describe('prompt enhancement', () => {
  it('asks for the configured style', () => {
    const tags = enhancePromptSpec(' a fox ', 'tags', 2048);
    assert.equal(tags.task, 'enhancePrompt');
    assert.equal(tags.contextSize, 2048);
    assert.match(tags.messages?.[0].content ?? '', /comma-separated list of short tags/);
    assert.equal(tags.messages?.[1].content, 'a fox');
    assert.match(enhancePromptSpec('a fox', 'detailed', 2048).messages?.[0].content ?? '', /one rich paragraph/);
  });

  it('strips labels, quotes, fences and extra lines from the answer', () => {
    assert.equal(cleanEnhancedPrompt('Here is the enhanced prompt: "a fox in snow, soft light"', 'concise', 'x'), 'a fox in snow, soft light');
    assert.equal(cleanEnhancedPrompt('Prompt: a fox\n\nThis prompt adds lighting.', 'concise', 'x'), 'a fox');
    assert.equal(cleanEnhancedPrompt('```\nfox, snow, 8k\n```', 'tags', 'x'), 'fox, snow, 8k');
    assert.equal(cleanEnhancedPrompt('A fox.\nIn deep snow.', 'detailed', 'x'), 'A fox. In deep snow.');
  });

  it('keeps the original when nothing usable came back', () => {
    assert.equal(cleanEnhancedPrompt('   ', 'concise', 'a fox'), 'a fox');
  });
});

describe('fill-in-the-middle', () => {
  it('sends the end of the prefix and the start of the suffix', () => {
    const prefix = 'p'.repeat(INFILL_PREFIX_CHARS + INFILL_PREFIX_STEP + 50) + 'END';
    const spec = infillSpec(prefix, 'START' + 's'.repeat(5000), 4096);
    assert.equal(spec.task, 'infill');
    assert.ok(spec.prefix!.endsWith('END'));
    assert.equal(spec.prefix!.length, INFILL_PREFIX_CHARS + INFILL_PREFIX_STEP);
    assert.ok(spec.suffix!.startsWith('START'));
  });

  it('starts the prefix where it started for the last keystrokes, so that the engine can reuse it', () => {
    assert.equal(infillPrefixStart(0), 0);
    assert.equal(infillPrefixStart(INFILL_PREFIX_CHARS), 0, 'the whole file while it is short');
    const cursor = 20_000;
    const start = infillPrefixStart(cursor);
    assert.ok(cursor - start >= INFILL_PREFIX_CHARS && cursor - start < INFILL_PREFIX_CHARS + INFILL_PREFIX_STEP);
    // Typing on keeps the start until the prefix has grown by a whole step.
    const typedOn = Array.from({ length: 200 }, (_, i) => infillPrefixStart(cursor + i));
    assert.ok(new Set(typedOn).size <= 2);
    assert.ok(typedOn.every((s) => s === start || s === start + INFILL_PREFIX_STEP));
    assert.equal(infillPrefixStart(cursor + INFILL_PREFIX_STEP), start + INFILL_PREFIX_STEP);
  });

  it('drops blank answers and text that repeats what follows the cursor', () => {
    assert.equal(cleanCompletion('  \n ', ''), '');
    assert.equal(cleanCompletion('a + b;\n}\nfunction next() {', '\n}\nfunction next() {\n  return 1;'), 'a + b;');
    assert.equal(cleanCompletion('return x;', ''), 'return x;');
    assert.equal(cleanCompletion('<|fim_middle|>value', ''), 'value');
  });
});

describe('code questions and image tags', () => {
  it('puts the code in a fenced block of its language', () => {
    const spec = askAboutCodeSpec('Why?', 'let a = 1;', 'typescript', 'a.ts', 4096);
    assert.equal(spec.task, 'chat');
    assert.match(spec.messages?.[1].content ?? '', /Why\?\n\nFile: a\.ts\n\n```typescript\nlet a = 1;\n```/);
  });

  it('tells the model it cannot see the image and gives it the facts', () => {
    const spec = tagImageSpec({ fileName: 'fox.png', bytes: 1234, width: 512, height: 512, prompt: 'a fox' }, 2048);
    assert.equal(spec.task, 'tagImage');
    assert.match(spec.messages?.[0].content ?? '', /cannot see the image/);
    assert.match(spec.messages?.[1].content ?? '', /Dimensions: 512 x 512[\s\S]*Prompt it was generated from: a fox/);
  });

  it('parses tags and alt text, tolerating loose formats', () => {
    assert.deepEqual(parseTagAnswer('Tags: fox, #snow, winter.\nAlt text: A fox in snow.'), { tags: ['fox', 'snow', 'winter'], altText: 'A fox in snow.' });
    assert.deepEqual(parseTagAnswer('Just a picture of a fox'), { tags: [], altText: 'Just a picture of a fox' });
  });
});
