/**
 * The budget panel: a webview with a strict CSP (fresh nonce per render, scripts and styles only from
 * dist/media). The webview says `ready`; the panel answers with a full state, then relays snapshots, decisions
 * and progress as they come. Restored after a reload by a WebviewPanelSerializer.
 */

import * as vscode from 'vscode';
import { PreviewPlan } from '../sidecar/protocol';
import { PANEL_COMMANDS, type FromPanel, type PlanRequest, type ToPanel } from '../media/panelMessages';
import type { DecisionLog } from './decisionLog';
import { sizeMultipleFor, validateBatch, validateSide } from './imageRequest';
import type { MemoryHistory } from './memoryHistory';
import { sampleOf } from './memoryHistory';
import { createNonce, panelHtml } from './panelHtml';
import { describeNoFit, summarisePlan } from './planSummary';
import { readSidecarSettings } from './settings';
import type { SidecarClient } from './sidecarClient';

export const BUDGET_PANEL_VIEW_TYPE = 'vramRelay.budgetPanel';

export interface BudgetPanelDeps {
  extensionUri: vscode.Uri;
  storageDir: string;
  sidecar: SidecarClient;
  history: MemoryHistory;
  decisions: DecisionLog;
  /** Image model files Select Models would offer, for the plan form's model list. */
  listImageModels(): Promise<string[]>;
}

export class BudgetPanel implements vscode.Disposable {
  private panel: vscode.WebviewPanel | undefined;
  private panelDisposables: vscode.Disposable[] = [];
  private readonly disposables: vscode.Disposable[] = [];
  private ready = false;
  private pendingFocus: { request?: PlanRequest } | undefined;

  constructor(private readonly deps: BudgetPanelDeps) {
    const { sidecar } = deps;
    this.disposables.push(
      sidecar.onSnapshot((snapshot) => this.post({ type: 'snapshot', snapshot, sample: sampleOf(snapshot) })),
      sidecar.onDecision((event) => this.post({ type: 'decision', event })),
      sidecar.onJobProgress((progress) => {
        // Streamed LLM text is not the panel's business; stages and steps are.
        if (progress.textDelta === undefined) this.post({ type: 'progress', progress });
      }),
      sidecar.onDidChangeConnection((connection) => this.post({ type: 'connection', connection, failure: sidecar.lastFailure })),
      vscode.window.registerWebviewPanelSerializer(BUDGET_PANEL_VIEW_TYPE, {
        deserializeWebviewPanel: async (panel) => this.adopt(panel),
      }),
    );
  }

  /** Opens (or reveals) the panel; `focusPlan` brings the plan form forward, optionally filled in and run. */
  show(focusPlan?: { request?: PlanRequest }): void {
    if (this.panel) {
      this.panel.reveal(undefined, false);
    } else {
      const panel = vscode.window.createWebviewPanel(BUDGET_PANEL_VIEW_TYPE, 'VRAM Budget', vscode.ViewColumn.Active, this.webviewOptions());
      this.adopt(panel);
    }
    if (focusPlan) {
      if (this.ready) this.post({ type: 'focusPlan', request: focusPlan.request });
      else this.pendingFocus = focusPlan;
    }
    // The panel needs data: start the sidecar if nothing else has.
    void this.deps.sidecar.ensureStarted().catch(() => undefined);
  }

  get visible(): boolean {
    return this.panel?.visible ?? false;
  }

  private webviewOptions(): vscode.WebviewPanelOptions & vscode.WebviewOptions {
    return {
      enableScripts: true,
      localResourceRoots: [vscode.Uri.joinPath(this.deps.extensionUri, 'dist', 'media')],
    };
  }

  /** Takes over a panel, new or restored by the serializer. */
  private adopt(panel: vscode.WebviewPanel): void {
    this.disposePanel();
    this.panel = panel;
    this.ready = false;
    panel.iconPath = vscode.Uri.joinPath(this.deps.extensionUri, 'media', 'icon.svg');
    panel.webview.options = this.webviewOptions();
    panel.webview.html = this.html(panel.webview);
    this.panelDisposables.push(
      panel.webview.onDidReceiveMessage((message: FromPanel) => void this.receive(message)),
      panel.onDidDispose(() => {
        if (this.panel === panel) {
          this.panel = undefined;
          this.ready = false;
          this.disposePanelListeners();
        }
      }),
    );
  }

  private html(webview: vscode.Webview): string {
    const media = vscode.Uri.joinPath(this.deps.extensionUri, 'dist', 'media');
    // A fresh nonce on every render: a restored or reloaded panel never reuses one.
    return panelHtml({
      cspSource: webview.cspSource,
      scriptUri: webview.asWebviewUri(vscode.Uri.joinPath(media, 'panel.js')).toString(),
      styleUri: webview.asWebviewUri(vscode.Uri.joinPath(media, 'panel.css')).toString(),
      nonce: createNonce(),
    });
  }

  private post(message: ToPanel): void {
    if (!this.panel || !this.ready) return;
    void this.panel.webview.postMessage(message);
  }

  private async receive(message: FromPanel): Promise<void> {
    switch (message.type) {
      case 'ready':
        await this.sendInit();
        return;
      case 'previewPlan':
        await this.previewPlan(message.requestId, message.request);
        return;
      case 'runCommand':
        if ((PANEL_COMMANDS as readonly string[]).includes(message.command)) await vscode.commands.executeCommand(message.command);
        return;
    }
  }

  private async sendInit(): Promise<void> {
    const { sidecar, history, decisions } = this.deps;
    const settings = readSidecarSettings(this.deps.storageDir);
    const imageModels: string[] = await this.deps.listImageModels().catch(() => []);
    if (settings.image.modelPath && !imageModels.includes(settings.image.modelPath)) imageModels.unshift(settings.image.modelPath);
    const snapshot = sidecar.snapshot;
    this.ready = true;
    this.post({
      type: 'init',
      connection: sidecar.state,
      failure: sidecar.lastFailure,
      snapshot,
      history: history.all(),
      decisions: decisions.all(),
      imageModels,
      defaults: { width: 1024, height: 1024, batch: 1, modelPath: settings.image.modelPath },
    });
    if (this.pendingFocus) {
      this.post({ type: 'focusPlan', request: this.pendingFocus.request });
      this.pendingFocus = undefined;
    }
  }

  private async previewPlan(requestId: number, request: PlanRequest): Promise<void> {
    const multiple = sizeMultipleFor(request.modelPath);
    const problem =
      (request.modelPath ? undefined : 'Pick an image model first (VRAM Relay: Select Models).') ??
      validateSide('Width', request.width, multiple) ??
      validateSide('Height', request.height, multiple) ??
      validateBatch(String(request.batch));
    if (problem) {
      this.post({ type: 'planResult', requestId, error: problem });
      return;
    }
    try {
      const plan = await this.deps.sidecar.request(PreviewPlan, {
        spec: {
          kind: 'image',
          modelPath: request.modelPath,
          prompt: '(plan preview)',
          width: request.width,
          height: request.height,
          batch: request.batch,
          steps: 20,
          seed: 0,
          outputPath: '',
        },
      });
      const summary = plan.fits ? (summarisePlan(plan, request.batch) ?? 'Runs with everything on the GPU; nothing has to yield.') : describeNoFit(plan);
      this.post({ type: 'planResult', requestId, plan, summary });
    } catch (error) {
      this.post({ type: 'planResult', requestId, error: error instanceof Error ? error.message : String(error) });
    }
  }

  private disposePanelListeners(): void {
    for (const d of this.panelDisposables) d.dispose();
    this.panelDisposables = [];
  }

  private disposePanel(): void {
    const panel = this.panel;
    this.disposePanelListeners();
    this.panel = undefined;
    panel?.dispose();
  }

  dispose(): void {
    this.disposePanel();
    for (const d of this.disposables) d.dispose();
  }
}
