/**
 * Messages between the extension and the budget panel's webview. The webview never talks to the sidecar: the
 * extension relays. Types only, shared by `src/budgetPanel.ts` and `media/panel.ts`.
 */

import type { DecisionEvent, Plan } from '../sidecar/core/types';
import type { JobProgressParams, SidecarSnapshot } from '../sidecar/protocol';

/** `restarting`: the sidecar stopped unexpectedly and the extension is starting it again. */
export type PanelConnection = 'stopped' | 'starting' | 'restarting' | 'running' | 'failed';

export interface DeviceSample {
  id: string;
  total: number;
  /** What the device reports as used (everyone). */
  used: number;
  /** What we hold: LLM, image worker and compute buffers. */
  ours: number;
}

/** One point of the memory timeline. */
export interface MemorySample {
  at: number;
  devices: DeviceSample[];
}

/** The plan preview form's fields. */
export interface PlanRequest {
  width: number;
  height: number;
  batch: number;
  modelPath: string;
}

/** Commands the panel may ask the extension to run (anything else is ignored). */
export const PANEL_COMMANDS = [
  'vramRelay.freeGpuMemory',
  'vramRelay.showLogs',
  'vramRelay.restartSidecar',
  'vramRelay.unloadLlm',
  'vramRelay.reloadLlm',
  'vramRelay.selectModels',
] as const;
export type PanelCommand = (typeof PANEL_COMMANDS)[number];

export type ToPanel =
  /** The answer to `ready`: everything needed to draw from nothing. */
  | {
      type: 'init';
      connection: PanelConnection;
      failure?: string;
      snapshot?: SidecarSnapshot;
      history: MemorySample[];
      decisions: DecisionEvent[];
      imageModels: string[];
      defaults: PlanRequest;
    }
  | { type: 'connection'; connection: PanelConnection; failure?: string }
  | { type: 'snapshot'; snapshot: SidecarSnapshot; sample: MemorySample }
  | { type: 'decision'; event: DecisionEvent }
  | { type: 'progress'; progress: JobProgressParams }
  | { type: 'planResult'; requestId: number; plan?: Plan; summary?: string; error?: string }
  /** Preview Plan from the palette: bring the form into view, optionally filled in and run. */
  | { type: 'focusPlan'; request?: PlanRequest };

export type FromPanel =
  | { type: 'ready' }
  | { type: 'previewPlan'; requestId: number; request: PlanRequest }
  | { type: 'runCommand'; command: PanelCommand };
