/** How an image job's progress reads in the notification: a stage word, sampling steps and a percentage. */

import type { JobProgressParams } from '../sidecar/protocol';

/** Share of the bar reached at the start of each stage; sampling fills the space up to the VAE decode. */
const STAGE_START: Record<JobProgressParams['stage'], number> = {
  queued: 0,
  waiting: 1,
  retrying: 1,
  textEncode: 3,
  diffusion: 8,
  generating: 8,
  vaeDecode: 88,
  saving: 97,
};

export function progressPercent(p: JobProgressParams): number {
  const start = STAGE_START[p.stage] ?? 0;
  if ((p.stage === 'diffusion' || p.stage === 'generating') && p.step !== undefined && p.totalSteps) {
    return start + (STAGE_START.vaeDecode - start) * Math.min(1, Math.max(0, p.step / p.totalSteps));
  }
  return start;
}

const STAGE_TEXT: Record<JobProgressParams['stage'], string> = {
  queued: 'Queued',
  waiting: 'Waiting for memory',
  retrying: 'Retrying with a safer plan',
  textEncode: 'Encoding the prompt',
  diffusion: 'Sampling',
  generating: 'Generating',
  vaeDecode: 'Decoding the image (VAE)',
  saving: 'Saving',
};

export function progressMessage(p: JobProgressParams): string {
  const base = STAGE_TEXT[p.stage] ?? p.stage;
  const steps = p.step !== undefined && p.totalSteps ? ` ${p.step}/${p.totalSteps}` : '';
  return p.message ? `${base}${steps}: ${p.message}` : `${base}${steps}`;
}
