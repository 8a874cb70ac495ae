/**
 * NVIDIA devices through nvidia-smi.
 *
 * Monitoring keeps ONE nvidia-smi running in loop mode (`-lms N`) and reads its CSV line by line: starting a
 * process per poll costs far more CPU than the sidecar's idle budget. Per-process use comes from a separate
 * `--query-compute-apps` run, sampled less often since it changes only when programs start or stop using the GPU.
 * A stream that dies or goes silent is restarted with a growing delay; a tool that never streams a line falls
 * back to one query per interval.
 */

import { createInterface } from 'node:readline';
import type { Options, ResultPromise } from 'execa';
import type { Bytes, DeviceProbe, DeviceSnapshot, GpuProcessUse, Millis } from '../core/types';
import { MiB } from '../core/types';
import { firstLine, runTool, startTool } from './runTool';

export const NVIDIA_GPU_QUERY = 'index,uuid,name,memory.total,memory.used,memory.free';
export const NVIDIA_APPS_QUERY = 'gpu_uuid,pid,process_name,used_memory';
const CSV_FORMAT = '--format=csv,noheader,nounits';

export function nvidiaGpuQueryArgs(loopMs?: number): string[] {
  const args = [`--query-gpu=${NVIDIA_GPU_QUERY}`, CSV_FORMAT];
  if (loopMs !== undefined) args.push('-lms', String(Math.max(1, Math.round(loopMs))));
  return args;
}

export function nvidiaAppsQueryArgs(): string[] {
  return [`--query-compute-apps=${NVIDIA_APPS_QUERY}`, CSV_FORMAT];
}

// ---------------------------------------------------------------------------------------------------------------
// Parsers (pure)

export interface NvidiaGpuReading {
  index: number;
  uuid: string;
  name: string;
  total: Bytes;
  used: Bytes;
  free: Bytes;
}

export interface NvidiaComputeApp {
  gpuUuid: string;
  pid: number;
  name: string;
  /** Null where the driver does not report it (`[N/A]`, e.g. Windows in WDDM mode). */
  used: Bytes | null;
}

/** A MiB figure as nvidia-smi prints it (`24576`, `24576 MiB`), or null for `[N/A]`, `[Not Supported]` and the like. */
function mibField(field: string): Bytes | null {
  const match = /^(\d+(?:\.\d+)?)(?:\s*MiB)?$/.exec(field.trim());
  if (!match) return null;
  // A figure no GPU has (a garbled line) counts as not reported rather than as a huge or infinite size.
  const bytes = Math.round(Number(match[1]) * MiB);
  return Number.isSafeInteger(bytes) ? bytes : null;
}

/**
 * One line of `--query-gpu=index,uuid,name,memory.total,memory.used,memory.free --format=csv,noheader,nounits`,
 * e.g. `0, GPU-5e4b..., NVIDIA GeForce RTX 3090, 24576, 1234, 23012`. Null for anything else (a header, an error
 * message, a GPU whose memory figures are not reported).
 */
export function parseNvidiaGpuLine(line: string): NvidiaGpuReading | null {
  const fields = line.split(',').map((f) => f.trim());
  if (fields.length < 6) return null;
  const [indexField, uuid] = fields;
  // Names have no commas today; should one appear, the figures are still the last three fields.
  const name = fields.slice(2, -3).join(', ');
  const [total, reportedUsed, reportedFree] = fields.slice(-3).map(mibField);
  if (!/^\d{1,9}$/.test(indexField) || !uuid || !name || total === null || total <= 0) return null;
  if (reportedUsed === null && reportedFree === null) return null;
  // memory.used + memory.free is less than memory.total on recent drivers (the rest is reserved): keep both
  // figures as reported and derive one only when it is missing.
  const free = reportedFree ?? Math.max(0, total - reportedUsed!);
  const used = reportedUsed ?? Math.max(0, total - free);
  return { index: Number(indexField), uuid, name, total, used, free };
}

/** Every GPU reading in a block of output, skipping lines that are not readings. */
export function parseNvidiaGpuCsv(text: string): NvidiaGpuReading[] {
  const readings: NvidiaGpuReading[] = [];
  for (const line of text.split(/\r?\n/)) {
    const reading = parseNvidiaGpuLine(line);
    if (reading) readings.push(reading);
  }
  return readings;
}

/**
 * Output of `--query-compute-apps=gpu_uuid,pid,process_name,used_memory --format=csv,noheader,nounits`,
 * e.g. `GPU-5e4b..., 4242, /usr/bin/python3, 1536`. No running process prints nothing.
 */
export function parseNvidiaComputeApps(text: string): NvidiaComputeApp[] {
  const apps: NvidiaComputeApp[] = [];
  for (const line of text.split(/\r?\n/)) {
    const fields = line.split(',').map((f) => f.trim());
    if (fields.length < 4) continue;
    const [gpuUuid, pidField] = fields;
    if (!/^\d{1,15}$/.test(pidField) || !gpuUuid) continue;
    // A process path may contain commas: the name is everything between the pid and the last field.
    apps.push({ gpuUuid, pid: Number(pidField), name: fields.slice(2, -1).join(', '), used: mibField(fields[fields.length - 1]) });
  }
  return apps;
}

/** Per-process use by GPU uuid; a GPU with a process whose use is not reported maps to undefined (unknown). */
export function processesByGpu(apps: NvidiaComputeApp[]): Map<string, GpuProcessUse[] | undefined> {
  const byGpu = new Map<string, GpuProcessUse[] | undefined>();
  for (const app of apps) {
    if (byGpu.has(app.gpuUuid) && byGpu.get(app.gpuUuid) === undefined) continue;
    if (app.used === null) {
      byGpu.set(app.gpuUuid, undefined);
      continue;
    }
    const list = byGpu.get(app.gpuUuid) ?? [];
    list.push({ pid: app.pid, name: app.name, used: app.used });
    byGpu.set(app.gpuUuid, list);
  }
  return byGpu;
}

/**
 * A snapshot of one reading. `processes`: the map from the last compute-apps sample, or undefined when none is
 * known; a GPU absent from a known map runs no compute process.
 */
export function nvidiaSnapshot(reading: NvidiaGpuReading, at: Millis, processes?: Map<string, GpuProcessUse[] | undefined>): DeviceSnapshot {
  const snapshot: DeviceSnapshot = {
    id: `nvidia:${reading.index}`,
    name: reading.name,
    kind: 'nvidia',
    total: reading.total,
    used: reading.used,
    free: reading.free,
    unified: false,
    at,
  };
  if (processes) {
    const listed = processes.has(reading.uuid) ? processes.get(reading.uuid) : [];
    if (listed) snapshot.processes = listed;
  }
  return snapshot;
}

// ---------------------------------------------------------------------------------------------------------------
// Probe

export interface NvidiaProbeOptions {
  /** The nvidia-smi executable (looked up on PATH). */
  command?: string;
  env?: NodeJS.ProcessEnv;
  /** Limit for one-shot queries. */
  timeoutMs?: Millis;
  /**
   * How often per-process use is sampled while watching (default: every 10 intervals, at least 10 s). Each sample
   * is a new nvidia-smi process (tens of ms of CPU, more when no persistence daemon keeps the driver loaded), and
   * the list only feeds other programs' use, which the driver's free figure also shows within one interval.
   */
  processIntervalMs?: Millis;
  /** A stream silent this long is restarted (default: 5 intervals, at least 5 s). */
  stallMs?: Millis;
  /** First delay before restarting a stream that died; doubles up to 30 s while it keeps dying. */
  restartDelayMs?: Millis;
  now?: () => Millis;
}

const MAX_RESTART_DELAY_MS = 30_000;
/** Runs in a row that end without a single reading before the stream is given up for one query per interval. */
const SILENT_RUNS_BEFORE_POLLING = 3;

export class NvidiaProbe implements DeviceProbe {
  readonly kind = 'nvidia' as const;
  private readonly watches = new Set<NvidiaWatch>();
  /** Aborts the one-shot queries still running when the probe is disposed. */
  private queries = new AbortController();
  private readonly settings: Required<Omit<NvidiaProbeOptions, 'env' | 'processIntervalMs' | 'stallMs'>> &
    Pick<NvidiaProbeOptions, 'env' | 'processIntervalMs' | 'stallMs'>;

  constructor(options: NvidiaProbeOptions = {}) {
    this.settings = {
      command: options.command ?? 'nvidia-smi',
      env: options.env,
      timeoutMs: options.timeoutMs ?? 5000,
      processIntervalMs: options.processIntervalMs,
      stallMs: options.stallMs,
      restartDelayMs: options.restartDelayMs ?? 1000,
      now: options.now ?? Date.now,
    };
  }

  async sample(): Promise<DeviceSnapshot[]> {
    const { command, env, timeoutMs, now } = this.settings;
    const [gpus, apps] = await Promise.all([
      runTool(command, nvidiaGpuQueryArgs(), { timeoutMs, env, signal: this.queries.signal }),
      runTool(command, nvidiaAppsQueryArgs(), { timeoutMs, env, signal: this.queries.signal }),
    ]);
    if (!gpus.ok) throw new Error(gpus.message);
    const readings = parseNvidiaGpuCsv(gpus.stdout);
    if (readings.length === 0) {
      throw new Error(`${command} reported no GPU with memory figures${firstLine(gpus.stdout) ? `: ${firstLine(gpus.stdout)}` : ''}`);
    }
    const processes = apps.ok ? processesByGpu(parseNvidiaComputeApps(apps.stdout)) : undefined;
    const at = now();
    return readings.map((r) => nvidiaSnapshot(r, at, processes));
  }

  watch(intervalMs: Millis, onSample: (snapshots: DeviceSnapshot[]) => void, onError?: (error: Error) => void): () => void {
    const interval = Math.max(50, intervalMs);
    const watch = new NvidiaWatch(
      {
        ...this.settings,
        intervalMs: interval,
        processIntervalMs: this.settings.processIntervalMs ?? Math.max(10_000, interval * 10),
        stallMs: this.settings.stallMs ?? Math.max(5000, interval * 5),
      },
      onSample,
      onError ?? (() => undefined),
      () => this.sample(),
      () => this.queries.signal,
    );
    this.watches.add(watch);
    watch.start();
    return () => {
      watch.stop();
      this.watches.delete(watch);
    };
  }

  dispose(): void {
    for (const watch of this.watches) watch.stop();
    this.watches.clear();
    this.queries.abort();
    this.queries = new AbortController();
  }
}

interface WatchSettings {
  command: string;
  env?: NodeJS.ProcessEnv;
  timeoutMs: Millis;
  intervalMs: Millis;
  processIntervalMs: Millis;
  stallMs: Millis;
  restartDelayMs: Millis;
  now: () => Millis;
}

/** One monitoring session: the nvidia-smi stream, its restarts, and the per-process sampling beside it. */
class NvidiaWatch {
  private stopped = false;
  private child?: ResultPromise<Options>;
  private batch = new Map<number, NvidiaGpuReading>();
  private expectedGpus = 0;
  private processes?: Map<string, GpuProcessUse[] | undefined>;
  private processProblem?: string;
  private processQueryRunning = false;
  private lastLineAt = 0;
  private readingsThisRun = 0;
  private garbageReported = false;
  private stalled = false;
  private silentRuns = 0;
  private restartDelay: Millis;
  private polling = false;
  private readonly timers = new Set<ReturnType<typeof setTimeout>>();

  constructor(
    private readonly s: WatchSettings,
    private readonly onSample: (snapshots: DeviceSnapshot[]) => void,
    private readonly onError: (error: Error) => void,
    private readonly sampleOnce: () => Promise<DeviceSnapshot[]>,
    private readonly querySignal: () => AbortSignal,
  ) {
    this.restartDelay = s.restartDelayMs;
  }

  start(): void {
    void this.refreshProcesses();
    this.every(this.s.processIntervalMs, () => void this.refreshProcesses());
    this.every(Math.max(25, Math.min(1000, this.s.stallMs / 4)), () => this.checkStall());
    void this.spawn();
  }

  stop(): void {
    this.stopped = true;
    for (const timer of this.timers) {
      clearInterval(timer);
      clearTimeout(timer);
    }
    this.timers.clear();
    this.child?.kill();
    this.child = undefined;
  }

  private every(ms: Millis, fn: () => void): void {
    this.timers.add(setInterval(fn, ms));
  }

  private after(ms: Millis, fn: () => void): void {
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      fn();
    }, ms);
    this.timers.add(timer);
  }

  private async spawn(): Promise<void> {
    if (this.stopped) return;
    this.readingsThisRun = 0;
    this.garbageReported = false;
    this.stalled = false;
    this.batch.clear();
    this.lastLineAt = this.s.now();
    let child: ResultPromise<Options>;
    try {
      child = (await startTool(this.s.command, nvidiaGpuQueryArgs(this.s.intervalMs), this.s.env)).subprocess;
    } catch (error) {
      this.ended(`could not start: ${(error as Error).message}`);
      return;
    }
    if (this.stopped) {
      child.kill();
      return;
    }
    this.child = child;
    let stderrTail = '';
    child.stderr?.on('data', (chunk: Buffer) => {
      stderrTail = (stderrTail + chunk.toString()).slice(-2000);
    });
    createInterface({ input: child.stdout! }).on('line', (line) => this.onLine(line));
    const result = await child;
    if (this.child !== child) return;
    this.child = undefined;
    if (this.stopped) return;
    const said = firstLine(stderrTail) || (result.code === 'ENOENT' ? `${this.s.command} is not on PATH` : '');
    const how = this.stalled
      ? `no reading for ${this.s.stallMs} ms`
      : result.exitCode !== undefined
        ? `exit code ${result.exitCode}`
        : (result.signal ?? result.code ?? 'ended');
    this.ended(`${how}${said ? `: ${said}` : ''}`);
  }

  private ended(why: string): void {
    if (this.stopped) return;
    this.silentRuns = this.readingsThisRun === 0 ? this.silentRuns + 1 : 0;
    if (this.silentRuns >= SILENT_RUNS_BEFORE_POLLING) {
      this.onError(
        new Error(`${this.s.command} -lms streamed no reading ${this.silentRuns} times (${why}); querying it once every ${this.s.intervalMs} ms instead.`),
      );
      this.startPolling();
      return;
    }
    const delay = this.restartDelay;
    this.restartDelay = Math.min(MAX_RESTART_DELAY_MS, this.restartDelay * 2);
    this.onError(new Error(`${this.s.command} stream stopped (${why}); restarting it in ${delay} ms.`));
    this.after(delay, () => void this.spawn());
  }

  private startPolling(): void {
    this.polling = true;
    const poll = async () => {
      try {
        const snapshots = await this.sampleOnce();
        if (!this.stopped) this.onSample(snapshots);
      } catch (error) {
        if (!this.stopped) this.onError(error as Error);
      }
    };
    void poll();
    this.every(this.s.intervalMs, () => void poll());
  }

  private onLine(line: string): void {
    if (this.stopped) return;
    const reading = parseNvidiaGpuLine(line);
    if (!reading) {
      if (line.trim() && !this.garbageReported) {
        this.garbageReported = true;
        this.onError(new Error(`${this.s.command} printed a line that is not a GPU reading: "${line.trim().slice(0, 200)}"`));
      }
      return;
    }
    this.lastLineAt = this.s.now();
    this.readingsThisRun++;
    this.silentRuns = 0;
    this.restartDelay = this.s.restartDelayMs;
    // nvidia-smi prints one line per GPU per loop: a GPU seen twice starts the next loop.
    if (this.batch.has(reading.index)) {
      this.expectedGpus = this.batch.size;
      this.flush();
    }
    this.batch.set(reading.index, reading);
    if (this.expectedGpus > 0 && this.batch.size >= this.expectedGpus) this.flush();
  }

  private flush(): void {
    if (this.batch.size === 0) return;
    const at = this.s.now();
    const readings = [...this.batch.values()].sort((a, b) => a.index - b.index);
    this.batch = new Map();
    this.onSample(readings.map((r) => nvidiaSnapshot(r, at, this.processes)));
  }

  private checkStall(): void {
    if (this.polling || !this.child || this.stalled) return;
    // A first loop of one GPU only flushes when the second loop starts: flush what is waiting after one interval.
    if (this.batch.size > 0 && this.s.now() - this.lastLineAt >= this.s.intervalMs) this.flush();
    if (this.s.now() - this.lastLineAt > this.s.stallMs) {
      this.stalled = true;
      this.child.kill('SIGKILL');
    }
  }

  private async refreshProcesses(): Promise<void> {
    if (this.processQueryRunning || this.stopped) return;
    this.processQueryRunning = true;
    try {
      const result = await runTool(this.s.command, nvidiaAppsQueryArgs(), {
        timeoutMs: this.s.timeoutMs,
        env: this.s.env,
        signal: this.querySignal(),
      });
      if (this.stopped) return;
      if (result.ok) {
        this.processes = processesByGpu(parseNvidiaComputeApps(result.stdout));
        this.processProblem = undefined;
      } else {
        this.processes = undefined;
        // Say it once, not on every sample.
        if (this.processProblem !== result.message) this.onError(new Error(`Per-process GPU use unavailable: ${result.message}`));
        this.processProblem = result.message;
      }
    } finally {
      this.processQueryRunning = false;
    }
  }
}
