/** How errors reach the user: one message that says what happened and what to do, with the log one click away. */

import * as vscode from 'vscode';
import { ERROR_ACTIONS, errorButtons, SHOW_LOGS } from './errorActions';
import { JobCancelledError } from './jobRunner';
import type { SidecarClient } from './sidecarClient';

export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Shows a failure (cancellations are only noted in the status bar). */
export async function reportError(sidecar: SidecarClient, what: string, error: unknown, ...extra: string[]): Promise<string | undefined> {
  if (error instanceof JobCancelledError || error instanceof vscode.CancellationError) {
    vscode.window.setStatusBarMessage(`VRAM Relay: ${what} cancelled.`, 4000);
    return undefined;
  }
  const message = errorMessage(error);
  sidecar.log.error(`${what}: ${message}`);
  const choice = await vscode.window.showErrorMessage(`VRAM Relay: ${what} failed. ${message}`, ...errorButtons(message, extra));
  if (choice === SHOW_LOGS) sidecar.log.show();
  const action = choice !== undefined ? ERROR_ACTIONS[choice] : undefined;
  if (action) void vscode.commands.executeCommand(action.command, ...action.args);
  return choice;
}
