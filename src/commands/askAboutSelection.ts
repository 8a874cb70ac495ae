/** Ask About Selection: a question on the selected code, answered by the local LLM into a Markdown document. */

import * as vscode from 'vscode';
import * as path from 'node:path';
import { runLlmJob } from '../jobRunner';
import { askAboutCodeSpec } from '../llmTasks';
import { reportError } from '../notify';
import { readSidecarSettings } from '../settings';
import type { Services } from '../services';

/** The most code sent with a question, in characters (the context window is shared with the answer). */
const MAX_CODE_CHARS = 12_000;

/** Appends streamed text to the end of a document, one edit at a time, batched. */
function appender(document: vscode.TextDocument): { append(text: string): void; flush(): Promise<void> } {
  let pending = '';
  let chain: Promise<unknown> = Promise.resolve();
  let timer: NodeJS.Timeout | undefined;
  const write = () => {
    timer = undefined;
    if (!pending) return chain;
    const text = pending;
    pending = '';
    chain = chain.then(() => {
      const edit = new vscode.WorkspaceEdit();
      edit.insert(document.uri, document.lineAt(document.lineCount - 1).range.end, text);
      return vscode.workspace.applyEdit(edit);
    });
    return chain;
  };
  return {
    append(text) {
      pending += text;
      timer ??= setTimeout(write, 60);
    },
    async flush() {
      if (timer) clearTimeout(timer);
      await write();
    },
  };
}

export async function askAboutSelectionCommand(services: Services): Promise<void> {
  const editor = vscode.window.activeTextEditor;
  if (!editor || editor.selection.isEmpty) {
    void vscode.window.showWarningMessage('VRAM Relay: select the code to ask about first.');
    return;
  }
  const code = editor.document.getText(editor.selection);
  if (code.length > MAX_CODE_CHARS) {
    void vscode.window.showWarningMessage(`VRAM Relay: the selection is ${code.length} characters; select at most ${MAX_CODE_CHARS} so the question fits the LLM's context.`);
    return;
  }
  const question = await vscode.window.showInputBox({
    title: 'Ask About Selection',
    prompt: 'Your question about the selected code',
    value: 'Explain what this code does.',
    valueSelection: [0, 'Explain what this code does.'.length],
    ignoreFocusOut: true,
    validateInput: (value) => (value.trim() === '' ? 'Type a question.' : undefined),
  });
  if (!question) return;
  const fileName = path.basename(editor.document.fileName);
  const spec = askAboutCodeSpec(question, code, editor.document.languageId, fileName, readSidecarSettings(services.storageDir).llm.contextSize);
  const answer = await vscode.workspace.openTextDocument({ language: 'markdown', content: `## ${question.trim()}\n\n_${fileName}, lines ${editor.selection.start.line + 1}–${editor.selection.end.line + 1}_\n\n` });
  await vscode.window.showTextDocument(answer, { viewColumn: vscode.ViewColumn.Beside, preview: false, preserveFocus: true });
  const out = appender(answer);
  await vscode.window.withProgress(
    { location: vscode.ProgressLocation.Notification, title: 'Asking the local LLM', cancellable: true },
    async (progress, token) => {
      progress.report({ message: 'waiting for the model…' });
      try {
        let first = true;
        await runLlmJob(
          services.sidecar,
          spec,
          (delta) => {
            if (first) progress.report({ message: 'answering…' });
            first = false;
            out.append(delta);
          },
          { token },
        );
        await out.flush();
      } catch (error) {
        out.append(`\n\n> The answer stopped: ${error instanceof Error ? error.message : String(error)}\n`);
        await out.flush();
        await reportError(services.sidecar, 'Ask about selection', error);
      }
    },
  );
}
