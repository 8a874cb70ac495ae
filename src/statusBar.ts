/**
 * The status-bar VRAM monitor: one item (id `vramRelay.monitor`, so users can hide it) redrawn from each
 * snapshot and connection change through the pure `statusView`. While the sidecar restarts after a crash it says
 * so; once automatic restarts are spent a click restarts it.
 */

import * as vscode from 'vscode';
import { llmAvailability } from './llmAvailability';
import type { SidecarClient } from './sidecarClient';
import { statusView, TOOLTIP_COMMANDS, type ActiveStage } from './statusText';

const REDRAW_FOR_TROUBLE_EXPIRY_MS = 30_000;

export class StatusMonitor implements vscode.Disposable {
  private readonly item: vscode.StatusBarItem;
  private readonly disposables: vscode.Disposable[] = [];
  private activeStage: ActiveStage | undefined;
  private completionsPaused = false;
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly sidecar: SidecarClient) {
    this.item = vscode.window.createStatusBarItem('vramRelay.monitor', vscode.StatusBarAlignment.Right, 100);
    this.item.name = 'VRAM Relay';
    this.disposables.push(
      this.item,
      sidecar.onSnapshot((snapshot) => {
        // The pause note lasts only while the LLM is really lent out.
        if (this.completionsPaused && llmAvailability(snapshot, true) !== 'lent') this.completionsPaused = false;
        this.render();
      }),
      sidecar.onDidChangeConnection((state) => {
        // A stage of a job of a process that is gone would stay on screen forever.
        if (state !== 'running') this.activeStage = undefined;
        this.render();
      }),
      sidecar.onJobProgress((p) => {
        this.activeStage = { jobId: p.jobId, stage: p.stage, step: p.step, totalSteps: p.totalSteps };
        this.render();
      }),
      sidecar.onJobDone((done) => {
        if (this.activeStage?.jobId === done.job.id) this.activeStage = undefined;
        this.render();
      }),
    );
    // The red "recent trouble" colour expires with time, not with a new snapshot.
    this.timer = setInterval(() => this.render(), REDRAW_FOR_TROUBLE_EXPIRY_MS);
    this.render();
    this.item.show();
  }

  /** Shown by inline completions while the LLM has lent its memory to an image job. */
  setCompletionsPaused(paused: boolean): void {
    if (paused === this.completionsPaused) return;
    this.completionsPaused = paused;
    this.render();
  }

  /** The text currently shown, for tests and the e2e suite. */
  get text(): string {
    return this.item.text;
  }

  private render(): void {
    const view = statusView({
      connection: this.sidecar.state,
      snapshot: this.sidecar.snapshot,
      activeStage: this.activeStage,
      completionsPaused: this.completionsPaused,
      failure: this.sidecar.lastFailure,
      restart: this.sidecar.restartAttempt,
      jobsInFlight: this.sidecar.jobsAwaitingRecovery,
      lastRestart: this.sidecar.lastRestart,
      now: Date.now(),
    });
    this.item.text = view.text;
    this.item.command = view.command;
    const tooltip = new vscode.MarkdownString(view.tooltip, true);
    tooltip.isTrusted = { enabledCommands: TOOLTIP_COMMANDS };
    this.item.tooltip = tooltip;
    this.item.accessibilityInformation = { label: view.accessibilityLabel, role: 'button' };
    this.item.backgroundColor =
      view.severity === 'error'
        ? new vscode.ThemeColor('statusBarItem.errorBackground')
        : view.severity === 'warning'
          ? new vscode.ThemeColor('statusBarItem.warningBackground')
          : undefined;
  }

  dispose(): void {
    clearInterval(this.timer);
    for (const d of this.disposables) d.dispose();
  }
}
