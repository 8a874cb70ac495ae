/**
 * What an LLM's context still holds of the last prompt it answered. llama.cpp keeps a sequence's tokens between
 * requests (node-llama-cpp's sequence, llama-server's prompt cache) and evaluates only what follows the part of the
 * new prompt that matches them: consecutive completions while the user types in one place share the file before
 * the cursor, and only the edit, the suffix and the answer cost time. Pure: the arbiter says when a context served
 * a prompt and when it was dropped.
 */

import type { LlmJobSpec } from '../types';
import { CHARS_PER_TOKEN } from './figures';

type PromptParts = Pick<LlmJobSpec, 'task' | 'prompt' | 'messages' | 'prefix' | 'suffix'>;

/**
 * A request's prompt as text in the order the engine evaluates it: fill-in-the-middle as prefix then suffix (the
 * PSM order node-llama-cpp uses), chats as their messages with their roles, completions as their prompt. The marks
 * stand for the template's special tokens, so that a prefix and a suffix never match across the boundary.
 */
export function promptText(spec: PromptParts): string {
  if (spec.task === 'infill') return `\u0001${spec.prefix ?? spec.prompt ?? ''}\u0002${spec.suffix ?? ''}\u0003`;
  if (spec.messages && spec.messages.length > 0) return spec.messages.map((m) => `\u0001${m.role}\u0002${m.content}`).join('') + '\u0003';
  return spec.prompt ?? '';
}

function commonPrefixLength(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a.charCodeAt(i) === b.charCodeAt(i)) i++;
  return i;
}

export class PromptReuse {
  private held: string | null = null;
  private heldSinceCrashes = 0;

  /** `crashCount`: the engine's deaths so far (LlmControl.crashCount); one since a prompt was held loses it. */
  constructor(private readonly crashCount: () => number = () => 0) {}

  /** Prompt tokens of `spec` that the context already holds (by characters, as the rest of the speed model). */
  reusableTokens(spec: PromptParts): number {
    if (this.held === null || this.crashCount() !== this.heldSinceCrashes) return 0;
    return Math.floor(commonPrefixLength(this.held, promptText(spec)) / CHARS_PER_TOKEN);
  }

  /**
   * A request the engine ran has ended. Answered, or cancelled while it ran (node-llama-cpp evaluates a prompt in one
   * piece and looks at a cancel only between generated tokens), it leaves its prompt in the context, if the context
   * is still there; a failure leaves a state we do not know.
   */
  ended(spec: PromptParts, how: 'answered' | 'cancelled' | 'failed', contextKept = true): void {
    this.held = contextKept && how !== 'failed' ? promptText(spec) : null;
    this.heldSinceCrashes = this.crashCount();
  }

  /** The context was dropped, or is in a state we do not know (a request cancelled before it ran). */
  clear(): void {
    this.held = null;
  }
}
