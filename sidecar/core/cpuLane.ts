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

/**
 * A request as the CPU copy runs it. Fill-in-the-middle puts the suffix after the prefix (node-llama-cpp's PSM
 * order), so each completion evaluates its whole suffix again even when the context holds the file before the
 * cursor: the editor's 1500 characters are ~375 tokens, 4 s of a 7B's prompt speed on a CPU, most of an answer there.
 * The copy keeps the suffix's first whole lines up to CPU_INFILL_SUFFIX_CHARS: the code right after the cursor,
 * which is what keeps a completion from repeating it.
 */
export function cpuLaneSpec(spec: LlmJobSpec): LlmJobSpec {
  if (spec.task !== 'infill' || spec.suffix === undefined || spec.suffix.length <= CPU_INFILL_SUFFIX_CHARS) return spec;
  const lineEnd = spec.suffix.lastIndexOf('\n', CPU_INFILL_SUFFIX_CHARS - 1);
  return { ...spec, suffix: spec.suffix.slice(0, lineEnd > 0 ? lineEnd + 1 : CPU_INFILL_SUFFIX_CHARS) };
}

export interface CpuLaneAnswer {
  text: string;
  /** Time spent starting the lane for this request (0 when it was running). */
  startMs: Millis;
  /** Time the request itself took. */
  runMs: Millis;
}

export class CpuLane {
  /** Why the lane is out of use, once it has failed. */
  failure: string | null = null;
  /** When it last answered (or failed to). */
  lastUsedAt: Millis = -Infinity;
  private busy = false;
  private lastStartMs: Millis | null = null;
  private readonly prompt = new PromptReuse();

  constructor(
    readonly control: LlmControl,
    private readonly clock: Clock,
  ) {}

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
      evaluating = true;
      const text = await this.control.run(spec, onText, signal);
      this.prompt.ended(spec, 'answered');
      return { text, startMs, runMs: this.clock.now() - started };
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
