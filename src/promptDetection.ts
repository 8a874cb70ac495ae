/**
 * Finds text that looks like an image prompt under the cursor: a string literal in code or a line of Markdown.
 * A heuristic, kept pure so its false positives and negatives are pinned down by tests.
 */

export interface PromptCandidate {
  /** Character offsets in the line: the prompt text without its quotes or Markdown markers. */
  start: number;
  end: number;
  text: string;
  source: 'string' | 'markdown';
}

/** Words that say "this describes a picture". */
const VISUAL_WORDS = [
  'photo', 'photograph', 'portrait', 'illustration', 'painting', 'render', 'rendered', 'drawing', 'sketch',
  'watercolor', 'watercolour', 'oil painting', 'concept art', 'digital art', 'anime', 'cinematic', 'lighting',
  'lit', 'bokeh', 'close-up', 'closeup', 'wide angle', 'wide-angle', 'landscape', 'highly detailed', 'detailed',
  '4k', '8k', 'hdr', 'octane', 'unreal engine', 'studio', 'golden hour', 'sunset', 'depth of field', 'isometric',
  'pixel art', 'low poly', '3d', 'trending on', 'artstation', 'masterpiece', 'best quality', 'style of',
  'in the style', 'pastel', 'vibrant', 'moody', 'dramatic', 'soft light', 'volumetric', 'photorealistic',
  'realistic', 'macro', 'shot', 'lens', 'mm', 'f/', 'background', 'foreground', 'scene', 'vector', 'logo',
  'icon', 'poster', 'wallpaper', 'character', 'artwork',
];

/** `prompt = `, `"prompt": `, `prompt: string = `, `negative_prompt=` just before a literal. */
const PROMPT_NAME = /(prompt|caption|description|alt)\w*["'`]?\s*(?::\s*[\w<>[\]|]+\s*)?[:=]\s*$/i;

/** Whether a piece of text reads like an image prompt: several words, and visual vocabulary or comma-separated tags. */
export function looksLikeImagePrompt(text: string): boolean {
  const t = text.trim();
  if (t.length < 12 || t.length > 2000) return false;
  // Code, paths, URLs and identifiers are not prompts.
  if (/^[\w.$/\\:-]+$/.test(t) || /https?:\/\//.test(t) || /[{};]|=>|\(\)/.test(t)) return false;
  const words = t.split(/\s+/).filter(Boolean);
  if (words.length < 3) return false;
  const lower = ` ${t.toLowerCase()} `;
  const hits = VISUAL_WORDS.filter((w) => lower.includes(` ${w}`) || lower.includes(`,${w}`)).length;
  const commaTags = t.split(',').length - 1;
  return hits >= 2 || (hits >= 1 && commaTags >= 1) || commaTags >= 3;
}

/** The string literal (single, double or back quotes) that contains `character`, if any. */
export function stringLiteralAt(line: string, character: number): { start: number; end: number; text: string; before: string } | undefined {
  let open: { quote: string; index: number } | undefined;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (open) {
      if (c === '\\') {
        i++;
        continue;
      }
      if (c === open.quote) {
        if (character > open.index && character <= i) {
          return { start: open.index + 1, end: i, text: line.slice(open.index + 1, i), before: line.slice(0, open.index) };
        }
        open = undefined;
      }
    } else if (c === '"' || c === "'" || c === '`') {
      // An apostrophe inside a word (it's) does not open a string.
      if (c === "'" && i > 0 && /\w/.test(line[i - 1]) && /\w/.test(line[i + 1] ?? '')) continue;
      open = { quote: c, index: i };
    } else if (c === '#' && /^\s*#/.test(line.slice(0, i + 1)) && !/^\s*#\s*(include|define|pragma)/.test(line)) {
      // A comment line in shell or Python: no literal follows.
      break;
    }
  }
  return undefined;
}

const MARKDOWN_PREFIX = /^(\s*(?:[-*+]\s+|\d+[.)]\s+|>\s*|#{1,6}\s+)?(?:\*\*|__)?(?:(?:image\s+)?prompt\s*[:：]?)?(?:\*\*|__)?\s*[:：]?\s*)/i;

/** A Markdown line without its list, quote or heading marker, and without a `Prompt:` label. */
export function markdownLinePrompt(line: string): { start: number; end: number; text: string } | undefined {
  if (/^\s*(```|~~~|\||<)/.test(line)) return undefined;
  const prefix = MARKDOWN_PREFIX.exec(line)?.[0] ?? '';
  let end = line.length;
  while (end > prefix.length && /\s/.test(line[end - 1])) end--;
  const text = line.slice(prefix.length, end);
  return text ? { start: prefix.length, end, text } : undefined;
}

const MARKDOWN_LANGUAGES = new Set(['markdown', 'plaintext', 'mdx', 'quarto', 'rmd']);

/**
 * The prompt under the cursor: a string literal that looks like a prompt (or that is assigned to something
 * named `prompt`), or in Markdown/plain text a whole line that looks like one.
 */
export function findPromptAt(line: string, character: number, languageId: string): PromptCandidate | undefined {
  if (MARKDOWN_LANGUAGES.has(languageId)) {
    const md = markdownLinePrompt(line);
    if (md && (looksLikeImagePrompt(md.text) || /prompt\s*[:：]/i.test(line.slice(0, md.start)))) {
      if (md.text.trim().length >= 3) return { ...md, source: 'markdown' };
    }
    return undefined;
  }
  const literal = stringLiteralAt(line, character);
  if (!literal) return undefined;
  const named = PROMPT_NAME.test(literal.before);
  if ((named && literal.text.trim().length >= 3) || looksLikeImagePrompt(literal.text)) {
    return { start: literal.start, end: literal.end, text: literal.text, source: 'string' };
  }
  return undefined;
}

export type Quote = '"' | "'" | '`';

/** Escapes text to sit inside a string literal delimited by `quote`. */
export function escapeForLiteral(text: string, quote: Quote): string {
  let out = text.replace(/\\/g, '\\\\');
  if (quote === '`') out = out.replace(/`/g, '\\`').replace(/\$\{/g, '\\${');
  else out = out.split(quote).join(`\\${quote}`).replace(/\r?\n/g, '\\n');
  return out;
}

/** The text a string literal stands for (the common escapes only): what the LLM should read. */
export function unescapeLiteral(text: string): string {
  return text.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c === 't' ? '\t' : c));
}

/** The quote character around a literal that ends at `end` in `line`. */
export function quoteAt(line: string, end: number): Quote | undefined {
  const c = line[end];
  return c === '"' || c === "'" || c === '`' ? c : undefined;
}
