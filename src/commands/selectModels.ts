/**
 * Select Models: quick picks over the GGUF / safetensors files found in the configured model folders and the
 * workspace, writing `vramRelay.llm.modelPath` or `vramRelay.image.modelPath`.
 */

import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { formatBytes } from '../format';
import { rankModelFiles, type ModelRole } from '../modelFiles';
import { resolveFolder, scanModelFolders } from '../modelScan';
import { readExtensionSettings, readSidecarSettings, updateModelPath } from '../settings';
import type { Services } from '../services';

export interface SelectModelsArgs {
  role?: ModelRole;
  /** Set the path without asking (scripts and tests). */
  path?: string;
}

/** Every model file in the configured folders and the workspace. */
export async function findModelFiles(): Promise<string[]> {
  const root = vscode.workspace.workspaceFolders?.[0]?.uri.fsPath;
  const folders = readExtensionSettings()
    .modelFolders.map((f) => resolveFolder(f, root))
    .filter((f): f is string => f !== undefined);
  const [scanned, inWorkspace] = await Promise.all([
    scanModelFolders(folders),
    vscode.workspace.workspaceFolders
      ? vscode.workspace.findFiles('**/*.{gguf,safetensors,ckpt}', '**/{node_modules,.git}/**', 500).then((uris) => uris.filter((u) => u.scheme === 'file').map((u) => u.fsPath))
      : Promise.resolve([]),
  ]);
  return [...new Set([...scanned, ...inWorkspace])];
}

export async function listModels(role: ModelRole): Promise<string[]> {
  return rankModelFiles(await findModelFiles(), role);
}

async function pickRole(services: Services): Promise<ModelRole | undefined> {
  const settings = readSidecarSettings(services.storageDir);
  const current = (p: string) => (p ? path.basename(p) : 'not set');
  const picked = await vscode.window.showQuickPick(
    [
      { label: '$(comment-discussion) LLM', description: `GGUF · now ${current(settings.llm.modelPath)}`, role: 'llm' as const },
      { label: '$(file-media) Image model', description: `safetensors / GGUF · now ${current(settings.image.modelPath)}`, role: 'image' as const },
    ],
    { title: 'Select Models', placeHolder: 'Which model do you want to choose?' },
  );
  return picked?.role;
}

async function describe(file: string): Promise<string> {
  try {
    return formatBytes((await fs.stat(file)).size);
  } catch {
    return '';
  }
}

export async function selectModelsCommand(services: Services, args: SelectModelsArgs = {}): Promise<void> {
  const role = args.role ?? (await pickRole(services));
  if (!role) return;
  if (args.path) {
    await updateModelPath(role, args.path);
    return;
  }
  type Item = vscode.QuickPickItem & { file?: string; action?: 'browse' | 'folders' };
  const quickPick = vscode.window.createQuickPick<Item>();
  quickPick.title = role === 'llm' ? 'Select the LLM (GGUF)' : 'Select the image model';
  quickPick.placeholder = 'Looking in the model folders and the workspace…';
  quickPick.busy = true;
  quickPick.matchOnDescription = true;
  const extras: Item[] = [
    { label: '$(folder-opened) Browse…', action: 'browse', alwaysShow: true },
    { label: '$(gear) Configure model folders…', action: 'folders', alwaysShow: true },
  ];
  quickPick.items = extras;
  quickPick.show();
  const files = await listModels(role);
  const items: Item[] = await Promise.all(
    files.map(async (file) => ({ label: path.basename(file), description: await describe(file), detail: path.dirname(file), file })),
  );
  quickPick.items = [...items, { label: '', kind: vscode.QuickPickItemKind.Separator }, ...extras];
  quickPick.placeholder = files.length > 0 ? 'Pick a model file' : 'No model files found: browse, or add a folder to vramRelay.models.folders';
  quickPick.busy = false;
  const picked = await new Promise<Item | undefined>((resolve) => {
    quickPick.onDidAccept(() => resolve(quickPick.selectedItems[0]));
    quickPick.onDidHide(() => resolve(undefined));
  });
  quickPick.dispose();
  if (!picked) return;
  let file = picked.file;
  if (picked.action === 'folders') {
    await vscode.commands.executeCommand('workbench.action.openSettings', 'vramRelay.models.folders');
    return;
  }
  if (picked.action === 'browse') {
    const chosen = await vscode.window.showOpenDialog({
      title: quickPick.title,
      canSelectMany: false,
      filters: role === 'llm' ? { 'GGUF models': ['gguf'] } : { 'Image models': ['safetensors', 'gguf', 'ckpt'] },
    });
    file = chosen?.[0]?.fsPath;
  }
  if (!file) return;
  await updateModelPath(role, file);
  void vscode.window.showInformationMessage(`VRAM Relay: ${role === 'llm' ? 'LLM' : 'image model'} set to ${path.basename(file)}.`);
}
