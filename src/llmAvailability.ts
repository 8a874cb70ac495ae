/**
 * Whether the LLM can serve an inline completion right now, from the snapshot. While it has lent its memory to
 * an image job, completions go to the CPU copy of the model when there is one (the sidecar answers there when that
 * is quicker than waiting, and the editor cancels a completion the user typed past); without one they wait quietly
 * instead of queueing behind the image or failing.
 */

import type { SidecarSnapshot } from '../sidecar/protocol';

export type LlmAvailability = 'ready' | 'lent' | 'unconfigured';

export function llmAvailability(snapshot: SidecarSnapshot | undefined, modelConfigured: boolean): LlmAvailability {
  if (!modelConfigured) return 'unconfigured';
  if (!snapshot) return 'ready';
  const imageActive = snapshot.running.some((job) => job.spec.kind === 'image');
  const llmYielded =
    snapshot.llm.state !== 'hot' &&
    (imageActive || snapshot.running.some((job) => job.plan?.yields.some((y) => y.resident === 'llm')));
  const copyServes = snapshot.llm.cpuCopy === 'available' || snapshot.llm.cpuCopy === 'running';
  return llmYielded && !copyServes ? 'lent' : 'ready';
}
