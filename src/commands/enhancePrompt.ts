/**
 * Enhance Prompt: rewrites an image prompt with the local LLM in the configured style. In an editor the new
 * text streams into place and undoes as one edit; from the palette it asks for the prompt and shows the result.
 */

import * as vscode from 'vscode';
import { runLlmJob } from '../jobRunner';
import { cleanEnhancedPrompt, enhancePromptSpec } from '../llmTasks';
import { reportError } from '../notify';
import { escapeForLiteral, findPromptAt, quoteAt, unescapeLiteral, type Quote } from '../promptDetection';
import { readExtensionSettings, readSidecarSettings } from '../settings';
import type { Services } from '../services';
import { streamingReplace } from '../editor/streamingEdit';

/** Where the prompt to enhance sits; passed by the code action. */
export interface EnhanceTarget {
  uri: vscode.Uri;
  range: vscode.Range;
  /** Set when the prompt is the inside of a string literal: the result is escaped for it. */
  quote?: Quote;
}

/** Rewrites a prompt, streaming the cleaned text so far through `onText`. */
export async function enhanceText(
  services: Services,
  prompt: string,
  options: { onText?: (soFar: string) => void; token?: vscode.CancellationToken } = {},
): Promise<string> {
  const style = readExtensionSettings().enhancementStyle;
  const spec = enhancePromptSpec(prompt, style, readSidecarSettings(services.storageDir).llm.contextSize);
  const raw = await runLlmJob(services.sidecar, spec, (_delta, soFar) => options.onText?.(cleanEnhancedPrompt(soFar, style, prompt)), {
    token: options.token,
  });
  return cleanEnhancedPrompt(raw, style, prompt);
}

/** The prompt under the cursor or the selection of the active editor, if it holds one. */
export function targetFromEditor(editor: vscode.TextEditor | undefined): EnhanceTarget | undefined {
  if (!editor) return undefined;
  const { document, selection } = editor;
  if (!selection.isEmpty) return { uri: document.uri, range: new vscode.Range(selection.start, selection.end) };
  const line = document.lineAt(selection.active.line).text;
  const found = findPromptAt(line, selection.active.character, document.languageId);
  if (!found) return undefined;
  const range = new vscode.Range(selection.active.line, found.start, selection.active.line, found.end);
  return { uri: document.uri, range, quote: found.source === 'string' ? quoteAt(line, found.end) : undefined };
}

async function enhanceInEditor(services: Services, target: EnhanceTarget): Promise<void> {
  const document = await vscode.workspace.openTextDocument(target.uri);
  const editor = await vscode.window.showTextDocument(document, { preserveFocus: false, preview: false });
  const rawText = document.getText(target.range);
  const prompt = target.quote ? unescapeLiteral(rawText) : rawText;
  if (prompt.trim() === '') {
    void vscode.window.showWarningMessage('VRAM Relay: select the prompt to enhance first.');
    return;
  }
  const encode = (text: string) => (target.quote ? escapeForLiteral(text, target.quote) : text);
  const stream = streamingReplace(editor, target.range);
  await vscode.window.withProgress(
    { location: vscode.ProgressLocation.Notification, title: 'Enhancing prompt', cancellable: true },
    async (progress, token) => {
      progress.report({ message: 'waiting for the local LLM…' });
      let reported = false;
      try {
        const result = await enhanceText(services, prompt, {
          token,
          onText: (soFar) => {
            if (!reported) {
              progress.report({ message: 'writing…' });
              reported = true;
            }
            stream.update(encode(soFar));
          },
        });
        const ok = await stream.finish(encode(result));
        if (!ok) {
          const choice = await vscode.window.showWarningMessage(
            'VRAM Relay: the text changed while the prompt was being rewritten, so it was left as it is.',
            { detail: result },
            'Copy Enhanced Prompt',
          );
          if (choice) await vscode.env.clipboard.writeText(result);
        }
      } catch (error) {
        await stream.abort();
        await reportError(services.sidecar, 'Enhance prompt', error);
      }
    },
  );
}

async function enhanceFromInput(services: Services): Promise<void> {
  const prompt = await vscode.window.showInputBox({
    title: 'Enhance Prompt',
    prompt: `Describe the image; the local LLM rewrites it (${readExtensionSettings().enhancementStyle} style).`,
    placeHolder: 'a red fox in the snow',
    ignoreFocusOut: true,
    validateInput: (value) => (value.trim() === '' ? 'Type a prompt to enhance.' : undefined),
  });
  if (!prompt) return;
  try {
    const result = await vscode.window.withProgress(
      { location: vscode.ProgressLocation.Notification, title: 'Enhancing prompt', cancellable: true },
      (_progress, token) => enhanceText(services, prompt, { token }),
    );
    const choice = await vscode.window.showInformationMessage(result, 'Copy', 'Generate Image');
    if (choice === 'Copy') await vscode.env.clipboard.writeText(result);
    if (choice === 'Generate Image') await vscode.commands.executeCommand('vramRelay.generateImage', { prompt: result });
  } catch (error) {
    await reportError(services.sidecar, 'Enhance prompt', error);
  }
}

function isEnhanceTarget(value: unknown): value is EnhanceTarget {
  const candidate = value as Partial<EnhanceTarget> | undefined;
  return candidate?.uri instanceof vscode.Uri && candidate.range instanceof vscode.Range;
}

/** `target` comes from the code action; menus pass the document's URI instead, which means "the active editor". */
export async function enhancePromptCommand(services: Services, target?: unknown): Promise<void> {
  const where = isEnhanceTarget(target) ? target : targetFromEditor(vscode.window.activeTextEditor);
  if (where) await enhanceInEditor(services, where);
  else await enhanceFromInput(services);
}
