import { describe, it } from 'node:test';
import assert from 'node:assert/strict';

import { LlmSpeedModel, priorRequestMs, promptTokensOf, tokensOfText } from '../../../sidecar/core/estimators/llmSpeed';
import { PromptReuse, promptText } from '../../../sidecar/core/estimators/promptReuse';
import { GiB, type LlmJobSpec } from '../../../sidecar/core/types';

const MODEL = 4 * GiB;
const spec = (overrides: Partial<LlmJobSpec> = {}): LlmJobSpec => ({ kind: 'llm', task: 'chat', contextSize: 8192, prompt: 'x'.repeat(4000), maxTokens: 200, ...overrides });

describe('LLM request time', () => {
  it('counts prompt tokens over the prompt, the messages and the fill-in-the-middle parts', () => {
    assert.equal(tokensOfText('abcdefgh'), 2);
    assert.equal(promptTokensOf({ prompt: 'abcd', prefix: 'abcdefgh', suffix: 'ab', messages: [{ role: 'user', content: 'abcdef' }] }), 5);
    assert.equal(promptTokensOf({}), 0);
  });

  it('the prior: generation reads the whole model per token; the CPU is several times slower than the GPU', () => {
    const size = { promptTokens: 1000, outputTokens: 100 };
    const cpu = priorRequestMs('cpu', size, MODEL);
    const gpu = priorRequestMs('gpu', size, MODEL);
    // 4 GiB at 25 GB/s: 172 ms a generated token, 17 ms a prompt token.
    assert.ok(Math.abs(cpu - (50 + 1000 * 17.18 + 100 * 171.8)) < 5, `cpu ${cpu}`);
    assert.ok(cpu / gpu > 10, `cpu ${cpu} vs gpu ${gpu}`);
    assert.ok(priorRequestMs('cpu', size, 2 * MODEL) > 1.9 * cpu - 100, 'twice the model, about twice the time');
  });

  it('expects half the cap of output until a request of the task has been seen, then what the task produced', () => {
    const model = new LlmSpeedModel();
    assert.equal(model.expectedOutputTokens({ task: 'chat', maxTokens: 200 }), 100);
    assert.equal(model.expectedOutputTokens({ task: 'chat' }), 128);
    model.observe('gpu', spec(), 'y'.repeat(160), 1000, MODEL);
    assert.equal(model.expectedOutputTokens({ task: 'chat', maxTokens: 200 }), 40);
    assert.equal(model.expectedOutputTokens({ task: 'chat', maxTokens: 10 }), 10, 'never above the cap');
    assert.equal(model.expectedOutputTokens({ task: 'completion', maxTokens: 64 }), 32, 'per task');
  });

  it('learns each lane\'s speed from what requests took: the first replaces the prior, later ones move it part way', () => {
    const model = new LlmSpeedModel();
    const request = spec();
    const answer = 'y'.repeat(400);
    const prior = priorRequestMs('cpu', { promptTokens: 1000, outputTokens: 100 }, MODEL);
    const first = model.observe('cpu', request, answer, prior * 2, MODEL);
    assert.equal(first.estimateMs, Math.round(prior), 'estimated with the prior before it learnt');
    assert.equal(model.measured('cpu'), true);
    assert.equal(model.measured('gpu'), false);
    assert.equal(model.estimateMs('cpu', request, MODEL), Math.round(prior * 2));
    // A request that took the prior's time again: 30% of the way back, in log space.
    model.observe('cpu', request, answer, prior, MODEL);
    assert.ok(Math.abs(model.estimateMs('cpu', request, MODEL) - prior * 2 ** 0.7) < 2);
    // The GPU lane is untouched.
    assert.equal(model.estimateMs('gpu', request, MODEL), Math.round(priorRequestMs('gpu', { promptTokens: 1000, outputTokens: 100 }, MODEL)));
  });

  it('ignores a request that took no time', () => {
    const model = new LlmSpeedModel();
    model.observe('cpu', spec(), 'y'.repeat(400), 0, MODEL);
    assert.equal(model.measured('cpu'), false);
  });
});

describe('prompt reuse', () => {
  const infill = (prefix: string, suffix = 's'.repeat(400)): LlmJobSpec => ({ kind: 'llm', task: 'infill', contextSize: 8192, prefix, suffix, maxTokens: 64 });

  it('holds nothing at first, then the prompt it served: the next prompt costs only what follows the match', () => {
    const reuse = new PromptReuse();
    const file = 'p'.repeat(4000);
    assert.equal(reuse.reusableTokens(infill(file)), 0);
    reuse.ended(infill(file), 'answered');
    // The user typed at the cursor: the prefix up to the edit is held, the suffix after it is not.
    const typed = reuse.reusableTokens(infill(`${file}const x`));
    assert.equal(typed, 1000);
    assert.ok(typed < promptTokensOf(infill(`${file}const x`)));
    // Another place: nothing in common.
    assert.equal(reuse.reusableTokens(infill(`q${file}`)), 0);
    reuse.clear();
    assert.equal(reuse.reusableTokens(infill(file)), 0);
  });

  it('holds nothing once the engine has died since, even when it came back by itself', () => {
    let crashes = 0;
    const reuse = new PromptReuse(() => crashes);
    const file = 'p'.repeat(4000);
    reuse.ended(infill(file), 'answered');
    assert.equal(reuse.reusableTokens(infill(`${file}const x`)), 1000);
    crashes++;
    assert.equal(reuse.reusableTokens(infill(`${file}const x`)), 0, 'a restarted worker has a new, empty context');
    reuse.ended(infill(file), 'answered');
    assert.equal(reuse.reusableTokens(infill(`${file}const x`)), 1000, 'the prompt served after the restart is held');
  });

  it('never matches a prefix with a suffix, nor one task with another', () => {
    const reuse = new PromptReuse();
    reuse.ended(infill('abcd'.repeat(10), ''), 'answered');
    assert.equal(reuse.reusableTokens(infill('abcd'.repeat(5), 'abcd'.repeat(5))), 5, 'the match stops at the end of the shorter prefix');
    assert.equal(promptText({ task: 'completion', prompt: 'abc' }), 'abc');
    assert.notEqual(promptText({ task: 'chat', messages: [{ role: 'user', content: 'abc' }] }).slice(0, 3), 'abc');
    reuse.ended({ task: 'chat', messages: [{ role: 'system', content: 'S'.repeat(400) }, { role: 'user', content: 'one' }] }, 'answered');
    const next = reuse.reusableTokens({ task: 'chat', messages: [{ role: 'system', content: 'S'.repeat(400) }, { role: 'user', content: 'two' }] });
    assert.ok(next >= 100 && next < 105, `the system prompt is held: ${next}`);
  });

  it('the speed model charges only the prompt tokens that are not held', () => {
    const model = new LlmSpeedModel();
    const request = infill('p'.repeat(4000));
    const full = model.estimateMs('cpu', request, MODEL);
    const held = model.estimateMs('cpu', request, MODEL, 1000);
    const perPromptToken = priorRequestMs('cpu', { promptTokens: 1, outputTokens: 0 }, MODEL) - priorRequestMs('cpu', { promptTokens: 0, outputTokens: 0 }, MODEL);
    assert.ok(Math.abs(full - held - 1000 * perPromptToken) < 2, `${full} vs ${held}`);
    assert.equal(model.estimateMs('cpu', request, MODEL, 10_000), model.estimateMs('cpu', { ...request, prefix: '', suffix: '' }, MODEL), 'never below no prompt');
    // A fast answer that had most of its prompt held does not make the lane look faster than it is.
    const answer = 'y'.repeat(128);
    const time = priorRequestMs('cpu', { promptTokens: promptTokensOf(request) - 1000, outputTokens: 32 }, MODEL);
    model.observe('cpu', request, answer, time, MODEL, 1000);
    assert.ok(Math.abs(model.estimateMs('cpu', request, MODEL, 1000) - time) < 2);
  });
});
