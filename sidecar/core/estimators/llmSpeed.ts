/**
 * How long an LLM request takes on the GPU or on the CPU copy of the model. The prior comes from the model's size
 * (generation reads every weight once per token) and the request's length in tokens; each served request then
 * corrects its lane's speed and its task's expected output length. Pure apart from its own learnt figures.
 */

import type { Bytes, LlmJobSpec, LlmLane, LlmTask, Millis } from '../types';
import { CHARS_PER_TOKEN, LLM_DEFAULT_OUTPUT_TOKENS, LLM_GEN_BYTES_PER_MS, LLM_PROMPT_SPEEDUP, LLM_REQUEST_OVERHEAD_MS } from './figures';

export interface LlmRequestSize {
  promptTokens: number;
  outputTokens: number;
}

/** Weight of a new observation in the running figures: a few requests settle them, one odd request does not. */
const LEARNING_RATE = 0.3;

/** Tokens of a text, by its length. */
export function tokensOfText(text: string): number {
  return Math.ceil(text.length / CHARS_PER_TOKEN);
}

/** Prompt tokens of a request: its prompt, messages and fill-in-the-middle parts. */
export function promptTokensOf(spec: Pick<LlmJobSpec, 'prompt' | 'messages' | 'prefix' | 'suffix'>): number {
  let chars = (spec.prompt?.length ?? 0) + (spec.prefix?.length ?? 0) + (spec.suffix?.length ?? 0);
  for (const message of spec.messages ?? []) chars += message.content.length;
  return Math.ceil(chars / CHARS_PER_TOKEN);
}

/** Prompt tokens the engine evaluates: those of `spec` after the `reusedTokens` its context holds (promptReuse.ts). */
function evaluatedPromptTokens(spec: LlmJobSpec, reusedTokens: number): number {
  return Math.max(0, promptTokensOf(spec) - reusedTokens);
}

/** The prior time of a request of `size` on `lane` for a model of `modelBytes`, before any request was seen. */
export function priorRequestMs(lane: LlmLane, size: LlmRequestSize, modelBytes: Bytes): Millis {
  const perGenTokenMs = Math.max(1, modelBytes) / LLM_GEN_BYTES_PER_MS[lane];
  const perPromptTokenMs = perGenTokenMs / LLM_PROMPT_SPEEDUP[lane];
  return LLM_REQUEST_OVERHEAD_MS + size.promptTokens * perPromptTokenMs + size.outputTokens * perGenTokenMs;
}

export interface SpeedObservation {
  lane: LlmLane;
  /** What the request took, as estimated for its real size before this observation, and as measured. */
  estimateMs: Millis;
  measuredMs: Millis;
}

export class LlmSpeedModel {
  /** Measured / prior time, per lane (1 until a request has run there). */
  private readonly factor: Record<LlmLane, number> = { gpu: 1, cpu: 1 };
  private readonly observed: Record<LlmLane, number> = { gpu: 0, cpu: 0 };
  private readonly outputTokens = new Map<LlmTask, number>();

  /** Tokens the request is expected to generate: what its task has generated so far, within its cap. */
  expectedOutputTokens(spec: Pick<LlmJobSpec, 'task' | 'maxTokens'>): number {
    const cap = spec.maxTokens ?? Infinity;
    const seen = this.outputTokens.get(spec.task);
    const expected = seen ?? (Number.isFinite(cap) ? cap / 2 : LLM_DEFAULT_OUTPUT_TOKENS);
    return Math.max(1, Math.min(cap, expected));
  }

  /** `reusedTokens`: prompt tokens the lane's context already holds (promptReuse.ts), which cost nothing. */
  sizeOf(spec: LlmJobSpec, reusedTokens = 0): LlmRequestSize {
    return { promptTokens: evaluatedPromptTokens(spec, reusedTokens), outputTokens: this.expectedOutputTokens(spec) };
  }

  /** Expected time of `spec` on `lane`, from the prompt tokens it must evaluate and its task's expected output. */
  estimateMs(lane: LlmLane, spec: LlmJobSpec, modelBytes: Bytes, reusedTokens = 0): Millis {
    return Math.round(priorRequestMs(lane, this.sizeOf(spec, reusedTokens), modelBytes) * this.factor[lane]);
  }

  /** Whether `lane` has served a request yet (its figure is then measured, not assumed). */
  measured(lane: LlmLane): boolean {
    return this.observed[lane] > 0;
  }

  /** Learns from a served request: its lane's speed, and its task's output length. */
  observe(lane: LlmLane, spec: LlmJobSpec, output: string, measuredMs: Millis, modelBytes: Bytes, reusedTokens = 0): SpeedObservation {
    const size = { promptTokens: evaluatedPromptTokens(spec, reusedTokens), outputTokens: Math.max(1, tokensOfText(output)) };
    const prior = priorRequestMs(lane, size, modelBytes);
    const estimateMs = Math.round(prior * this.factor[lane]);
    if (measuredMs > 0 && prior > 0) {
      const ratio = measuredMs / prior;
      // In log space, so that 2x too slow and 2x too fast pull equally; the first measurement replaces the prior.
      this.factor[lane] = this.observed[lane] === 0 ? ratio : Math.exp((1 - LEARNING_RATE) * Math.log(this.factor[lane]) + LEARNING_RATE * Math.log(ratio));
      this.observed[lane]++;
    }
    const seen = this.outputTokens.get(spec.task);
    this.outputTokens.set(spec.task, seen === undefined ? size.outputTokens : (1 - LEARNING_RATE) * seen + LEARNING_RATE * size.outputTokens);
    return { lane, estimateMs, measuredMs };
  }
}
