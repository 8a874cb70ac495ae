/**
 * Replaces a range of an editor with text that arrives in pieces, so the user watches the rewrite happen, yet
 * the whole change undoes in one step: no undo stop is set between the pieces. If the user edits the document
 * meanwhile, live updates stop and the final text lands once, or not at all when the range is no longer ours.
 */

import * as vscode from 'vscode';

/** Minimum time between two live edits: enough to look smooth, few enough to stay cheap. */
const LIVE_EDIT_INTERVAL_MS = 80;

export interface StreamingReplace {
  /** Shows the text produced so far in place of the range. */
  update(text: string): void;
  /** Writes the final text; resolves false when the range was changed by someone else and nothing was written. */
  finish(text: string): Promise<boolean>;
  /** Puts the original text back (after a failure or a cancel). */
  abort(): Promise<void>;
}

export function streamingReplace(editor: vscode.TextEditor, range: vscode.Range): StreamingReplace {
  const document = editor.document;
  const start = document.offsetAt(range.start);
  const original = document.getText(range);
  let written = original;
  let expectedVersion = document.version;
  let live = true;
  let wroteAny = false;
  let queued: string | undefined;
  let chain: Promise<void> = Promise.resolve();
  let lastEditAt = 0;
  let timer: NodeJS.Timeout | undefined;

  const currentRange = () => new vscode.Range(document.positionAt(start), document.positionAt(start + written.length));
  const stillOurs = () => !document.isClosed && document.getText(currentRange()) === written;

  const write = (text: string, undoStopAfter: boolean): Promise<boolean> => {
    const run = async (): Promise<boolean> => {
      if (text === written && !undoStopAfter) return true;
      const ok = await editor.edit((builder) => builder.replace(currentRange(), text), { undoStopBefore: !wroteAny, undoStopAfter });
      if (ok) {
        wroteAny = true;
        written = text;
        expectedVersion = document.version;
      }
      return ok;
    };
    const result = chain.then(run, run);
    chain = result.then(
      () => undefined,
      () => undefined,
    );
    return result;
  };

  const flush = () => {
    timer = undefined;
    if (queued === undefined || !live) return;
    const text = queued;
    queued = undefined;
    lastEditAt = Date.now();
    if (document.version !== expectedVersion || editor !== vscode.window.activeTextEditor) {
      // The user typed or switched editors: stop touching the document until the end.
      live = false;
      return;
    }
    void write(text, false).then((ok) => {
      if (!ok) live = false;
    });
  };

  return {
    update(text) {
      if (!live) return;
      queued = text;
      if (timer) return;
      const wait = Math.max(0, LIVE_EDIT_INTERVAL_MS - (Date.now() - lastEditAt));
      timer = setTimeout(flush, wait);
    },
    async finish(text) {
      if (timer) clearTimeout(timer);
      timer = undefined;
      queued = undefined;
      await chain;
      if (!stillOurs()) return false;
      if (text === original && !wroteAny) return true;
      return write(text, true).catch(() => replaceWithWorkspaceEdit(text));
    },
    async abort() {
      if (timer) clearTimeout(timer);
      timer = undefined;
      queued = undefined;
      await chain;
      if (wroteAny && stillOurs()) await write(original, true).catch(() => replaceWithWorkspaceEdit(original));
    },
  };

  /** When the editor went away (closed or hidden), the document can still be edited in one step. */
  async function replaceWithWorkspaceEdit(text: string): Promise<boolean> {
    const edit = new vscode.WorkspaceEdit();
    edit.replace(document.uri, currentRange(), text);
    const ok = await vscode.workspace.applyEdit(edit);
    if (ok) written = text;
    return ok;
  }
}
