/** The decision log: every offload, yield, restore and retry with its reason and numbers; filterable by job. */

import type { DecisionEvent } from '../sidecar/core/types';
import { formatBytes, formatClock } from '../src/format';
import { h, replaceChildren } from './dom';
import { filterDecisions, jobIdsOf } from './panelModel';

/** Shown rows are capped so a long session stays quick to redraw. */
const MAX_ROWS = 200;

export function renderDecisionRows(tbody: HTMLElement, decisions: readonly DecisionEvent[], jobId: string): void {
  const rows = filterDecisions(decisions, jobId).slice(0, MAX_ROWS);
  if (rows.length === 0) {
    replaceChildren(tbody, h('tr', {}, h('td', { colspan: 6, class: 'muted' }, jobId ? `No decisions for job ${jobId}.` : 'No decisions yet.')));
    return;
  }
  replaceChildren(
    tbody,
    ...rows.map((d) =>
      h(
        'tr',
        { 'data-kind': d.kind, 'data-job-id': d.jobId ?? '', 'data-seq': d.seq },
        h('td', { class: 'nowrap' }, formatClock(d.at)),
        h('td', {}, h('span', { class: `kind kind-${d.kind}` }, d.kind)),
        h('td', { class: 'nowrap' }, d.jobId ?? '–'),
        h('td', {}, d.reason),
        h('td', { class: 'num' }, d.estimate !== undefined ? formatBytes(d.estimate) : '–'),
        h('td', { class: 'num' }, d.measured !== undefined ? formatBytes(d.measured) : d.measuredFree !== undefined ? `${formatBytes(d.measuredFree)} free` : '–'),
      ),
    ),
  );
}

/** Refills the job filter's options, keeping the current choice. */
export function renderJobFilter(select: HTMLElement & { value: string }, decisions: readonly DecisionEvent[], current: string): string {
  const ids = jobIdsOf(decisions);
  // A filtered job whose decisions aged out of the history stays selectable, so the filter never jumps.
  const wanted = current;
  const options = [h('vscode-option', { value: '' }, 'All jobs'), ...ids.map((id) => h('vscode-option', { value: id }, id))];
  if (wanted && !ids.includes(wanted)) options.push(h('vscode-option', { value: wanted }, wanted));
  const signature = options.map((o) => o.getAttribute('value')).join('\n');
  if (select.dataset.signature !== signature) {
    select.dataset.signature = signature;
    replaceChildren(select, ...options);
  }
  if (select.value !== wanted) select.value = wanted;
  return wanted;
}
