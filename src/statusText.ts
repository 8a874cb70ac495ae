/**
 * What the status-bar monitor shows, as a pure function of the sidecar's snapshot and connection: the text, the
 * Markdown tooltip, the colour and what a click does. Kept free of `vscode` so it is tested on its own.
 */

import type { DecisionEvent, JobInfo } from '../sidecar/core/types';
import type { SidecarSnapshot } from '../sidecar/protocol';
import { formatBytes, formatClock, formatGiB } from './format';
import { planDegradations } from './planSummary';

/** `restarting`: the sidecar stopped unexpectedly and is being started again automatically. */
export type ConnectionState = 'stopped' | 'starting' | 'restarting' | 'running' | 'failed';
export type StatusSeverity = 'normal' | 'warning' | 'error';

/** A stage reported by `vramRelay/jobProgress` for the job the image worker is running. */
export interface ActiveStage {
  jobId: string;
  stage: string;
  step?: number;
  totalSteps?: number;
}

export interface StatusInput {
  connection: ConnectionState;
  snapshot?: SidecarSnapshot;
  activeStage?: ActiveStage;
  /** True while inline completions wait because the LLM lent its memory to an image job. */
  completionsPaused?: boolean;
  /** Why the sidecar is down: why it failed to start, or why it stopped (while restarting or after giving up). */
  failure?: string;
  /** While restarting: which automatic restart this is, of how many the budget allows. */
  restart?: { attempt: number; max: number };
  /** Jobs the extension had in flight when the sidecar stopped, waiting to be resubmitted or reported. */
  jobsInFlight?: number;
  /** The last automatic restart, remembered for a few minutes after the sidecar is back. */
  lastRestart?: { at: number; reason: string };
  now: number;
}

export interface StatusView {
  text: string;
  /** Markdown, with command links (the tooltip is trusted for those commands only). */
  tooltip: string;
  severity: StatusSeverity;
  accessibilityLabel: string;
  /** The command a click runs. */
  command: string;
}

/** How long a failed, retried or rejected job keeps the monitor red (and a restart keeps it yellow). */
export const RECENT_TROUBLE_MS = 5 * 60_000;

/** Commands the tooltip links to; the status item trusts exactly these. */
export const TOOLTIP_COMMANDS = ['vramRelay.showBudgetPanel', 'vramRelay.freeGpuMemory', 'vramRelay.showLogs', 'vramRelay.restartSidecar'];

const TROUBLE_KINDS = new Set<DecisionEvent['kind']>(['fail', 'retry', 'reject']);

const STAGE_WORDS: Record<string, string> = {
  queued: 'queued',
  waiting: 'waiting for memory',
  textEncode: 'encoding prompt',
  diffusion: 'sampling',
  vaeDecode: 'decoding',
  saving: 'saving',
  generating: 'generating',
  retrying: 'retrying',
};

function escapeMarkdown(text: string): string {
  return text.replace(/[\\`*_{}[\]()#+\-.!|<>]/g, (c) => `\\${c}`);
}

function llmWord(snapshot: SidecarSnapshot): string {
  const { llm } = snapshot;
  // While the GPU LLM has yielded, the CPU copy is what answers.
  if (llm.state !== 'hot' && llm.cpuCopy === 'running') return 'LLM on CPU';
  if (llm.state === 'stopped') return llm.costs ? 'LLM stopped' : 'LLM off';
  return `LLM ${llm.state}`;
}

function imageWord(snapshot: SidecarSnapshot, active?: ActiveStage): string {
  const running = snapshot.running.find((job) => job.spec.kind === 'image');
  if (running) {
    if (active && active.jobId === running.id) {
      const word = STAGE_WORDS[active.stage] ?? active.stage;
      const steps = active.step !== undefined && active.totalSteps ? ` ${active.step}/${active.totalSteps}` : '';
      return `SD ${word}${steps}`;
    }
    return running.status === 'retrying' ? 'SD retrying' : 'SD busy';
  }
  if (snapshot.queue.some((job) => job.spec.kind === 'image')) return 'SD queued';
  return snapshot.image.state === 'resident' ? 'SD resident' : 'SD idle';
}

/** Decisions from the last few minutes that mean a job failed, was rejected or had to be retried safer. */
export function recentTrouble(decisions: readonly DecisionEvent[], now: number): DecisionEvent[] {
  return decisions.filter((d) => TROUBLE_KINDS.has(d.kind) && now - d.at <= RECENT_TROUBLE_MS);
}

/** Running jobs whose plan gives something up (tiled VAE, LLM context dropped...). */
export function degradedJobs(jobs: readonly JobInfo[]): JobInfo[] {
  return jobs.filter((job) => job.plan && planDegradations(job.plan).length > 0);
}

function deviceFigures(snapshot: SidecarSnapshot): string {
  if (snapshot.deviceSource === 'cpu-only' || snapshot.devices.every((d) => d.kind === 'cpu')) return 'CPU only';
  const gpus = snapshot.devices.filter((d) => d.kind !== 'cpu');
  return gpus.map((d) => `${formatGiB(d.used)}/${formatGiB(d.total)} GB`).join(' · ');
}

function recentRestart(input: StatusInput): StatusInput['lastRestart'] {
  const last = input.lastRestart;
  return last && input.now - last.at <= RECENT_TROUBLE_MS ? last : undefined;
}

function severityOf(input: StatusInput, snapshot: SidecarSnapshot): StatusSeverity {
  if (recentTrouble(snapshot.recentDecisions, input.now).length > 0 || degradedJobs(snapshot.running).length > 0) return 'error';
  const low = snapshot.devices.some((d) => {
    const free = snapshot.effectiveFree[d.id];
    return free !== undefined && free < snapshot.safetyMargin;
  });
  return low || recentRestart(input) ? 'warning' : 'normal';
}

function tooltipFor(input: StatusInput, snapshot: SidecarSnapshot): string {
  const lines: string[] = [];
  const demo = snapshot.deviceSource === 'simulated' ? ' · **demo device** (simulated, no real memory is used)' : '';
  lines.push(`**VRAM Relay**${demo}`, '');
  lines.push('| Device | Used | Effective free | Total |', '|---|---:|---:|---:|');
  for (const d of snapshot.devices) {
    const free = snapshot.effectiveFree[d.id];
    lines.push(`| ${escapeMarkdown(d.name)} | ${formatBytes(d.used)} | ${free === undefined ? '–' : formatBytes(free)} | ${formatBytes(d.total)} |`);
  }
  lines.push('');
  for (const [deviceId, parts] of Object.entries(snapshot.breakdown)) {
    const shown = parts.filter((p) => p.bytes > 0);
    if (shown.length === 0) continue;
    lines.push(`**${escapeMarkdown(deviceId)}**: ${shown.map((p) => `${escapeMarkdown(p.label)} ${formatBytes(p.bytes)}`).join(' · ')}`, '');
  }
  const llm = snapshot.llm;
  const wanted = llm.wantedState !== llm.state ? ` (returns to ${llm.wantedState} when room frees)` : '';
  lines.push(`LLM: ${llm.state}${wanted} · image worker: ${snapshot.image.state}${snapshot.image.heldBytes > 0 ? ` (${formatBytes(snapshot.image.heldBytes)})` : ''}`);
  if (llm.cpuCopy === 'running') lines.push('', 'The CPU copy of the LLM is running (RAM, no VRAM): it answers while an image job holds the GPU.');
  else if (llm.cpuCopy === 'set-aside') lines.push('', 'The CPU copy of the LLM failed and is set aside: LLM requests wait for the GPU while images run.');
  if (snapshot.queue.length > 0 || snapshot.running.length > 0) {
    lines.push('', `Jobs: ${snapshot.running.length} running, ${snapshot.queue.length} queued`);
  }
  if (input.completionsPaused) lines.push('', 'Inline completions are paused while the LLM has lent its memory to an image job.');
  const trouble = recentTrouble(snapshot.recentDecisions, input.now);
  const last = trouble[trouble.length - 1];
  if (last) lines.push('', `$(error) ${formatClock(last.at)} ${escapeMarkdown(last.reason)}`);
  for (const job of degradedJobs(snapshot.running)) {
    lines.push('', `$(warning) Job ${escapeMarkdown(job.id)}: ${escapeMarkdown(planDegradations(job.plan!).join(', '))}`);
  }
  const restarted = recentRestart(input);
  if (restarted) lines.push('', `$(debug-restart) ${formatClock(restarted.at)} the sidecar stopped unexpectedly (${escapeMarkdown(restarted.reason)}) and was restarted.`);
  lines.push(
    '',
    '[Show Budget Panel](command:vramRelay.showBudgetPanel) · [Free GPU Memory](command:vramRelay.freeGpuMemory) · [Show Logs](command:vramRelay.showLogs)',
  );
  return lines.join('\n');
}

function jobsWord(n: number): string {
  return `${n} job${n === 1 ? '' : 's'}`;
}

/** While the sidecar comes back after a crash: say so, say why, and say what happens to the jobs in flight. */
function restartingView(input: StatusInput): StatusView {
  const why = input.failure ? ` (${escapeMarkdown(input.failure)})` : '';
  const which = input.restart ? ` (automatic restart ${input.restart.attempt} of ${input.restart.max})` : '';
  const lines = [`**VRAM Relay**: the sidecar stopped unexpectedly${why} and is restarting${which}.`];
  const jobs = input.jobsInFlight ?? 0;
  if (jobs > 0) lines.push('', `${jobsWord(jobs)} in flight: image jobs are resubmitted when it is back, LLM requests are reported.`);
  lines.push('', '[Show Logs](command:vramRelay.showLogs) · [Show Budget Panel](command:vramRelay.showBudgetPanel)');
  return {
    text: '$(sync~spin) VRAM Relay restarting…',
    tooltip: lines.join('\n'),
    severity: 'warning',
    accessibilityLabel: `VRAM Relay: the sidecar stopped unexpectedly and is restarting${input.failure ? ` (${input.failure})` : ''}`,
    command: 'vramRelay.showBudgetPanel',
  };
}

/** The sidecar is down for good (start-up failed, or the restart budget is spent): a click restarts it. */
function stoppedView(input: StatusInput): StatusView {
  const why = input.failure ? `\n\n${escapeMarkdown(input.failure)}` : '';
  return {
    text: '$(error) VRAM Relay stopped',
    tooltip: `**VRAM Relay** stopped: the sidecar is not running.${why}\n\nClick to restart it.\n\n[Restart Sidecar](command:vramRelay.restartSidecar) · [Show Logs](command:vramRelay.showLogs)`,
    severity: 'error',
    accessibilityLabel: `VRAM Relay stopped: the sidecar is not running${input.failure ? ` (${input.failure})` : ''}. Click to restart it.`,
    command: 'vramRelay.restartSidecar',
  };
}

/** The monitor's text, tooltip, colour and click for the current state. */
export function statusView(input: StatusInput): StatusView {
  const { snapshot } = input;
  if (input.connection === 'restarting') return restartingView(input);
  if (input.connection === 'failed') return stoppedView(input);
  if (!snapshot || input.connection !== 'running') {
    const starting = input.connection === 'starting' || (input.connection === 'running' && !snapshot);
    return {
      text: starting ? '$(loading~spin) VRAM Relay' : '$(server) VRAM Relay',
      tooltip: starting ? '**VRAM Relay**: starting the sidecar…' : '**VRAM Relay**: click to start the monitor.\n\n[Show Budget Panel](command:vramRelay.showBudgetPanel)',
      severity: 'normal',
      accessibilityLabel: starting ? 'VRAM Relay: starting' : 'VRAM Relay: not started',
      command: 'vramRelay.showBudgetPanel',
    };
  }
  const demo = snapshot.deviceSource === 'simulated' ? ' [demo]' : '';
  const llm = input.completionsPaused ? `${llmWord(snapshot)} (lent)` : llmWord(snapshot);
  const text = `$(server) ${deviceFigures(snapshot)}${demo} · ${llm} · ${imageWord(snapshot, input.activeStage)}`;
  return {
    text,
    tooltip: tooltipFor(input, snapshot),
    severity: severityOf(input, snapshot),
    accessibilityLabel: `VRAM Relay: ${text.replace(/\$\([^)]*\)\s*/g, '')}`,
    command: 'vramRelay.showBudgetPanel',
  };
}
