/**
 * Entry point. `VramRelay` owns everything the extension creates (the sidecar client, the status item, the
 * panel, the providers); all of it is disposed through `context.subscriptions`.
 */

import * as vscode from 'vscode';
import { BudgetPanel } from './budgetPanel';
import { askAboutSelectionCommand } from './commands/askAboutSelection';
import { enhancePromptCommand, type EnhanceTarget } from './commands/enhancePrompt';
import { findEnginesCommand, isEngineKind } from './commands/findEngines';
import { generateImageCommand, type GenerateImageArgs } from './commands/generateImage';
import { freeGpuMemoryCommand, reloadLlmCommand, unloadLlmCommand } from './commands/residents';
import { listModels, selectModelsCommand, type SelectModelsArgs } from './commands/selectModels';
import { tagImageCommand } from './commands/tagImage';
import { DecisionLog } from './decisionLog';
import { LlmInlineCompletionProvider } from './editor/inlineCompletions';
import { PromptCodeActionProvider } from './editor/promptCodeActions';
import { MemoryHistory } from './memoryHistory';
import type { PlanRequest } from '../media/panelMessages';
import type { Services } from './services';
import { readSidecarSettings, SECTION } from './settings';
import { changedRestartSettings, touchesSidecar } from './settingsModel';
import { SidecarClient } from './sidecarClient';
import { StatusMonitor } from './statusBar';

/** Editors the prompt code actions and completions serve: real files and untitled buffers, any language. */
const EDITOR_SELECTOR: vscode.DocumentSelector = [{ scheme: 'file' }, { scheme: 'untitled' }, { scheme: 'vscode-notebook-cell' }];

export class VramRelay implements vscode.Disposable, Services {
  readonly sidecar: SidecarClient;
  readonly status: StatusMonitor;
  readonly panel: BudgetPanel;
  readonly storageDir: string;
  private readonly history = new MemoryHistory();
  private readonly decisions = new DecisionLog();
  private readonly disposables: vscode.Disposable[] = [];

  constructor(readonly context: vscode.ExtensionContext) {
    this.storageDir = context.globalStorageUri.fsPath;
    this.sidecar = new SidecarClient(context.asAbsolutePath('dist/sidecar.js'), () => readSidecarSettings(this.storageDir));
    this.status = new StatusMonitor(this.sidecar);
    this.panel = new BudgetPanel({
      extensionUri: context.extensionUri,
      storageDir: this.storageDir,
      sidecar: this.sidecar,
      history: this.history,
      decisions: this.decisions,
      listImageModels: () => listModels('image'),
    });
    this.disposables.push(
      this.status,
      this.panel,
      this.sidecar.onSnapshot((snapshot) => {
        this.history.add(snapshot);
        this.decisions.add(snapshot.recentDecisions);
      }),
      this.sidecar.onDecision((event) => this.decisions.add([event])),
      vscode.workspace.onDidChangeConfiguration((event) => void this.settingsChanged(event)),
      vscode.workspace.onDidGrantWorkspaceTrust(() => void this.sidecar.pushSettings()),
      vscode.languages.registerCodeActionsProvider(EDITOR_SELECTOR, new PromptCodeActionProvider(), PromptCodeActionProvider.metadata),
      vscode.languages.registerInlineCompletionItemProvider(EDITOR_SELECTOR, new LlmInlineCompletionProvider(this)),
      ...this.registerCommands(),
    );
  }

  /** The monitor is always visible, so it needs data: start the sidecar now (in the background). */
  startMonitor(): void {
    void this.sidecar.ensureStarted().catch(() => undefined);
  }

  private registerCommands(): vscode.Disposable[] {
    const command = (id: string, run: (...args: never[]) => unknown) => vscode.commands.registerCommand(id, run);
    return [
      command('vramRelay.restartSidecar', () =>
        vscode.window.withProgress({ location: vscode.ProgressLocation.Window, title: 'VRAM Relay: restarting the sidecar' }, () =>
          this.sidecar.restart().catch(() => undefined),
        ),
      ),
      command('vramRelay.showLogs', () => this.sidecar.log.show()),
      command('vramRelay.showBudgetPanel', () => this.panel.show()),
      command('vramRelay.previewPlan', (request?: PlanRequest) => this.panel.show({ request: isPlanRequest(request) ? request : undefined })),
      command('vramRelay.generateImage', (args?: GenerateImageArgs) => generateImageCommand(this, args)),
      command('vramRelay.enhancePrompt', (target?: EnhanceTarget | vscode.Uri) => enhancePromptCommand(this, target)),
      command('vramRelay.askAboutSelection', () => askAboutSelectionCommand(this)),
      command('vramRelay.tagImage', (uri?: vscode.Uri) => tagImageCommand(this, uri instanceof vscode.Uri ? uri : undefined)),
      command('vramRelay.unloadLlm', () => unloadLlmCommand(this)),
      command('vramRelay.reloadLlm', () => reloadLlmCommand(this)),
      command('vramRelay.freeGpuMemory', () => freeGpuMemoryCommand(this)),
      command('vramRelay.selectModels', (args?: SelectModelsArgs) => selectModelsCommand(this, args && typeof args === 'object' ? args : {})),
      command('vramRelay.findEngines', (kind?: unknown) => findEnginesCommand(this, isEngineKind(kind) ? kind : undefined)),
    ];
  }

  private async settingsChanged(event: vscode.ConfigurationChangeEvent): Promise<void> {
    if (!event.affectsConfiguration(SECTION)) return;
    const affects = (key: string) => event.affectsConfiguration(`${SECTION}.${key}`);
    const restart = new Set(changedRestartSettings(affects));
    if (touchesSidecar(affects)) {
      const result = await this.sidecar.pushSettings();
      for (const key of result?.restartNeeded ?? []) restart.add(key.startsWith(`${SECTION}.`) ? key : `${SECTION}.${key}`);
    }
    if (restart.size === 0 || this.sidecar.state !== 'running') return;
    const choice = await vscode.window.showInformationMessage(
      `VRAM Relay: ${[...restart].join(', ')} ${restart.size === 1 ? 'takes' : 'take'} effect after a sidecar restart.`,
      'Restart Sidecar',
    );
    if (choice) await vscode.commands.executeCommand('vramRelay.restartSidecar');
  }

  /** Stops the sidecar and waits for it, so no process outlives the window. */
  async shutdown(): Promise<void> {
    this.dispose();
    await this.sidecar.dispose();
  }

  dispose(): void {
    for (const d of this.disposables.splice(0)) d.dispose();
  }
}

function isPlanRequest(value: unknown): value is PlanRequest {
  const r = value as Partial<PlanRequest> | undefined;
  return typeof r?.width === 'number' && typeof r.height === 'number' && typeof r.batch === 'number' && typeof r.modelPath === 'string';
}

let relay: VramRelay | undefined;

/** What other extensions and the end-to-end tests may read. */
export interface VramRelayApi {
  statusText(): string;
  sidecarState(): string;
}

export function activate(context: vscode.ExtensionContext): VramRelayApi {
  relay = new VramRelay(context);
  context.subscriptions.push(relay);
  relay.startMonitor();
  const current = relay;
  return {
    statusText: () => current.status.text,
    sidecarState: () => current.sidecar.state,
  };
}

export async function deactivate(): Promise<void> {
  const current = relay;
  relay = undefined;
  await current?.shutdown();
}
