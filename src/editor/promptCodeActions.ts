/**
 * The light bulb on an image prompt, in any editor: on a selection, or on a string literal or Markdown line that
 * looks like a prompt. "Enhance prompt" rewrites it in place; "Generate image from this prompt" runs it.
 */

import * as vscode from 'vscode';
import { findPromptAt, quoteAt, unescapeLiteral } from '../promptDetection';
import type { EnhanceTarget } from '../commands/enhancePrompt';
import type { GenerateImageArgs } from '../commands/generateImage';

/** Selections longer than this are code, not a prompt. */
const MAX_SELECTION_CHARS = 2000;

export const ENHANCE_KIND = vscode.CodeActionKind.RefactorRewrite.append('vramRelay.enhancePrompt');
export const GENERATE_KIND = vscode.CodeActionKind.Refactor.append('vramRelay.generateImage');

export class PromptCodeActionProvider implements vscode.CodeActionProvider {
  static readonly metadata: vscode.CodeActionProviderMetadata = { providedCodeActionKinds: [ENHANCE_KIND, GENERATE_KIND] };

  provideCodeActions(document: vscode.TextDocument, range: vscode.Range | vscode.Selection, context: vscode.CodeActionContext): vscode.CodeAction[] {
    if (context.only && !context.only.contains(ENHANCE_KIND) && !context.only.contains(GENERATE_KIND) && !ENHANCE_KIND.contains(context.only) && !GENERATE_KIND.contains(context.only)) {
      return [];
    }
    const target = this.targetAt(document, range);
    if (!target) return [];
    const text = target.quote ? unescapeLiteral(document.getText(target.range)) : document.getText(target.range);
    if (text.trim() === '') return [];

    const enhance = new vscode.CodeAction('Enhance prompt', ENHANCE_KIND);
    enhance.command = { command: 'vramRelay.enhancePrompt', title: 'Enhance prompt', arguments: [target] };
    const generate = new vscode.CodeAction('Generate image from this prompt', GENERATE_KIND);
    const args: GenerateImageArgs = { prompt: text.trim() };
    generate.command = { command: 'vramRelay.generateImage', title: 'Generate image from this prompt', arguments: [args] };
    return [enhance, generate];
  }

  private targetAt(document: vscode.TextDocument, range: vscode.Range): EnhanceTarget | undefined {
    if (!range.isEmpty) {
      const length = document.offsetAt(range.end) - document.offsetAt(range.start);
      return length <= MAX_SELECTION_CHARS ? { uri: document.uri, range: new vscode.Range(range.start, range.end) } : undefined;
    }
    const line = document.lineAt(range.start.line).text;
    const found = findPromptAt(line, range.start.character, document.languageId);
    if (!found) return undefined;
    return {
      uri: document.uri,
      range: new vscode.Range(range.start.line, found.start, range.start.line, found.end),
      quote: found.source === 'string' ? quoteAt(line, found.end) : undefined,
    };
  }
}
