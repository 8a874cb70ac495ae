/**
 * AMD devices through rocm-smi (`--showmeminfo vram`, JSON or CSV), and the amdgpu driver's sysfs files while
 * watching: rocm-smi is a Python program whose start-up alone costs more CPU per call than the sidecar may spend
 * idle, whereas the sysfs files it reads itself are a plain read.
 */

import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Bytes, DeviceSnapshot, Millis } from '../core/types';
import { PollingProbe } from './pollingProbe';
import { firstLine, runTool } from './runTool';

export const ROCM_SMI_ARGS = ['--showmeminfo', 'vram', '--showproductname', '--json'];

export interface AmdGpuReading {
  index: number;
  name: string;
  total: Bytes;
  used: Bytes;
}

const TOTAL_KEY = 'VRAM Total Memory (B)';
const USED_KEY = 'VRAM Total Used Memory (B)';
/** rocm-smi versions disagree on the capitalisation of the name keys and on which one holds a name. */
const NAME_KEYS = ['Card Series', 'Card series', 'Device Name', 'Card Model', 'Card model'];

function byteField(value: unknown): Bytes | null {
  const text = String(value ?? '').trim();
  // A figure beyond 2^53 bytes is no real card's: a garbled field, not a size.
  return /^\d+$/.test(text) && Number.isSafeInteger(Number(text)) ? Number(text) : null;
}

function cardName(fields: Record<string, unknown>): string {
  for (const key of NAME_KEYS) {
    const value = String(fields[key] ?? '').trim();
    if (value && value !== 'N/A' && !/^0x[0-9a-f]+$/i.test(value)) return value;
  }
  return '';
}

function reading(card: string, fields: Record<string, unknown>): AmdGpuReading | null {
  const match = /^card(\d{1,9})$/.exec(card);
  const total = byteField(fields[TOTAL_KEY]);
  const used = byteField(fields[USED_KEY]);
  if (!match || total === null || total <= 0 || used === null) return null;
  return { index: Number(match[1]), name: cardName(fields), total, used };
}

/**
 * `rocm-smi --showmeminfo vram [--showproductname] --json`: `{"card0": {"VRAM Total Memory (B)": "2145...",
 * "VRAM Total Used Memory (B)": "2785...", "Card Series": "Radeon RX 7900 XT", ...}, "system": {...}}`.
 * Warnings printed before the JSON are skipped.
 */
export function parseRocmSmiJson(text: string): AmdGpuReading[] {
  const start = text.indexOf('{');
  const end = text.lastIndexOf('}');
  if (start < 0 || end < start) return [];
  let parsed: unknown;
  try {
    parsed = JSON.parse(text.slice(start, end + 1));
  } catch {
    return [];
  }
  if (!parsed || typeof parsed !== 'object') return [];
  const readings: AmdGpuReading[] = [];
  for (const [card, fields] of Object.entries(parsed as Record<string, unknown>)) {
    if (!fields || typeof fields !== 'object') continue;
    const r = reading(card, fields as Record<string, unknown>);
    if (r) readings.push(r);
  }
  return readings.sort((a, b) => a.index - b.index);
}

/**
 * `rocm-smi --showmeminfo vram [--showproductname] --csv`: a `device,...` header naming the columns, then one
 * `card0,...` row per GPU. rocm-smi drops commas inside values, so a plain split is faithful.
 */
export function parseRocmSmiCsv(text: string): AmdGpuReading[] {
  const lines = text.split(/\r?\n/).map((l) => l.trim());
  const headerAt = lines.findIndex((l) => l.startsWith('device,'));
  if (headerAt < 0) return [];
  const header = lines[headerAt].split(',');
  const readings: AmdGpuReading[] = [];
  for (const line of lines.slice(headerAt + 1)) {
    if (!/^card\d+,/.test(line)) continue;
    const values = line.split(',');
    const fields = Object.fromEntries(header.map((key, i) => [key, values[i]]));
    const r = reading(values[0], fields);
    if (r) readings.push(r);
  }
  return readings.sort((a, b) => a.index - b.index);
}

/** Either shape: JSON when the output holds an object, CSV otherwise. */
export function parseRocmSmiOutput(text: string): AmdGpuReading[] {
  return text.includes('{') ? parseRocmSmiJson(text) : parseRocmSmiCsv(text);
}

export function amdSnapshot(r: AmdGpuReading, at: Millis): DeviceSnapshot {
  return {
    id: `amd:${r.index}`,
    name: r.name || `AMD GPU ${r.index}`,
    kind: 'amd',
    total: r.total,
    used: r.used,
    free: Math.max(0, r.total - r.used),
    unified: false,
    at,
  };
}

export interface AmdSysfsCard {
  card: number;
  total: Bytes;
  used: Bytes;
}

/** VRAM figures of every AMD card (vendor 0x1002) from `<root>/cardN/device/mem_info_vram_{total,used}`. */
export function readAmdSysfs(root = '/sys/class/drm'): AmdSysfsCard[] {
  let entries: string[];
  try {
    entries = readdirSync(root);
  } catch {
    return [];
  }
  const cards: AmdSysfsCard[] = [];
  for (const entry of entries) {
    const match = /^card(\d+)$/.exec(entry);
    if (!match) continue;
    const device = join(root, entry, 'device');
    try {
      if (readFileSync(join(device, 'vendor'), 'utf8').trim().toLowerCase() !== '0x1002') continue;
      const total = Number(readFileSync(join(device, 'mem_info_vram_total'), 'utf8').trim());
      const used = Number(readFileSync(join(device, 'mem_info_vram_used'), 'utf8').trim());
      if (Number.isSafeInteger(total) && total > 0 && Number.isSafeInteger(used) && used >= 0) cards.push({ card: Number(match[1]), total, used });
    } catch {
      // Not an amdgpu card with VRAM files (a connector, another driver).
    }
  }
  return cards.sort((a, b) => a.card - b.card);
}

export interface AmdProbeOptions {
  command?: string;
  env?: NodeJS.ProcessEnv;
  timeoutMs?: Millis;
  /** Where the DRM cards are listed; null disables the sysfs path. */
  sysfsRoot?: string | null;
  now?: () => Millis;
}

export class AmdProbe extends PollingProbe {
  readonly kind = 'amd' as const;
  private readonly command: string;
  private known?: AmdGpuReading[];

  constructor(private readonly options: AmdProbeOptions = {}) {
    super();
    this.command = options.command ?? 'rocm-smi';
  }

  async sample(): Promise<DeviceSnapshot[]> {
    const result = await runTool(this.command, ROCM_SMI_ARGS, { timeoutMs: this.options.timeoutMs ?? 5000, env: this.options.env });
    if (!result.ok) throw new Error(result.message);
    const readings = parseRocmSmiOutput(result.stdout);
    if (readings.length === 0) {
      const said = firstLine(result.stdout) || firstLine(result.stderr);
      throw new Error(`${this.command} reported no GPU with VRAM figures${said ? `: ${said}` : ''}`);
    }
    this.known = readings;
    const at = this.now();
    return readings.map((r) => amdSnapshot(r, at));
  }

  /**
   * Reads sysfs when it lists the same cards rocm-smi did (same count, same totals, in order), keeping
   * rocm-smi's indices and names; asks rocm-smi otherwise.
   */
  protected override async watchSample(): Promise<DeviceSnapshot[]> {
    const root = this.options.sysfsRoot === undefined ? '/sys/class/drm' : this.options.sysfsRoot;
    if (!this.known || root === null) return this.sample();
    const cards = readAmdSysfs(root);
    const known = this.known;
    const matches = cards.length === known.length && cards.every((c, i) => c.total === known[i].total);
    if (!matches) return this.sample();
    const at = this.now();
    return cards.map((c, i) => amdSnapshot({ ...known[i], used: c.used }, at));
  }

  protected override minIntervalMs(): Millis {
    return 250;
  }

  private now(): Millis {
    return (this.options.now ?? Date.now)();
  }
}
