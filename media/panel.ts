/**
 * The budget panel's webview: draws what the extension relays (it never talks to the sidecar itself) and keeps
 * its UI state with getState/setState so it comes back as it was after a reload.
 */

import '@vscode-elements/elements/dist/vscode-button/index.js';
import '@vscode-elements/elements/dist/vscode-label/index.js';
import '@vscode-elements/elements/dist/vscode-option/index.js';
import '@vscode-elements/elements/dist/vscode-single-select/index.js';
import '@vscode-elements/elements/dist/vscode-textfield/index.js';
import './panel.css';

import type { DecisionEvent } from '../sidecar/core/types';
import type { JobProgressParams, SidecarSnapshot } from '../sidecar/protocol';
import { formatBytes } from '../src/format';
import { renderDecisionRows, renderJobFilter } from './decisionTable';
import { renderDeviceBars } from './deviceBars';
import { h, replaceChildren } from './dom';
import type { FromPanel, MemorySample, PanelCommand, PanelConnection, PlanRequest, ToPanel } from './panelMessages';
import { connectionBanner, mergeDecisions, runningRows } from './panelModel';
import { renderPlanResult, type ShownPlan } from './planView';
import { renderTimeline } from './timeline';

interface PanelState {
  filterJob: string;
  form: PlanRequest;
  shownPlan?: ShownPlan;
}

interface VsCodeApi {
  postMessage(message: FromPanel): void;
  getState(): PanelState | undefined;
  setState(state: PanelState): void;
}

declare function acquireVsCodeApi(): VsCodeApi;

type ValueElement = HTMLElement & { value: string };

const vscode = acquireVsCodeApi();
const TIMELINE_WINDOW_MS = 10 * 60_000;
const MAX_SAMPLES = 1200;

const model = {
  connection: 'stopped' as PanelConnection,
  failure: undefined as string | undefined,
  snapshot: undefined as SidecarSnapshot | undefined,
  history: [] as MemorySample[],
  decisions: [] as DecisionEvent[],
  progress: new Map<string, JobProgressParams>(),
  imageModels: [] as string[],
  planBusy: false,
  planRequestId: 0,
};

const state: PanelState = vscode.getState() ?? { filterJob: '', form: { width: 1024, height: 1024, batch: 1, modelPath: '' } };

function saveState(): void {
  vscode.setState(state);
}

// ---------------------------------------------------------------------------------------------------------------
// Static skeleton: built once so focus and form input survive redraws.

const connectionLine = h('p', { id: 'connection', class: 'muted', role: 'status', 'aria-live': 'polite' });
const bannerText = h('span', { id: 'sidecar-banner-text' });
const bannerRestart = commandButton('vramRelay.restartSidecar', 'Restart sidecar', 'banner-restart');
const banner = h(
  'div',
  { id: 'sidecar-banner', class: 'banner', role: 'alert', 'data-testid': 'sidecar-banner', hidden: true },
  bannerText,
  h('span', { class: 'banner-actions' }, bannerRestart, commandButton('vramRelay.showLogs', 'Show logs', 'banner-logs')),
);
const demoBadge = h('span', { id: 'demo-badge', class: 'badge', hidden: true, title: 'Simulated device: no real memory is used' }, 'demo');
const deviceBars = h('div', { id: 'device-bars', 'data-testid': 'device-bars' });
const runningBody = h('div', { id: 'running-jobs', 'data-testid': 'running-jobs' });
const timeline = h('div', { id: 'memory-timeline', 'data-testid': 'memory-timeline' });
const filterSelect = h('vscode-single-select', { id: 'decision-filter', 'aria-label': 'Filter decisions by job' }) as ValueElement;
const decisionBody = h('tbody', {});
const decisionTable = h(
  'table',
  { id: 'decision-log', 'data-testid': 'decision-log', class: 'log' },
  h('caption', { class: 'visually-hidden' }, 'Decisions of the VRAM arbiter, newest first'),
  h('thead', {}, h('tr', {}, ...['Time', 'Kind', 'Job', 'Reason', 'Estimate', 'Measured'].map((t) => h('th', { scope: 'col', class: t === 'Estimate' || t === 'Measured' ? 'num' : '' }, t)))),
  decisionBody,
);

const widthField = h('vscode-textfield', { id: 'plan-width', type: 'number', min: 64, max: 4096, step: 8, name: 'width' }) as ValueElement;
const heightField = h('vscode-textfield', { id: 'plan-height', type: 'number', min: 64, max: 4096, step: 8, name: 'height' }) as ValueElement;
const batchField = h('vscode-textfield', { id: 'plan-batch', type: 'number', min: 1, max: 16, name: 'batch' }) as ValueElement;
const modelSelect = h('vscode-single-select', { id: 'plan-model', name: 'model', combobox: true, creatable: true }) as ValueElement;
const previewButton = h('vscode-button', { id: 'plan-preview', 'data-testid': 'plan-preview' }, 'Preview');
const planResult = h('div', { id: 'plan-result', 'data-testid': 'plan-result', 'aria-live': 'polite' });

function commandButton(command: PanelCommand, label: string, id: string): HTMLElement {
  const button = h('vscode-button', { id, secondary: true }, label);
  button.addEventListener('click', () => vscode.postMessage({ type: 'runCommand', command }));
  return button;
}

function field(id: string, label: string, control: HTMLElement): HTMLElement {
  return h('div', { class: 'field' }, h('vscode-label', { for: id }, label), control);
}

function section(id: string, title: string, ...children: (Node | null)[]): HTMLElement {
  const headingId = `${id}-title`;
  return h('section', { id, 'aria-labelledby': headingId }, h('h2', { id: headingId }, title), ...children);
}

function buildSkeleton(): void {
  const form = h(
    'form',
    { id: 'plan-form', class: 'plan-form', 'aria-describedby': 'plan-help' },
    field('plan-width', 'Width (px)', widthField),
    field('plan-height', 'Height (px)', heightField),
    field('plan-batch', 'Batch', batchField),
    field('plan-model', 'Image model', modelSelect),
    h('div', { class: 'field actions' }, previewButton),
  );
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    requestPlan();
  });
  // Enter in a text field submits the form (vscode-textfield is form-associated); the button clicks.
  previewButton.addEventListener('click', () => requestPlan());
  filterSelect.addEventListener('change', () => {
    state.filterJob = filterSelect.value;
    saveState();
    renderDecisions();
  });

  const app = document.getElementById('app')!;
  app.removeAttribute('aria-busy');
  replaceChildren(
    app,
    h(
      'header',
      { class: 'header' },
      h('h1', {}, 'VRAM budget ', demoBadge),
      banner,
      connectionLine,
      h(
        'div',
        { class: 'toolbar', role: 'toolbar', 'aria-label': 'Memory actions' },
        commandButton('vramRelay.freeGpuMemory', 'Free GPU memory', 'action-free'),
        commandButton('vramRelay.unloadLlm', 'Unload LLM', 'action-unload'),
        commandButton('vramRelay.reloadLlm', 'Reload LLM', 'action-reload'),
        commandButton('vramRelay.showLogs', 'Show logs', 'action-logs'),
      ),
    ),
    section('devices', 'Devices', deviceBars),
    section('running', 'Running now: estimate vs measured', runningBody),
    section('timeline', 'Memory, last 10 minutes', timeline),
    section('plan', 'Plan preview', h('p', { id: 'plan-help', class: 'muted' }, 'What would this job do now? Nothing runs.'), form, planResult),
    section('log', 'Decision log', field('decision-filter', 'Job', filterSelect), h('div', { class: 'table-wrap' }, decisionTable)),
  );
}

// ---------------------------------------------------------------------------------------------------------------
// Drawing

function renderConnection(): void {
  const text: Record<PanelConnection, string> = {
    stopped: 'Sidecar not started.',
    starting: 'Starting the sidecar…',
    restarting: 'Restarting the sidecar…',
    running: model.snapshot ? `Updated ${new Date(model.snapshot.at).toLocaleTimeString()}` : 'Connected; waiting for the first reading…',
    failed: 'The sidecar is not running.',
  };
  connectionLine.textContent = text[model.connection];
  connectionLine.dataset.connection = model.connection;
  const shown = connectionBanner(model.connection, model.failure, model.snapshot?.at);
  banner.hidden = !shown;
  banner.dataset.severity = shown?.severity ?? '';
  bannerText.textContent = shown?.text ?? '';
  bannerRestart.hidden = !shown?.offerRestart;
  demoBadge.hidden = model.snapshot?.deviceSource !== 'simulated';
}

function renderRunning(): void {
  const snapshot = model.snapshot;
  const rows = snapshot ? runningRows(snapshot, model.progress, model.decisions) : [];
  if (rows.length === 0) {
    const queued = snapshot?.queue.length ?? 0;
    replaceChildren(runningBody, h('p', { class: 'muted' }, queued > 0 ? `Nothing running; ${queued} queued.` : 'Nothing running.'));
    return;
  }
  replaceChildren(
    runningBody,
    h(
      'table',
      { class: 'log' },
      h('thead', {}, h('tr', {}, ...['Job', 'What', 'Stage', 'Steps', 'Estimate', 'Measured'].map((t) => h('th', { scope: 'col', class: t === 'Estimate' || t === 'Measured' ? 'num' : '' }, t)))),
      h(
        'tbody',
        {},
        ...rows.map((r) =>
          h(
            'tr',
            { 'data-job-id': r.jobId },
            h('td', {}, r.jobId),
            h('td', {}, r.what),
            h('td', {}, r.stage),
            h('td', {}, r.steps),
            h('td', { class: 'num' }, r.estimate !== undefined ? formatBytes(r.estimate) : '–'),
            h('td', { class: 'num' }, r.measured !== undefined ? formatBytes(r.measured) : 'not yet'),
          ),
        ),
      ),
    ),
  );
}

function renderDecisions(): void {
  state.filterJob = renderJobFilter(filterSelect, model.decisions, state.filterJob);
  renderDecisionRows(decisionBody, model.decisions, state.filterJob);
}

function renderTimelineNow(): void {
  renderTimeline(timeline, model.history, model.snapshot?.safetyMargin ?? 0, TIMELINE_WINDOW_MS, model.snapshot?.at ?? Date.now());
}

function renderModels(): void {
  const models = [...model.imageModels];
  if (state.form.modelPath && !models.includes(state.form.modelPath)) models.unshift(state.form.modelPath);
  const signature = models.join('\n');
  if (modelSelect.dataset.signature !== signature) {
    modelSelect.dataset.signature = signature;
    replaceChildren(modelSelect, ...models.map((m) => h('vscode-option', { value: m, description: m }, m.split(/[\\/]/).pop() ?? m)));
  }
  modelSelect.value = state.form.modelPath;
}

function fillForm(form: PlanRequest): void {
  widthField.value = String(form.width);
  heightField.value = String(form.height);
  batchField.value = String(form.batch);
  renderModels();
}

function renderAll(): void {
  renderConnection();
  renderDeviceBars(deviceBars, model.snapshot);
  renderRunning();
  renderTimelineNow();
  renderDecisions();
  renderPlanResult(planResult, state.shownPlan, model.planBusy);
}

// ---------------------------------------------------------------------------------------------------------------
// Plan preview

function readForm(): PlanRequest {
  return {
    width: Number(widthField.value),
    height: Number(heightField.value),
    batch: Number(batchField.value),
    modelPath: modelSelect.value.trim(),
  };
}

function requestPlan(request = readForm()): void {
  state.form = request;
  model.planBusy = true;
  model.planRequestId += 1;
  saveState();
  renderPlanResult(planResult, state.shownPlan, true);
  vscode.postMessage({ type: 'previewPlan', requestId: model.planRequestId, request });
}

// ---------------------------------------------------------------------------------------------------------------
// Messages from the extension

function addSample(sample: MemorySample): void {
  const last = model.history[model.history.length - 1];
  if (last && last.at >= sample.at) model.history[model.history.length - 1] = sample;
  else model.history.push(sample);
  const cutoff = sample.at - TIMELINE_WINDOW_MS;
  while (model.history.length > 0 && (model.history[0].at < cutoff || model.history.length > MAX_SAMPLES)) model.history.shift();
}

window.addEventListener('message', (event: MessageEvent<ToPanel>) => {
  const message = event.data;
  switch (message.type) {
    case 'init':
      model.connection = message.connection;
      model.failure = message.failure;
      model.snapshot = message.snapshot;
      model.history = [...message.history];
      model.decisions = mergeDecisions(message.decisions, message.snapshot?.recentDecisions ?? []);
      model.imageModels = message.imageModels;
      if (!vscode.getState()) state.form = message.defaults;
      if (!state.form.modelPath) state.form.modelPath = message.defaults.modelPath;
      fillForm(state.form);
      renderAll();
      return;
    case 'connection':
      model.connection = message.connection;
      model.failure = message.failure;
      renderConnection();
      return;
    case 'snapshot':
      model.snapshot = message.snapshot;
      addSample(message.sample);
      model.decisions = mergeDecisions(model.decisions, message.snapshot.recentDecisions);
      for (const id of [...model.progress.keys()]) {
        if (!message.snapshot.running.some((job) => job.id === id)) model.progress.delete(id);
      }
      renderConnection();
      renderDeviceBars(deviceBars, model.snapshot);
      renderRunning();
      renderTimelineNow();
      renderDecisions();
      return;
    case 'decision':
      model.decisions = mergeDecisions(model.decisions, [message.event]);
      renderDecisions();
      renderRunning();
      return;
    case 'progress':
      model.progress.set(message.progress.jobId, message.progress);
      renderRunning();
      return;
    case 'planResult':
      if (message.requestId !== model.planRequestId) return;
      model.planBusy = false;
      state.shownPlan = { plan: message.plan, summary: message.summary, error: message.error };
      saveState();
      renderPlanResult(planResult, state.shownPlan, false);
      return;
    case 'focusPlan':
      if (message.request) {
        state.form = message.request;
        fillForm(message.request);
        requestPlan(message.request);
      }
      document.getElementById('plan')?.scrollIntoView({ block: 'start' });
      widthField.focus();
      return;
  }
});

buildSkeleton();
fillForm(state.form);
renderAll();
vscode.postMessage({ type: 'ready' });
