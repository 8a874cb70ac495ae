/** Unload LLM, Reload LLM and Free GPU Memory: the user's direct handles on what VRAM Relay holds. */

import * as vscode from 'vscode';
import { FreeGpuMemory, SetLlmState } from '../../sidecar/protocol';
import { formatBytes, formatDuration } from '../format';
import { reportError } from '../notify';
import type { Services } from '../services';

export async function unloadLlmCommand(services: Services): Promise<void> {
  try {
    const result = await vscode.window.withProgress({ location: vscode.ProgressLocation.Window, title: 'VRAM Relay: unloading the LLM' }, () =>
      services.sidecar.request(SetLlmState, { state: 'cold' }),
    );
    void vscode.window.showInformationMessage(`VRAM Relay: the LLM left the GPU (${formatDuration(result.tookMs)}). It comes back when it is needed.`);
  } catch (error) {
    await reportError(services.sidecar, 'Unload LLM', error);
  }
}

export async function reloadLlmCommand(services: Services): Promise<void> {
  try {
    const result = await vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title: 'VRAM Relay: loading the LLM' }, () =>
      services.sidecar.request(SetLlmState, { state: 'hot' }),
    );
    void vscode.window.showInformationMessage(`VRAM Relay: the LLM is ${result.state} (${formatDuration(result.tookMs)}).`);
  } catch (error) {
    await reportError(services.sidecar, 'Reload LLM', error, 'Select Models');
  }
}

export async function freeGpuMemoryCommand(services: Services): Promise<void> {
  try {
    const result = await vscode.window.withProgress({ location: vscode.ProgressLocation.Window, title: 'VRAM Relay: freeing GPU memory' }, () =>
      services.sidecar.request(FreeGpuMemory, undefined),
    );
    void vscode.window.showInformationMessage(
      result.freed > 0 ? `VRAM Relay: freed ${formatBytes(result.freed)}.` : 'VRAM Relay: nothing to free; running jobs keep what they use.',
    );
  } catch (error) {
    await reportError(services.sidecar, 'Free GPU memory', error);
  }
}
