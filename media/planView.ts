/** The plan preview result: what would happen now for a size, model and batch. */

import type { Plan } from '../sidecar/core/types';
import { formatBytes, formatDuration } from '../src/format';
import { h, replaceChildren } from './dom';

const STAGE_NAMES: Record<string, string> = {
  textEncode: 'Text encode',
  diffusion: 'Diffusion',
  vaeDecode: 'VAE decode',
  llmLoad: 'LLM load',
  llmInfer: 'LLM inference',
};

export interface ShownPlan {
  plan?: Plan;
  summary?: string;
  error?: string;
}

export function renderPlanResult(container: HTMLElement, shown: ShownPlan | undefined, busy: boolean): void {
  container.setAttribute('aria-busy', String(busy));
  if (busy) {
    replaceChildren(container, h('p', { class: 'muted' }, 'Asking the planner…'));
    return;
  }
  if (!shown) {
    container.removeAttribute('data-fits');
    replaceChildren(container, h('p', { class: 'muted' }, 'Pick a size, batch and model, then Preview: nothing runs.'));
    return;
  }
  if (shown.error || !shown.plan) {
    container.setAttribute('data-fits', 'error');
    replaceChildren(container, h('p', { class: 'error', id: 'plan-summary', role: 'alert' }, shown.error ?? 'No plan came back.'));
    return;
  }
  const plan = shown.plan;
  container.setAttribute('data-fits', String(plan.fits));
  const placement = plan.placement;
  const rows = plan.stages.map((s) =>
    h('tr', { 'data-stage': s.stage }, h('th', { scope: 'row' }, STAGE_NAMES[s.stage] ?? s.stage), h('td', { class: 'num' }, formatBytes(s.peak)), h('td', {}, s.parts.map((p) => `${p.label} ${formatBytes(p.bytes)}`).join(' + '))),
  );
  replaceChildren(
    container,
    h('p', { id: 'plan-summary', class: plan.fits ? '' : 'error' }, shown.summary ?? plan.reason),
    h('p', { class: 'muted' }, `Peak ${formatBytes(plan.peak)} · available ${formatBytes(plan.available)} · extra time ${plan.extraTimeMs > 0 ? `+${formatDuration(plan.extraTimeMs)}` : 'none'}`),
    plan.reason ? h('p', { class: 'muted', id: 'plan-reason' }, `Why: ${plan.reason}`) : null,
    placement
      ? h(
          'p',
          { class: 'muted' },
          `Placement: text encoder ${placement.textEncoder.toUpperCase()}, diffusion ${placement.diffusion === 'offload' ? 'streamed from RAM' : 'GPU'}, VAE ${placement.vae.toUpperCase()}${placement.vaeTiling ? ' tiled' : ''}${placement.flashAttention ? ', flash attention' : ''}`,
        )
      : null,
    plan.yields.length > 0 ? h('ul', { class: 'yields' }, ...plan.yields.map((y) => h('li', {}, `${y.resident === 'llm' ? 'LLM' : 'Image server'}: ${y.from} → ${y.to}, frees ${formatBytes(y.frees)}, back in about ${formatDuration(y.restoreMs)}`))) : null,
    rows.length > 0
      ? h('table', { class: 'stages', 'aria-label': 'Expected peak per stage' }, h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Stage'), h('th', { scope: 'col', class: 'num' }, 'Peak'), h('th', { scope: 'col' }, 'Made of'))), h('tbody', {}, ...rows))
      : null,
    plan.suggestions.length > 0 ? h('ul', { class: 'suggestions', 'aria-label': 'What would fit' }, ...plan.suggestions.map((s) => h('li', {}, s))) : null,
  );
}
