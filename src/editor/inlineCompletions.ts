/**
 * Inline completions (fill-in-the-middle) from the local LLM. Quiet by design: no model, no sidecar, a failure or
 * an LLM that lent its memory to an image job all give no suggestion; the last case shows in the status bar.
 */

import * as vscode from 'vscode';
import { runLlmJob } from '../jobRunner';
import { cleanCompletion, INFILL_SUFFIX_CHARS, infillPrefixStart, infillSpec } from '../llmTasks';
import { llmAvailability } from '../llmAvailability';
import { readExtensionSettings, readSidecarSettings } from '../settings';
import type { Services } from '../services';

/** Typing pauses shorter than this ask nothing. */
const DEBOUNCE_MS = 300;
/** Completions for files bigger than this would need more context than a small local model has. */
const MAX_DOCUMENT_CHARS = 2_000_000;

function sleep(ms: number, token: vscode.CancellationToken): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      listener.dispose();
      resolve(!token.isCancellationRequested);
    }, ms);
    const listener = token.onCancellationRequested(() => {
      clearTimeout(timer);
      listener.dispose();
      resolve(false);
    });
  });
}

export class LlmInlineCompletionProvider implements vscode.InlineCompletionItemProvider {
  constructor(private readonly services: Services) {}

  async provideInlineCompletionItems(
    document: vscode.TextDocument,
    position: vscode.Position,
    context: vscode.InlineCompletionContext,
    token: vscode.CancellationToken,
  ): Promise<vscode.InlineCompletionItem[]> {
    const { sidecar, status } = this.services;
    if (!readExtensionSettings(document.uri).completionsEnabled) return [];
    // Keystrokes never start the sidecar: the monitor does, and a failed one stays down until Restart.
    if (sidecar.state !== 'running') return [];
    const settings = readSidecarSettings(this.services.storageDir);
    const availability = llmAvailability(sidecar.snapshot, settings.llm.modelPath !== '');
    status.setCompletionsPaused(availability === 'lent');
    if (availability !== 'ready') return [];
    if (context.selectedCompletionInfo || document.getText().length > MAX_DOCUMENT_CHARS) return [];
    if (context.triggerKind === vscode.InlineCompletionTriggerKind.Automatic && !(await sleep(DEBOUNCE_MS, token))) return [];

    const offset = document.offsetAt(position);
    const prefix = document.getText(new vscode.Range(document.positionAt(infillPrefixStart(offset)), position));
    const suffix = document.getText(new vscode.Range(position, document.positionAt(offset + INFILL_SUFFIX_CHARS)));
    try {
      const text = await runLlmJob(sidecar, infillSpec(prefix, suffix, settings.llm.contextSize), () => undefined, { token, priority: 'interactive' });
      if (token.isCancellationRequested) return [];
      const completion = cleanCompletion(text, suffix);
      return completion ? [new vscode.InlineCompletionItem(completion, new vscode.Range(position, position))] : [];
    } catch (error) {
      sidecar.log.debug(`Inline completion skipped: ${error instanceof Error ? error.message : String(error)}`);
      return [];
    }
  }
}
