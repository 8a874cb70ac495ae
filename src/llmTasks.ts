/**
 * The LLM jobs the extension sends (prompt enhancement, fill-in-the-middle, code questions, image tags) and the
 * clean-up of what comes back. Pure, so the wording and the trimming are tested without a model.
 */

import type { LlmJobSpec } from '../sidecar/core/types';
import type { EnhancementStyle } from './settingsModel';

const STYLE_INSTRUCTIONS: Record<EnhancementStyle, string> = {
  concise:
    'Rewrite the image prompt so an image model renders it well: keep the subject and intent, add the medium, lighting and composition in one short sentence. Answer with the prompt only.',
  detailed:
    'Rewrite the image prompt as one rich paragraph for an image model: subject, setting, medium, lighting, colour palette, composition, camera or art style. Keep what the user asked for. Answer with the prompt only.',
  tags:
    'Rewrite the image prompt as a comma-separated list of short tags for an image model, most important first: subject, setting, style, lighting, quality. Answer with the tags only.',
};

export function enhancePromptSpec(prompt: string, style: EnhancementStyle, contextSize: number): LlmJobSpec {
  return {
    kind: 'llm',
    task: 'enhancePrompt',
    contextSize,
    messages: [
      { role: 'system', content: STYLE_INSTRUCTIONS[style] },
      { role: 'user', content: prompt.trim() },
    ],
    maxTokens: style === 'detailed' ? 220 : 120,
    temperature: 0.7,
  };
}

/**
 * Strips what models wrap around a rewritten prompt: `Prompt:` labels, quotes, code fences, and (except for
 * the detailed style) extra lines. Falls back to the original when nothing usable is left.
 */
export function cleanEnhancedPrompt(text: string, style: EnhancementStyle, original: string): string {
  let t = text.replace(/```[a-z]*\n?/gi, '').trim();
  t = t.replace(/^(?:here(?:'s| is) (?:the |an |your )?(?:enhanced |rewritten |improved )?(?:prompt|tags)[^:\n]*:\s*)/i, '');
  t = t.replace(/^(?:enhanced |rewritten |improved )?(?:prompt|tags)\s*:\s*/i, '');
  if (style !== 'detailed') t = t.split(/\n\s*\n|\n/)[0] ?? '';
  else t = t.replace(/\s*\n\s*/g, ' ');
  t = t.trim();
  if (/^(["'“”`]).*(["'“”`])$/s.test(t) && t.length > 2) t = t.slice(1, -1).trim();
  return t || original;
}

/** How much of the file around the cursor fill-in-the-middle sends, in characters: at least this much before it. */
export const INFILL_PREFIX_CHARS = 4000;
export const INFILL_SUFFIX_CHARS = 1500;
/** The prefix starts on a grid of this many characters (see infillPrefixStart). */
export const INFILL_PREFIX_STEP = 1024;

/**
 * Where the prefix starts for a cursor at `offset`: at least INFILL_PREFIX_CHARS before it, on a grid, so that the
 * start stays put while the user types on. The next completion's prompt then begins as the last one did, and the
 * engine evaluates only what follows the edit instead of the whole prefix again. It moves one step at a time.
 */
export function infillPrefixStart(offset: number): number {
  return Math.max(0, Math.floor((offset - INFILL_PREFIX_CHARS) / INFILL_PREFIX_STEP) * INFILL_PREFIX_STEP);
}

export function infillSpec(prefix: string, suffix: string, contextSize: number, maxTokens = 64): LlmJobSpec {
  return {
    kind: 'llm',
    task: 'infill',
    contextSize,
    prefix: prefix.slice(-(INFILL_PREFIX_CHARS + INFILL_PREFIX_STEP)),
    suffix: suffix.slice(0, INFILL_SUFFIX_CHARS),
    maxTokens,
    temperature: 0.2,
  };
}

/**
 * Trims a fill-in-the-middle answer: nothing when it is only whitespace, and no repetition of the text that
 * already follows the cursor.
 */
export function cleanCompletion(text: string, suffix: string): string {
  if (text.trim() === '') return '';
  let t = text.replace(/<\|[a-z_]+\|>|<\/?(?:fim|FIM)[^>]*>/g, '');
  // Cut where the model starts writing what already follows the cursor (at least a few characters of it).
  const following = suffix.trimStart();
  if (following.length >= 4) {
    for (let i = 0; i < t.length; i++) {
      const rest = t.slice(i).trimStart();
      if (rest.length < Math.min(8, following.length)) break;
      if (following.startsWith(rest) || rest.startsWith(following.slice(0, 40))) {
        t = t.slice(0, i);
        break;
      }
    }
  }
  return t.trimEnd() === '' ? '' : t.replace(/\s+$/, (ws) => (ws.includes('\n') ? '' : ws));
}

export function askAboutCodeSpec(question: string, code: string, languageId: string, fileName: string, contextSize: number): LlmJobSpec {
  return {
    kind: 'llm',
    task: 'chat',
    contextSize,
    messages: [
      {
        role: 'system',
        content: 'You help a programmer with the code they selected. Answer in Markdown, briefly, with code blocks where code helps.',
      },
      { role: 'user', content: `${question.trim()}\n\nFile: ${fileName}\n\n\`\`\`${languageId}\n${code}\n\`\`\`` },
    ],
    maxTokens: 768,
    temperature: 0.3,
  };
}

/** What the extension knows about an image without looking at its pixels. */
export interface ImageFacts {
  fileName: string;
  bytes: number;
  width?: number;
  height?: number;
  /** The prompt recorded beside an image this extension generated. */
  prompt?: string;
}

/** Said in the UI whenever tags come from a model that cannot see the image. */
export const NO_VISION_NOTE =
  'The configured LLM has no vision: these tags come from the file name and metadata (and the prompt, when the image was generated here), not from the pixels.';

export function tagImageSpec(facts: ImageFacts, contextSize: number): LlmJobSpec {
  const lines = [`File name: ${facts.fileName}`, `Size: ${facts.bytes} bytes`];
  if (facts.width && facts.height) lines.push(`Dimensions: ${facts.width} x ${facts.height} pixels`);
  if (facts.prompt) lines.push(`Prompt it was generated from: ${facts.prompt}`);
  return {
    kind: 'llm',
    task: 'tagImage',
    contextSize,
    messages: [
      {
        role: 'system',
        content:
          'You cannot see the image. From the facts given, write: a line "Tags:" with 5 to 12 comma-separated search tags, then a line "Alt text:" with one sentence of alt text. Do not invent details the facts do not support.',
      },
      { role: 'user', content: lines.join('\n') },
    ],
    maxTokens: 160,
    temperature: 0.3,
  };
}

/** Splits a tag answer into tags and alt text; tolerant of models that ignore the format. */
export function parseTagAnswer(text: string): { tags: string[]; altText: string } {
  const tagLine = /tags\s*:\s*(.+)/i.exec(text)?.[1] ?? '';
  const altLine = /alt(?:\s|-)?text\s*:\s*(.+)/i.exec(text)?.[1] ?? '';
  const tags = tagLine
    .split(',')
    .map((t) => t.trim().replace(/^#/, '').replace(/[.]$/, ''))
    .filter((t) => t.length > 0 && t.length < 60);
  const altText = altLine.trim() || (tags.length === 0 ? text.trim().split('\n')[0] ?? '' : '');
  return { tags, altText };
}
