/**
 * What the usual policies share: sd.cpp run the way a user without an arbiter runs it (`--auto-fit`, flash
 * attention), and the LLM loaded and asked the way llama-server / Ollama do it.
 */

import { layersThatFit } from '../../../sidecar/core/estimators/llmEstimator';
import { CHARS_PER_TOKEN, SDCPP_AUTO_FIT } from '../../../sidecar/core/estimators/figures';
import type { Bytes, ImagePlacement, LlmJobSpec, LlmState } from '../../../sidecar/core/types';
import type { ImageModel } from '../catalog';
import { LLM_CONTEXT, LLM_META } from '../catalog';
import type { Session } from '../session';
import type { ImageArrival, LlmArrival } from '../trace';
import type { TrueLlm, TrueSdCli } from '../workers';

/**
 * sd.cpp `--auto-fit` (memory-facts.md): at start it reserves fixed amounts whatever the resolution, diffusion
 * params + 2048 MiB, text encoder params + 2048 MiB, VAE params + 1024 MiB, plus 512 MiB of margin, against the free
 * memory the driver reports. A part that does not fit goes to the CPU (the diffusion model: its weights stay in RAM
 * and come to the device for sampling, --offload-to-cpu). Flash attention on (`--diffusion-fa`), as users set it.
 */
export function autoFitPlacement(model: ImageModel, reportedFree: Bytes): ImagePlacement {
  let room = reportedFree - SDCPP_AUTO_FIT.margin;
  const take = (bytes: Bytes) => {
    if (bytes > room) return false;
    room -= bytes;
    return true;
  };
  const diffusionOnGpu = take(model.weights.diffusion + SDCPP_AUTO_FIT.diffusionExtra);
  const teOnGpu = take(model.weights.textEncoder + SDCPP_AUTO_FIT.textEncoderExtra);
  const vaeOnGpu = take(model.weights.vae + SDCPP_AUTO_FIT.vaeExtra);
  return {
    textEncoder: teOnGpu ? 'gpu' : 'cpu',
    diffusion: diffusionOnGpu ? 'gpu' : 'offload',
    vae: vaeOnGpu ? 'gpu' : 'cpu',
    vaeTiling: false,
    flashAttention: true,
  };
}

/** Runs an image job with sd-cli --auto-fit (one retry of a failed VAE decode, tiled) and records how it ended. */
export async function runAutoFit(session: Session, sd: TrueSdCli, job: ImageArrival): Promise<void> {
  const world = session.world;
  const placement = autoFitPlacement(world.model(job), world.reportedFree());
  const result = await sd.execute(job, placement, { retryVaeTiled: true });
  if (result.ok) session.end(job.id, 'done');
  // Without an image check, a gray image is what the user gets.
  else if (result.failure === 'blank') session.end(job.id, 'blank', result.message);
  else session.end(job.id, 'failed', `${result.failure}${result.stage ? ` during ${result.stage}` : ''}: ${result.message}`);
}

/** The extension's caps on generated tokens (src/llmTasks.ts): completions 64, questions 768, enhancements 220. */
const MAX_TOKENS: Record<LlmArrival['task'], number> = { completion: 64, chat: 768, enhancePrompt: 220 };

/**
 * The spec a request is served with, as long as its tokens (CHARS_PER_TOKEN characters each), so that the arbiter
 * sees what it would see in the editor. A completion is a fill-in-the-middle request as the inline completion
 * provider sends it: the prefix from its window's start to the cursor (the same text at the same place, so two
 * completions there share it up to the earlier cursor), then the suffix, whose first line names the trace entry.
 * Other requests name it on their prompt's first line.
 */
export function llmSpec(job: LlmArrival): LlmJobSpec {
  const base = { kind: 'llm' as const, contextSize: LLM_CONTEXT, maxTokens: MAX_TOKENS[job.task] };
  const place = job.place;
  if (place) {
    const prefix = `// file ${place.doc} from ${place.windowStart}\n`.padEnd((place.cursor - place.windowStart) * CHARS_PER_TOKEN, 'x');
    // Lines of code after the cursor (40 characters each), the first naming the trace entry.
    const suffix = `${job.id}\n`.padEnd(place.suffix * CHARS_PER_TOKEN, `${'s'.repeat(39)}\n`);
    return { ...base, task: 'infill', prefix, suffix };
  }
  return { ...base, task: job.task, prompt: `${job.id}\n`.padEnd(job.promptTokens * CHARS_PER_TOKEN, 'x') };
}

/** Moves the LLM to `target`; false (and the LLM stopped) when llama.cpp aborted for lack of memory. */
export async function moveLlm(llm: TrueLlm, target: LlmState): Promise<boolean> {
  try {
    await llm.setState(target);
    return true;
  } catch {
    return false;
  }
}

/** Serves a request on a hot LLM and records it (not one the editor has cancelled; one it cancels stops). */
export async function serve(session: Session, llm: TrueLlm, job: LlmArrival): Promise<void> {
  if (!session.isOpen(job.id)) return;
  try {
    await llm.run(llmSpec(job), () => undefined, session.signal(job.id));
    session.end(job.id, 'done');
  } catch (error) {
    session.end(job.id, 'failed', (error as Error).message);
  }
}

/** GPU layers that fit in `room` for the benchmark's LLM and context (the estimator's figures, as llama.cpp's --fit). */
export function layersFor(room: Bytes): number {
  return layersThatFit(LLM_META, room, LLM_CONTEXT, 'f16', { backend: 'cuda' });
}
