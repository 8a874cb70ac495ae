import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { escapeForLiteral, findPromptAt, looksLikeImagePrompt, markdownLinePrompt, stringLiteralAt, unescapeLiteral } from '../../../src/promptDetection';

describe('looksLikeImagePrompt', () => {
  it('recognises typical prompts', () => {
    for (const text of [
      'a portrait of an old sailor, oil painting, dramatic lighting',
      'cinematic photo of a lighthouse at sunset, 35mm lens',
      'cat, watercolor, pastel colors, soft light',
      'isometric pixel art of a tiny village',
    ]) {
      assert.equal(looksLikeImagePrompt(text), true, text);
    }
  });

  it('ignores code, paths, URLs and ordinary sentences', () => {
    for (const text of [
      'src/components/Button.tsx',
      'https://example.com/photo.png',
      'Could not open the file',
      'SELECT id FROM users WHERE name = ?',
      'x => { return y; }',
      'hello',
    ]) {
      assert.equal(looksLikeImagePrompt(text), false, text);
    }
  });
});

describe('stringLiteralAt', () => {
  it('finds the literal around the cursor, with escapes', () => {
    const line = 'const p = "say \\"hi\\", fox"; const q = \'other\';';
    const found = stringLiteralAt(line, 14);
    assert.equal(found?.text, 'say \\"hi\\", fox');
    assert.equal(line.slice(found!.start, found!.end), found!.text);
    assert.equal(stringLiteralAt(line, 3), undefined);
    assert.equal(stringLiteralAt(line, line.indexOf('other') + 1)?.text, 'other');
  });

  it('does not treat an apostrophe inside a word as a quote', () => {
    assert.equal(stringLiteralAt("// it's a comment", 8), undefined);
  });
});

describe('findPromptAt', () => {
  it('offers a prompt-looking string literal in code', () => {
    const line = '  image = generate("a red fox in the snow, golden hour, highly detailed")';
    const found = findPromptAt(line, 25, 'python');
    assert.equal(found?.source, 'string');
    assert.equal(found?.text, 'a red fox in the snow, golden hour, highly detailed');
  });

  it('offers any literal assigned to something named prompt', () => {
    assert.equal(findPromptAt('const prompt = "a fox";', 18, 'typescript')?.text, 'a fox');
    assert.equal(findPromptAt('{"prompt": "a fox"}', 14, 'json')?.text, 'a fox');
    assert.equal(findPromptAt('let negativePrompt: string = "blurry";', 32, 'typescript')?.text, 'blurry');
  });

  it('leaves ordinary strings alone', () => {
    assert.equal(findPromptAt('throw new Error("Could not open the file");', 20, 'typescript'), undefined);
    assert.equal(findPromptAt('import x from "./photo";', 16, 'typescript'), undefined);
  });

  it('offers a Markdown line without its list marker or label', () => {
    const line = '- **Prompt:** a castle on a hill, watercolor';
    const found = findPromptAt(line, 20, 'markdown');
    assert.equal(found?.source, 'markdown');
    assert.equal(found?.text, 'a castle on a hill, watercolor');
    assert.equal(line.slice(found!.start, found!.end), found!.text);
  });

  it('ignores ordinary Markdown prose and code fences', () => {
    assert.equal(findPromptAt('This project builds with npm.', 5, 'markdown'), undefined);
    assert.equal(findPromptAt('```python', 2, 'markdown'), undefined);
  });

  it('strips only markers from markdown lines', () => {
    assert.deepEqual(markdownLinePrompt('> a foggy forest, cinematic  '), { start: 2, end: 27, text: 'a foggy forest, cinematic' });
  });
});

describe('literal escaping', () => {
  it('escapes the quote, backslashes and newlines for the literal kind', () => {
    assert.equal(escapeForLiteral('say "hi"\nnow', '"'), 'say \\"hi\\"\\nnow');
    assert.equal(escapeForLiteral("it's", "'"), "it\\'s");
    assert.equal(escapeForLiteral('cost ${x} `y`', '`'), 'cost \\${x} \\`y\\`');
    assert.equal(escapeForLiteral('a\\b', '"'), 'a\\\\b');
  });

  it('round-trips through unescapeLiteral', () => {
    const text = 'a "quoted" fox\nsecond line';
    assert.equal(unescapeLiteral(escapeForLiteral(text, '"')), text);
  });
});
