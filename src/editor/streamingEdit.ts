/**
 * Shows a rewrite of a range while its text arrives in pieces, then writes it as one edit. The pieces are drawn
 * as a ghost text after the (dimmed) original instead of being written into the document: several editor edits,
 * whatever their undo-stop flags, do not reliably undo as one step, and a half-written prompt must never be what
 * the user's Undo or Save sees. The final text lands in a single edit with undo stops on both sides.
 */

import * as vscode from 'vscode';

/** Minimum time between two redraws of the ghost text. */
const REDRAW_INTERVAL_MS = 80;
/** Longest ghost text drawn; the final edit always writes the whole text. */
const GHOST_MAX_CHARS = 400;

export interface StreamingReplace {
  /** Shows the text produced so far in place of the range. */
  update(text: string): void;
  /** Writes the final text; resolves false when the range was changed by someone else and nothing was written. */
  finish(text: string): Promise<boolean>;
  /** Drops the preview; the document was never touched. */
  abort(): Promise<void>;
}

export function streamingReplace(editor: vscode.TextEditor, range: vscode.Range): StreamingReplace {
  const document = editor.document;
  const original = document.getText(range);
  const startVersion = document.version;
  const dimmed = vscode.window.createTextEditorDecorationType({ opacity: '0.45', textDecoration: 'line-through' });
  const ghost = vscode.window.createTextEditorDecorationType({
    after: { color: new vscode.ThemeColor('editorGhostText.foreground'), fontStyle: 'italic', margin: '0 0 0 1ch' },
  });
  let queued: string | undefined;
  let timer: NodeJS.Timeout | undefined;
  let lastDrawAt = 0;

  const clear = () => {
    if (timer) clearTimeout(timer);
    timer = undefined;
    queued = undefined;
    dimmed.dispose();
    ghost.dispose();
  };

  const draw = () => {
    timer = undefined;
    if (queued === undefined) return;
    const text = queued.replace(/\s+/g, ' ');
    queued = undefined;
    lastDrawAt = Date.now();
    const shown = text.length > GHOST_MAX_CHARS ? `${text.slice(0, GHOST_MAX_CHARS)}…` : text;
    editor.setDecorations(dimmed, [range]);
    editor.setDecorations(ghost, [{ range: new vscode.Range(range.end, range.end), renderOptions: { after: { contentText: `→ ${shown}` } } }]);
  };

  // The range is still ours when nobody changed the document, or the original text is still where it was.
  const stillOurs = () => !document.isClosed && (document.version === startVersion || document.getText(range) === original);

  return {
    update(text) {
      queued = text;
      if (timer) return;
      timer = setTimeout(draw, Math.max(0, REDRAW_INTERVAL_MS - (Date.now() - lastDrawAt)));
    },
    async finish(text) {
      clear();
      if (!stillOurs()) return false;
      if (text === original) return true;
      if (!editor.document.isClosed && vscode.window.visibleTextEditors.includes(editor)) {
        const ok = await editor.edit((builder) => builder.replace(range, text), { undoStopBefore: true, undoStopAfter: true });
        if (ok) return true;
      }
      const edit = new vscode.WorkspaceEdit();
      edit.replace(document.uri, range, text);
      return vscode.workspace.applyEdit(edit);
    },
    async abort() {
      clear();
    },
  };
}
