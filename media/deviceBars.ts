/** The stacked bar per device, with a legend table that screen readers and keyboards can reach. */

import type { SidecarSnapshot } from '../sidecar/protocol';
import { formatBytes } from '../src/format';
import { h, replaceChildren } from './dom';
import { barSegments } from './panelModel';

export function renderDeviceBars(container: HTMLElement, snapshot: SidecarSnapshot | undefined): void {
  if (!snapshot) {
    replaceChildren(container, h('p', { class: 'muted' }, 'Waiting for the first reading from the sidecar…'));
    return;
  }
  const demo = snapshot.deviceSource === 'simulated';
  const devices = snapshot.devices.map((device) => {
    const segments = barSegments(snapshot, device.id);
    const free = snapshot.effectiveFree[device.id];
    const figures = `${formatBytes(device.used)} used of ${formatBytes(device.total)}${free !== undefined ? ` · effective free ${formatBytes(free)}` : ''}`;
    const summary = segments.map((s) => `${s.label} ${formatBytes(s.bytes)}`).join(', ');
    const bar = h('div', { class: 'bar', role: 'img', tabindex: 0, 'aria-label': `${device.name}: ${summary}`, 'data-testid': 'device-bar' });
    for (const s of segments) {
      const seg = h('div', { class: `seg seg-${s.kind}`, title: `${s.label}: ${formatBytes(s.bytes)}`, 'data-kind': s.kind });
      // CSSOM property writes are allowed under the CSP; style attributes are not.
      seg.style.width = `${(s.fraction * 100).toFixed(2)}%`;
      bar.append(seg);
    }
    const legend = h(
      'table',
      { class: 'legend', 'aria-label': `Breakdown of ${device.name}` },
      h('tbody', {}, ...segments.map((s) => h('tr', { 'data-kind': s.kind }, h('td', {}, h('span', { class: `swatch seg-${s.kind}`, 'aria-hidden': 'true' })), h('th', { scope: 'row' }, s.label), h('td', { class: 'num' }, formatBytes(s.bytes))))),
    );
    return h(
      'div',
      { class: 'device', 'data-device-id': device.id },
      h('div', { class: 'device-head' }, h('h3', {}, device.name, demo ? h('span', { class: 'badge', title: 'Simulated device: no real memory is used' }, 'demo') : null), h('span', { class: 'figures', 'data-testid': 'device-figures' }, figures)),
      bar,
      legend,
    );
  });
  if (devices.length === 0) devices.push(h('div', {}, h('p', { class: 'muted' }, 'No device reported.')));
  replaceChildren(container, ...devices);
}
