/** What the commands and editor features share: the owner object hands them out, nothing else creates them. */

import type * as vscode from 'vscode';
import type { BudgetPanel } from './budgetPanel';
import type { SidecarClient } from './sidecarClient';
import type { StatusMonitor } from './statusBar';

export interface Services {
  readonly context: vscode.ExtensionContext;
  readonly sidecar: SidecarClient;
  readonly status: StatusMonitor;
  readonly panel: BudgetPanel;
  /** The extension's global storage folder, sent to the sidecar for calibration data and tokens. */
  readonly storageDir: string;
}
