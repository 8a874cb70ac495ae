/** Reads `vramRelay.*` from VS Code's configuration through the pure mapping in settingsModel. */

import * as vscode from 'vscode';
import type { SidecarSettings } from '../sidecar/protocol';
import { toExtensionSettings, toSidecarSettings, type ExtensionSettings, type SettingGetter } from './settingsModel';

export const SECTION = 'vramRelay';

function getter(scope?: vscode.ConfigurationScope): SettingGetter {
  const config = vscode.workspace.getConfiguration(SECTION, scope);
  return (key) => config.get(key);
}

export function readSidecarSettings(storageDir: string): SidecarSettings {
  return toSidecarSettings(getter(), { storageDir, trusted: vscode.workspace.isTrusted });
}

export function readExtensionSettings(scope?: vscode.ConfigurationScope): ExtensionSettings {
  return toExtensionSettings(getter(scope));
}

/** Writes a model path where the user keeps it: the workspace when it overrides there, else the user settings. */
export async function updateModelPath(role: 'llm' | 'image', fsPath: string): Promise<void> {
  const key = `${role}.modelPath`;
  const config = vscode.workspace.getConfiguration(SECTION);
  const inspected = config.inspect(key);
  const target = inspected?.workspaceValue !== undefined ? vscode.ConfigurationTarget.Workspace : vscode.ConfigurationTarget.Global;
  await config.update(key, fsPath, target);
}
