/** How errors reach the user: one message that says what happened and what to do, with the log one click away. */

import * as vscode from 'vscode';
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
  const choice = await vscode.window.showErrorMessage(`VRAM Relay: ${what} failed. ${message}`, ...extra, 'Show Logs');
  if (choice === 'Show Logs') sidecar.log.show();
  if (choice === 'Show Budget Panel') void vscode.commands.executeCommand('vramRelay.showBudgetPanel');
  if (choice === 'Restart Sidecar') void vscode.commands.executeCommand('vramRelay.restartSidecar');
  if (choice === 'Select Models') void vscode.commands.executeCommand('vramRelay.selectModels');
  return choice;
}
