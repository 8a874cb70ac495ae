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

  /** Prompt tokens of `spec` that the context already holds (by characters, as the rest of the speed model). */
  reusableTokens(spec: PromptParts): number {
    if (this.held === null) return 0;
    return Math.floor(commonPrefixLength(this.held, promptText(spec)) / CHARS_PER_TOKEN);
  }

  /** The context answered `spec`: it now holds its prompt. */
  served(spec: PromptParts): void {
    this.held = promptText(spec);
  }

  /**
   * A request was cancelled while the engine ran it. node-llama-cpp evaluates a prompt in one piece and looks at the
   * cancel only between generated tokens, so the context then holds that request's prompt.
   */
  cancelledWhileRunning(spec: PromptParts): void {
    this.served(spec);
  }

  /** The context was dropped, or is in a state we do not know (a failed request, one cancelled before it ran). */
  clear(): void {
    this.held = null;
  }
}
