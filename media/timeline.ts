/** Memory over the last minutes per device, as an inline SVG built with DOM APIs. */

import type { MemorySample } from './panelMessages';
import { h, replaceChildren, svg } from './dom';
import { timelineSeries } from './panelModel';
import { formatBytes } from '../src/format';

const WIDTH = 600;
const HEIGHT = 120;

export function renderTimeline(container: HTMLElement, samples: readonly MemorySample[], margin: number, windowMs: number, now: number): void {
  const last = samples[samples.length - 1];
  if (!last) {
    replaceChildren(container, h('p', { class: 'muted' }, 'No readings yet.'));
    return;
  }
  const charts = last.devices.map((device, index) => {
    const series = timelineSeries(samples, device.id, now, windowMs, WIDTH, HEIGHT, margin);
    const chart = svg(
      'svg',
      { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, preserveAspectRatio: 'none', class: 'timeline', role: 'img', 'aria-label': `${device.id}: now ${formatBytes(device.used)} used of ${formatBytes(device.total)}, ${formatBytes(device.ours)} held by VRAM Relay` },
      svg('line', { x1: 0, x2: WIDTH, y1: series.marginY, y2: series.marginY, class: 'margin-line' }),
      series.ours ? svg('polygon', { points: series.ours, class: 'ours-area' }) : null,
      series.used ? svg('polyline', { points: series.used, class: `used-line used-line-${index % 4}` }) : null,
    );
    return h(
      'figure',
      { class: 'timeline-figure', 'data-device-id': device.id },
      chart,
      h('figcaption', { class: 'axis' }, h('span', {}, `−${Math.round(windowMs / 60000)} min`), h('span', {}, `${device.id}: used (line), held by VRAM Relay (area), safety margin (dashed)`), h('span', {}, 'now')),
    );
  });
  replaceChildren(container, ...charts);
}
