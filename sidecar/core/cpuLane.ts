/**
 * The CPU lane: a CPU-only copy of the LLM that answers requests while an image job holds the GPU memory the LLM
 * needs (planning/llmPlanner.ts decides when). It uses no VRAM, so it stays outside the budget; it does use RAM
 * (the weights, mapped from the page cache the GPU LLM loaded them through, and its own KV cache), so the arbiter
 * starts it on first use and stops it once it has been idle a while. Once it has failed it is set aside: requests
 * then wait for the GPU LLM as they would without it.
 */

import { PromptReuse } from './estimators/promptReuse';
import type { Clock, LlmControl } from './ports';
import type { LlmJobSpec, Millis } from './types';

/** Characters of a completion's suffix the CPU copy evaluates (see cpuLaneSpec). */
export const CPU_INFILL_SUFFIX_CHARS = 256;
/** Least characters of a completion's prefix the CPU copy evaluates, and the grid its start is on (see cpuLaneSpec). */
export const CPU_INFILL_PREFIX_CHARS = 2048;
export const CPU_INFILL_PREFIX_STEP = 512;

/**
 * A request as the CPU copy runs it: a completion sees less of the file there. A 7B evaluates ~90 prompt tokens a
 * second on a CPU, so the editor's window (up to 5000 characters before the cursor, 1500 after) would take 15-20 s
 * wherever the prompt is not already held: after a jump to another place, and for the suffix every time, since
 * fill-in-the-middle puts it after the prefix (node-llama-cpp's PSM order). The user has typed on long before that.
 * - The suffix keeps its first whole lines up to CPU_INFILL_SUFFIX_CHARS: the code right after the cursor, which is
 *   what keeps a completion from repeating it.
 * - The prefix keeps its last CPU_INFILL_PREFIX_CHARS or up to a step more: it starts on a grid of
 *   CPU_INFILL_PREFIX_STEP from the prefix's own start (which the editor puts on its grid, a multiple of this step),
 *   moved back to the start of that line. So consecutive completions at one place begin alike, as in the editor,
 *   and the copy evaluates only what follows the part its context holds.
 */
export function cpuLaneSpec(spec: LlmJobSpec): LlmJobSpec {
  if (spec.task !== 'infill') return spec;
  const prefix = spec.prefix === undefined ? undefined : cutPrefix(spec.prefix);
  const suffix = spec.suffix === undefined ? undefined : cutSuffix(spec.suffix);
  return prefix === spec.prefix && suffix === spec.suffix ? spec : { ...spec, prefix, suffix };
}

/** What cpuLaneSpec cut of `asked` to give `run`, for the answer's decision ('' when nothing). */
export function describeCut(asked: LlmJobSpec, run: LlmJobSpec): string {
  const before = run.prefix !== asked.prefix ? `the text before the cursor to its last ${run.prefix?.length ?? 0} characters` : '';
  const after = run.suffix !== asked.suffix ? `to its first ${run.suffix?.length ?? 0}` : '';
  if (before && after) return `cut ${before} and the text after it ${after}`;
  if (before) return `cut ${before}`;
  return after ? `cut the text after the cursor ${after} characters` : '';
}

function cutSuffix(suffix: string): string {
  if (suffix.length <= CPU_INFILL_SUFFIX_CHARS) return suffix;
  const lineEnd = suffix.lastIndexOf('\n', CPU_INFILL_SUFFIX_CHARS - 1);
  return suffix.slice(0, lineEnd > 0 ? lineEnd + 1 : CPU_INFILL_SUFFIX_CHARS);
}

function cutPrefix(prefix: string): string {
  const gridStart = Math.floor((prefix.length - CPU_INFILL_PREFIX_CHARS) / CPU_INFILL_PREFIX_STEP) * CPU_INFILL_PREFIX_STEP;
  if (gridStart <= 0) return prefix;
  // From the start of the line the grid point is in, when that is less than a step before it (the text there is not
  // where the user types, so the start stays put).
  const newline = prefix.lastIndexOf('\n', gridStart - 1);
  const start = newline !== -1 && newline + 1 > gridStart - CPU_INFILL_PREFIX_STEP ? newline + 1 : gridStart;
  return prefix.slice(start);
}

export interface CpuLaneAnswer {
  text: string;
  /** Time spent starting the lane for this request (0 when it was running). */
  startMs: Millis;
  /** Time the request itself took. */
  runMs: Millis;
  /** The worker died during the request and ran it again: runMs includes a restart. */
  rerun: boolean;
}

export class CpuLane {
  /** Why the lane is out of use, once it has failed. */
  failure: string | null = null;
  /** When it last answered (or failed to). */
  lastUsedAt: Millis = -Infinity;
  private busy = false;
  private lastStartMs: Millis | null = null;
  private readonly prompt: PromptReuse;

  constructor(
    readonly control: LlmControl,
    private readonly clock: Clock,
  ) {
    this.prompt = new PromptReuse(() => control.crashCount());
  }

  get usable(): boolean {
    return this.failure === null;
  }

  get running(): boolean {
    return this.control.state() === 'hot';
  }

  get serving(): boolean {
    return this.busy;
  }

  /** Expected time to start it before a request: 0 when running, what it took last time, or `prior`. */
  startEstimateMs(prior: Millis): Millis {
    return this.running ? 0 : (this.lastStartMs ?? prior);
  }

  /** `asked` as the lane runs it (cpuLaneSpec), and the prompt tokens its context holds of it (none when stopped). */
  asRun(asked: LlmJobSpec): { spec: LlmJobSpec; reusedTokens: number } {
    const spec = cpuLaneSpec(asked);
    return { spec, reusedTokens: this.running ? this.prompt.reusableTokens(spec) : 0 };
  }

  /** Starts the lane when it is not running, then answers `spec` (a request as `asRun` gives it). */
  async serve(spec: LlmJobSpec, onText: (delta: string) => void, signal: AbortSignal): Promise<CpuLaneAnswer> {
    this.busy = true;
    let evaluating = false;
    try {
      let startMs = 0;
      if (!this.running) {
        this.prompt.clear();
        startMs = (await this.control.setState('hot', signal)).tookMs;
        this.lastStartMs = startMs;
      }
      const started = this.clock.now();
      const crashesBefore = this.control.crashCount();
      evaluating = true;
      const text = await this.control.run(spec, onText, signal);
      this.prompt.ended(spec, 'answered');
      return { text, startMs, runMs: this.clock.now() - started, rerun: this.control.crashCount() !== crashesBefore };
    } catch (error) {
      if (evaluating) this.prompt.ended(spec, signal.aborted ? 'cancelled' : 'failed', this.running);
      else this.prompt.clear();
      throw error;
    } finally {
      this.busy = false;
      this.lastUsedAt = this.clock.now();
    }
  }

  /** Stops the lane's process, giving its RAM back. */
  async stop(): Promise<void> {
    this.prompt.clear();
    if (this.control.state() !== 'stopped') await this.control.setState('stopped');
  }
}
