/**
 * The workload benchmark's output: a console table, docs/bench/workload.md and a hand-written SVG chart (grouped
 * bars of total time and of LLM wait p95 per budget and policy, failures marked). Output depends on the results
 * only (no dates, no machine names), so a rerun with the same seed gives the same files.
 */

import { GiB, type Bytes } from '../../sidecar/core/types';
import { POLICY_NAMES, POLICY_ORDER, TARGET_TEXT, minutes, seconds, type Summary, type TargetCheck } from './metrics';
import type { PolicyId } from './session';
import type { Trace } from './trace';
import type { SdBuild } from './truth';

export interface BudgetResult {
  trace: Trace;
  summaries: Summary[];
  checks: TargetCheck[];
}

export interface SeedVerdicts {
  seed: number;
  checks: TargetCheck[];
}

export interface BenchResult {
  seed: number;
  sdBuild: SdBuild;
  /** The CPU's LLM speed as a share of the assumed figures. */
  cpuSpeed: number;
  budgets: BudgetResult[];
  /** The same sessions with an older sd.cpp build (gray images instead of errors). */
  olderBuild?: BudgetResult[];
  /** Target verdicts for other seeds. */
  otherSeeds: SeedVerdicts[];
}

const gb = (bytes: Bytes) => `${(bytes / GiB).toFixed(bytes % GiB === 0 ? 0 : 1)} GB`;
const gb2 = (bytes: Bytes) => (bytes / GiB).toFixed(2);

function describeTrace(trace: Trace): string {
  const images = trace.jobs.filter((j) => j.kind === 'image');
  const resized = images.filter((j) => j.kind === 'image' && j.asked).length;
  const pictures = images.reduce((sum, j) => sum + (j.kind === 'image' ? j.batch : 0), 0);
  return (
    `${images.length} image jobs (${pictures} images), ${trace.jobs.length - images.length} LLM requests, ` +
    `Flux as ${trace.models.flux.label}, other programs up to ${gb2(trace.otherUsePeak)} GB` +
    (resized ? `, ${resized} image size${resized === 1 ? '' : 's'} stepped down to fit the card` : '')
  );
}

const COLUMNS = ['Policy', 'Failed img', 'Gray img', 'Lost jobs', 'Total time', 'LLM wait p50', 'LLM wait p95', 'Completions shown', 'LLM reloads', 'Peak VRAM / budget'];

function row(s: Summary): string[] {
  return [
    POLICY_NAMES[s.policy],
    String(s.failedImages),
    String(s.blankImages),
    String(s.lostJobs),
    minutes(s.makespanMs),
    seconds(s.waitP50Ms),
    seconds(s.waitP95Ms),
    `${s.completionsShown} / ${s.completions}`,
    String(s.llmReloads),
    `${gb2(s.peakUsed)} / ${gb2(s.budget)} GB`,
  ];
}

function ordered(summaries: Summary[]): Summary[] {
  return POLICY_ORDER.map((p) => summaries.find((s) => s.policy === p)).filter((s): s is Summary => !!s);
}

// ---------------------------------------------------------------------------------------------------------------
// Console

export function consoleReport(result: BenchResult): string {
  const lines: string[] = [];
  for (const b of result.budgets) {
    lines.push('', `${gb(b.trace.budget)} card: ${describeTrace(b.trace)}`);
    lines.push(...aligned([COLUMNS, ...ordered(b.summaries).map(row)]));
    for (const s of ordered(b.summaries)) for (const note of s.notes) lines.push(`  ${POLICY_NAMES[s.policy]}: ${note}`);
    for (const problem of relayProblems(b)) lines.push(`  VRAM Relay: ${problem}`);
  }
  lines.push('', 'Targets for VRAM Relay:');
  for (const b of result.budgets) {
    for (const c of b.checks) lines.push(`  ${c.pass ? 'PASS' : 'MISS'}  ${gb(c.budget).padStart(5)}  ${TARGET_TEXT[c.target]}: ${c.detail}${missNote(c)}`);
  }
  if (result.olderBuild) {
    lines.push('', 'Older sd.cpp build (a failed VAE allocation writes a gray image): failed / gray images per policy');
    lines.push(...aligned(olderBuildRows(result.olderBuild)));
  }
  if (result.otherSeeds.length > 0) {
    lines.push('', 'Targets on other seeds (PASS count of 4 budgets):');
    for (const s of result.otherSeeds) lines.push(`  seed ${s.seed}: ${seedVerdict(s)}`);
  }
  return lines.join('\n');
}

/** Rows as text columns: the first left-aligned, the others right-aligned. */
function aligned(rows: string[][]): string[] {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows.map((r) => r.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]) : cell.padStart(widths[i]))).join('  '));
}

function relayProblems(b: BudgetResult): string[] {
  return b.summaries.find((s) => s.policy === 'relay')?.problems ?? [];
}

function missNote(c: TargetCheck): string {
  const co = c.coexistence;
  if (c.pass || c.target !== 'lessWaiting' || !co) return '';
  return ` [${co.apart} of ${co.imageJobs} image jobs (${Math.round(co.apartTimeShare * 100)}% of the image time) cannot run beside the hot LLM on this card at all: requests that come during them wait for the GPU or are answered on the CPU]`;
}

function seedVerdict(s: SeedVerdicts): string {
  const targets: TargetCheck['target'][] = ['noFailures', 'nearOracle', 'lessWaiting'];
  return targets
    .map((t) => {
      const checks = s.checks.filter((c) => c.target === t);
      const missed = checks.filter((c) => !c.pass).map((c) => gb(c.budget) + (c.coexistence ? ` [${Math.round(c.coexistence.apartTimeShare * 100)}% of image time apart from the hot LLM]` : ''));
      return `${t} ${checks.length - missed.length}/${checks.length}${missed.length ? ` (miss at ${missed.join(', ')})` : ''}`;
    })
    .join('; ');
}

function olderBuildRows(results: BudgetResult[]): string[][] {
  const header = ['Policy', ...results.map((b) => gb(b.trace.budget))];
  const rows = POLICY_ORDER.map((policy) => [
    POLICY_NAMES[policy],
    ...results.map((b) => {
      const s = b.summaries.find((x) => x.policy === policy);
      if (!s) return '-';
      return `${s.failedImages} / ${s.blankImages}${policy === 'relay' ? ` (${s.retries} retried)` : ''}`;
    }),
  ]);
  return [header, ...rows];
}

// ---------------------------------------------------------------------------------------------------------------
// Markdown

const POLICY_TEXT: Record<PolicyId, string> = {
  relay:
    'The real arbiter (`sidecar/core/arbiter.ts`) with its planner and the real estimators, learning from the buffers the workers log (calibration), with the default settings: 512 MiB margin, LLM context dropped after 5 idle minutes and weights after 30, interactive LLM requests before image jobs, and a CPU copy of the LLM (no GPU layers) that answers a request while an image job holds the GPU when that is expected to end sooner than waiting, counting the requests that would wait for the copy meanwhile (one request at a time; the CPU speeds of the true cost model are assumed, and CPU contention with sd.cpp stages on the CPU is not modelled). Its request estimates leave out the prompt prefix each LLM context still holds. On the CPU copy a completion is cut to its last lines before the cursor (2048-2560 characters, from a start that stays put while the user types) and its first lines after it (256 characters), as the service does (`sidecar/core/cpuLane.ts`): it evaluates less, and sees less of the file.',
  bothResident:
    'llama-server keeps the LLM loaded all session (every layer on the GPU); sd-cli `--auto-fit` runs each image in what the driver says is free. Nothing waits for anything; what does not fit fails.',
  unloadPerImage:
    'The common fix: one GPU user at a time. The LLM server is stopped before each image job and started again (model reloaded) at the next LLM request; queued LLM requests go before queued images.',
  staticReservation:
    'The LLM gets the card minus a fixed reservation for the image model (KoboldCpp: SDXL 9 GB, SD1.5 4.25 GB; Flux, not published, its weights + 2 GB) as GPU layers, the rest on the CPU, all session. Images run sd-cli `--auto-fit` in what is left.',
  keepAlive:
    'The LLM is loaded when a request comes, with as many GPU layers as fit in what is free minus Ollama\'s 457 MiB reserve, and unloaded after 5 minutes without requests. Images run sd-cli `--auto-fit` in what is left.',
  oracle:
    'Knows the future and the exact true sizes: per image job, the fastest placement and LLM state that fit the true peaks against the most other programs will hold during the job, no margin; the LLM yields only when needed and reloads just in time for the next request. A clairvoyant greedy reference for time, not a proven optimum.',
};

/** A Markdown table; `numeric` columns are right-aligned (default: all but the first). */
function mdTable(rows: string[][], numeric: (column: number) => boolean = (i) => i > 0): string[] {
  const [header, ...body] = rows;
  return [`| ${header.join(' | ')} |`, `|${header.map((_, i) => (numeric(i) ? ' ---: ' : ' --- ')).join('|')}|`, ...body.map((r) => `| ${r.join(' | ')} |`)];
}

export function markdownReport(result: BenchResult, command: string, svgName: string): string {
  const out: string[] = [];
  out.push('# Workload benchmark: VRAM Relay against the usual policies', '');
  out.push(
    `Seed ${result.seed}, sd.cpp build: ${result.sdBuild}${result.cpuSpeed !== 1 ? `, CPU at ${result.cpuSpeed} times the assumed LLM speed` : ''}. Rerun with \`${command}\` (a few seconds; the same seed gives the same figures).`,
    '',
    `![Total time and LLM wait p95 per budget and policy](${svgName})`,
    '',
  );
  out.push('## What was simulated', '');
  out.push(
    '- A 40-minute session of someone who codes and makes images on one GPU (`bench/workload/trace.ts`): code completions while typing, questions about the code, prompt enhancements before most image jobs; image jobs with SD1.5, SDXL and Flux-size models from 512x512 to 2048x2048, batches of 1 to 4; a 7B LLM (Q4_K_M, 8k context, f16 KV cache); other programs\' VRAM that comes and goes (never more than 15% of the card).',
    '- Every policy runs the same trace on the same simulated device (`sidecar/devices/simulatedDevice.ts`, with a driver whose free figure lags 200 ms) with the same true cost model (`bench/workload/truth.ts`): the stand-in workers allocate the true size of every stage, take its true time (two jobs sharing the GPU each run at 60% speed), and fail as the engines do when an allocation does not fit (llama.cpp aborts; sd.cpp reports the failed buffer, or on an older build writes a gray image).',
    '- The true sizes come from memory-facts.md (e.g. VAE decode 6656 B/px, 7680 on the older build; ComfyUI activation factors; KV cache by formula), off from the figures VRAM Relay estimates by a seeded bias per model (a few %) and a 1% jitter per job, so its margin and its recovery are exercised.',
    '- Completions are fill-in-the-middle requests as the editor\'s provider sends them (`src/llmTasks.ts`): the file from a prefix window that starts on a fixed grid up to the cursor, then 375 tokens of suffix. Within a typing burst the user types 2-6 characters a second at one place and moves elsewhere before 15% of the completions. Every LLM engine keeps the prompt it last evaluated (llama.cpp\'s sequence, llama-server\'s prompt cache) and evaluates only what follows the part the next prompt shares with it, so two completions at one place cost the edit, the suffix and the answer; a context that is dropped or a server that is stopped holds nothing. Questions and prompt enhancements share nothing.',
    '- As in VS Code, a completion not yet answered when the next one is asked (the user typed on or moved) is cancelled, whatever the policy: a queued one is dropped, a running one stops, but only once its prompt is evaluated (node-llama-cpp and llama.cpp look at a cancel between generated tokens), and the context keeps that prompt.',
    '- Time is virtual (a discrete-event clock): the hour of work takes a fraction of a second per policy.',
    '',
  );
  out.push(
    'How to read it: total time is the end of the last job; the last image jobs arrive near the 40th minute, so it measures how fast each policy clears the final backlog, and a policy whose images fail can finish early. The oracle minimises time, not waiting: it unloads the LLM whenever that makes an image faster, so its LLM waits can be longer than VRAM Relay\'s. "Keep-alive" equals "both resident" when the LLM is never idle for 5 minutes.',
    '',
  );
  out.push('Columns: failed and gray images (what the user got instead of an image), lost jobs (LLM requests that failed and jobs that never ended), total time (the end of the last job), LLM wait (the time a request took beyond its own compute with all layers on the GPU, the GPU to itself and the context holding the request before\'s prompt: queueing, reloading, sharing, layers on the CPU, a prompt evaluated again; a completion the user typed past waits until the next suggestion shown), completions shown (answered before the user typed on; the others were cancelled), LLM reloads (weight loads onto the GPU after the start), peak VRAM (ours and other programs\', against the card).', '');
  for (const b of result.budgets) {
    out.push(`## ${gb(b.trace.budget)} card`, '', describeTrace(b.trace) + '.', '');
    out.push(...mdTable([COLUMNS, ...ordered(b.summaries).map(row)]), '');
    const notes = [
      ...ordered(b.summaries).flatMap((s) => s.notes.map((n) => `- ${POLICY_NAMES[s.policy]}: ${n}`)),
      ...relayProblems(b).map((p) => `- VRAM Relay did not deliver ${p.replace(/^(\S+) (\S+): /, '$1 ($2): ')}`),
    ];
    if (notes.length) out.push(...notes, '');
  }
  out.push('## Targets', '');
  out.push(
    'For the waiting target, the bracket says how much of the image work could not run beside the hot LLM on that card even with true sizes, the leanest placement and no margin: requests that arrive then cannot use the GPU LLM whatever the policy: they wait, or VRAM Relay answers them on its CPU copy of the LLM, one at a time and several times slower. The rest of the waiting is the policy\'s own (for VRAM Relay: its margin and estimates, and plans that unload the LLM to save a few seconds of image time).',
    '',
  );
  out.push(
    ...mdTable([
      ['Budget', 'Target', 'Result', 'Figures'],
      ...result.budgets.flatMap((b) => b.checks.map((c) => [gb(c.budget), TARGET_TEXT[c.target], c.pass ? 'PASS' : '**MISS**', c.detail + missNote(c)])),
    ], () => false),
    '',
  );
  if (result.otherSeeds.length > 0) {
    out.push('Other seeds, same targets (passes out of the 4 budgets):', '');
    for (const s of result.otherSeeds) out.push(`- seed ${s.seed}: ${seedVerdict(s)}`);
    out.push('');
  }
  if (result.olderBuild) {
    out.push('## Older sd.cpp build', '', 'The same sessions with a build whose failed VAE allocation still reports success and writes a gray image (VAE buffer 7680 B/px). Failed / gray images per policy; VRAM Relay recognises the gray image and reruns the seed with a safer plan:', '');
    out.push(...mdTable(olderBuildRows(result.olderBuild)), '');
    const problems = result.olderBuild.flatMap((b) => relayProblems(b).map((p) => `- ${gb(b.trace.budget)}: VRAM Relay did not deliver ${p.replace(/^(\S+) (\S+): /, '$1 ($2): ')}`));
    if (problems.length) out.push(...problems, '');
  }
  out.push('## The policies', '');
  for (const p of POLICY_ORDER) out.push(`- **${POLICY_NAMES[p]}**: ${POLICY_TEXT[p]}`);
  out.push(
    '',
    'sd-cli `--auto-fit` (memory-facts.md): reserves diffusion weights + 2 GB, text encoder + 2 GB, VAE + 1 GB and 0.5 GB of margin against the free memory at start, puts what does not fit on the CPU (offloaded diffusion weights), and retries a failed VAE decode once, tiled. Flash attention is on for the usual policies.',
    '',
  );
  return out.join('\n');
}

// ---------------------------------------------------------------------------------------------------------------
// SVG

const COLORS: Record<PolicyId, string> = {
  relay: '#1f77b4',
  bothResident: '#ff7f0e',
  unloadPerImage: '#2ca02c',
  staticReservation: '#9467bd',
  keepAlive: '#8c564b',
  oracle: '#7f7f7f',
};
const FAIL = '#d62728';
const SHORT_NAMES: Record<PolicyId, string> = {
  relay: 'VRAM Relay',
  bothResident: 'Both resident',
  unloadPerImage: 'Unload per image',
  staticReservation: 'Static reservation',
  keepAlive: 'Keep-alive 5 min',
  oracle: 'Oracle',
};

function esc(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

export function svgChart(result: BenchResult): string {
  const width = 980;
  const panelHeight = 250;
  const left = 70;
  const right = 20;
  const top1 = 100;
  const top2 = top1 + panelHeight + 70;
  const height = top2 + panelHeight + 60;
  const budgets = result.budgets;
  const policies = POLICY_ORDER;
  const groupWidth = (width - left - right) / budgets.length;
  const barWidth = (groupWidth * 0.8) / policies.length;
  const parts: string[] = [];
  const text = (x: number, y: number, s: string, attrs = '') => parts.push(`<text x="${x.toFixed(1)}" y="${y.toFixed(1)}" ${attrs}>${esc(s)}</text>`);

  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`);
  parts.push(`<rect width="${width}" height="${height}" fill="#ffffff"/>`);
  text(left, 24, `VRAM Relay workload benchmark, seed ${result.seed}: total time and LLM wait (p95) per card and policy`, 'font-size="15" font-weight="bold"');
  // Legend
  policies.forEach((p, i) => {
    const x = left + i * 148;
    parts.push(`<rect x="${x}" y="40" width="12" height="12" fill="${COLORS[p]}"/>`);
    text(x + 16, 50, SHORT_NAMES[p], 'font-size="11"');
  });
  text(left, 70, '×N above a bar (red outline): N failed, gray or lost jobs', `font-size="11" fill="${FAIL}"`);

  const panel = (top: number, title: string, value: (s: Summary) => number, scale: { ticks: number[]; y: (v: number) => number; label: (v: number) => string }) => {
    text(left, top - 10, title, 'font-size="13" font-weight="bold"');
    for (const tick of scale.ticks) {
      const y = top + panelHeight - scale.y(tick);
      parts.push(`<line x1="${left}" y1="${y.toFixed(1)}" x2="${width - right}" y2="${y.toFixed(1)}" stroke="#e0e0e0"/>`);
      text(left - 6, y + 4, scale.label(tick), 'text-anchor="end" font-size="11"');
    }
    parts.push(`<line x1="${left}" y1="${top + panelHeight}" x2="${width - right}" y2="${top + panelHeight}" stroke="#333"/>`);
    budgets.forEach((b, g) => {
      const x0 = left + g * groupWidth + groupWidth * 0.1;
      text(x0 + (barWidth * policies.length) / 2, top + panelHeight + 16, gb(b.trace.budget), 'text-anchor="middle" font-size="12"');
      policies.forEach((p, i) => {
        const s = b.summaries.find((x) => x.policy === p);
        if (!s) return;
        const h = Math.max(1, scale.y(value(s)));
        const x = x0 + i * barWidth;
        const failures = s.failedImages + s.blankImages + s.lostJobs;
        parts.push(
          `<rect x="${x.toFixed(1)}" y="${(top + panelHeight - h).toFixed(1)}" width="${(barWidth - 2).toFixed(1)}" height="${h.toFixed(1)}" fill="${COLORS[p]}"${failures ? ` stroke="${FAIL}" stroke-width="2"` : ''}><title>${esc(`${POLICY_NAMES[p]}, ${gb(b.trace.budget)}: ${scale.label(value(s))}${failures ? `, ${failures} failed/gray/lost` : ''}`)}</title></rect>`,
        );
        if (failures) text(x + (barWidth - 2) / 2, top + panelHeight - h - 4, `×${failures}`, `text-anchor="middle" font-size="10" fill="${FAIL}"`);
      });
    });
  };

  const all = budgets.flatMap((b) => b.summaries);
  const maxMinutes = Math.max(1, ...all.map((s) => s.makespanMs / 60_000));
  const topMinutes = Math.ceil(maxMinutes / 10) * 10;
  const minuteTicks = Array.from({ length: topMinutes / 10 + 1 }, (_, i) => i * 10);
  panel(top1, 'Total time (minutes, lower is better)', (s) => s.makespanMs / 60_000, {
    ticks: minuteTicks,
    y: (v) => ((panelHeight - 14) * v) / topMinutes,
    label: (v) => `${Math.round(v)}`,
  });

  // LLM wait on a log scale: from a tenth of a second to the longest wait.
  const maxWait = Math.max(1, ...all.map((s) => s.waitP95Ms / 1000));
  const decades = Math.max(1, Math.ceil(Math.log10(maxWait)) + 1);
  const waitTicks = Array.from({ length: decades + 1 }, (_, i) => 10 ** (i - 1));
  const logY = (v: number) => ((panelHeight - 14) * (Math.log10(Math.max(0.1, v)) + 1)) / decades;
  panel(top2, 'LLM wait p95 (seconds, log scale, lower is better)', (s) => s.waitP95Ms / 1000, {
    ticks: waitTicks,
    y: logY,
    label: (v) => (v < 1 ? v.toFixed(1) : String(Math.round(v))),
  });
  text(left, height - 14, 'Same seeded trace, same simulated device and true cost model for every policy. See workload.md for the tables.', 'font-size="11" fill="#555"');
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}
