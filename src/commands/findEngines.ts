/**
 * Find Engines: looks for sd.cpp and llama-server on PATH and sets the machine-scoped paths; where none is found
 * it offers the official release pages (nothing is downloaded or run without the user).
 */

import { statSync } from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { ENGINE_RELEASES, findOnPath, type EngineKind } from '../engineLocator';

const SETTING: Record<EngineKind, string> = { image: 'image.binaryPath', llmServer: 'llm.serverPath' };
const NAME: Record<EngineKind, string> = { image: 'stable-diffusion.cpp (sd-cli)', llmServer: 'llama.cpp server (llama-server)' };

function isFile(candidate: string): boolean {
  try {
    return statSync(candidate).isFile();
  } catch {
    return false;
  }
}

async function chooseEngine(kind: EngineKind): Promise<void> {
  const found = findOnPath(kind, process.env.PATH ?? '', process.platform, isFile, process.env.PATHEXT);
  type Item = vscode.QuickPickItem & { file?: string; action?: 'browse' | 'download' };
  const items: Item[] = [
    ...found.map((file) => ({ label: path.basename(file), description: path.dirname(file), file })),
    { label: '$(folder-opened) Browse for the binary…', action: 'browse' },
    { label: '$(cloud-download) Open the official releases page', action: 'download' },
  ];
  const picked = await vscode.window.showQuickPick(items, {
    title: `Find ${NAME[kind]}`,
    placeHolder: found.length > 0 ? `Found ${found.length} on PATH` : 'Not found on PATH: browse, or download a release for your platform',
  });
  if (!picked) return;
  let file = picked.file;
  if (picked.action === 'download') {
    await vscode.env.openExternal(vscode.Uri.parse(ENGINE_RELEASES[kind]));
    return;
  }
  if (picked.action === 'browse') file = (await vscode.window.showOpenDialog({ title: `Select ${NAME[kind]}`, canSelectMany: false }))?.[0]?.fsPath;
  if (!file) return;
  // Binary paths are machine settings: a workspace can never point them elsewhere.
  await vscode.workspace.getConfiguration('vramRelay').update(SETTING[kind], file, vscode.ConfigurationTarget.Global);
  void vscode.window.showInformationMessage(`VRAM Relay: ${NAME[kind]} set to ${file}.`);
}

export async function findEnginesCommand(kind?: EngineKind): Promise<void> {
  const which =
    kind ??
    (
      await vscode.window.showQuickPick(
        [
          { label: 'Image engine', description: 'stable-diffusion.cpp: sd-cli or sd-server', engine: 'image' as const },
          { label: 'LLM server (optional)', description: 'llama-server, when vramRelay.llm.engine is "server"', engine: 'llmServer' as const },
        ],
        { title: 'Find Engines' },
      )
    )?.engine;
  if (which) await chooseEngine(which);
}
