/** Snapshots, plans and decisions for the extension's unit tests. */

import { GiB, MiB, type DecisionEvent, type JobInfo, type Plan } from '../../../sidecar/core/types';
import type { SidecarSnapshot } from '../../../sidecar/protocol';

export function plan(overrides: Partial<Plan> = {}): Plan {
  return {
    jobId: 'job-1',
    deviceId: 'sim:0',
    fits: true,
    placement: { textEncoder: 'gpu', diffusion: 'gpu', vae: 'gpu', vaeTiling: false, flashAttention: false },
    yields: [],
    stages: [
      { stage: 'textEncode', peak: 1 * GiB, parts: [{ label: 'text encoder', bytes: 1 * GiB }] },
      { stage: 'diffusion', peak: 5 * GiB, parts: [{ label: 'UNet', bytes: 5 * GiB }] },
      { stage: 'vaeDecode', peak: 6.5 * GiB, parts: [{ label: 'VAE decode', bytes: 6.5 * GiB }] },
    ],
    peak: 6.5 * GiB,
    available: 8 * GiB,
    extraTimeMs: 0,
    reason: 'everything fits on the GPU',
    suggestions: [],
    ...overrides,
  };
}

export function imageJob(overrides: Partial<JobInfo> = {}): JobInfo {
  return {
    id: 'job-1',
    spec: { kind: 'image', modelPath: '/m/sdxl.safetensors', prompt: 'a fox', width: 1024, height: 1024, batch: 1, steps: 20, seed: 1, outputPath: '/w/a.png' },
    priority: 'normal',
    status: 'running',
    submittedAt: 1000,
    attempt: 1,
    ...overrides,
  };
}

export function decision(overrides: Partial<DecisionEvent> = {}): DecisionEvent {
  return { seq: 1, at: 10_000, kind: 'plan', reason: 'planned', ...overrides };
}

export function snapshot(overrides: Partial<SidecarSnapshot> = {}): SidecarSnapshot {
  return {
    deviceSource: 'real',
    devices: [{ id: 'nvidia:0', name: 'RTX 4070', kind: 'nvidia', total: 12 * GiB, used: 5.2 * GiB, free: 6.8 * GiB, unified: false, at: 10_000 }],
    effectiveFree: { 'nvidia:0': 6 * GiB },
    safetyMargin: 512 * MiB,
    llm: { id: 'llm', state: 'hot', deviceId: 'nvidia:0', wantedState: 'hot', costs: null, lastUsedAt: 0 },
    image: { id: 'image', state: 'stopped', deviceId: 'nvidia:0', heldBytes: 0 },
    queue: [],
    running: [],
    recentDecisions: [],
    breakdown: {
      'nvidia:0': [
        { label: 'LLM weights', bytes: 4 * GiB, kind: 'llm' },
        { label: 'LLM KV cache', bytes: 0.5 * GiB, kind: 'llm' },
        { label: 'Other programs', bytes: 0.7 * GiB, kind: 'other' },
        { label: 'Free', bytes: 6.3 * GiB, kind: 'free' },
        { label: 'Safety margin', bytes: 0.5 * GiB, kind: 'margin' },
      ],
    },
    at: 10_000,
    ...overrides,
  };
}
