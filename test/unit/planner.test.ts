import { describe, it } from 'node:test';
import assert from 'node:assert/strict';

import {
  floorOf,
  nextRecoveryRung,
  planImageJob,
  planLlmJob,
  scaleImageCosts,
  type ImagePlanInput,
  type PlannerLlm,
} from '../../sidecar/core/planner';
import { formatBytes, formatDuration, formatExtraTime } from '../../sidecar/core/format';
import { LLM_7B_8K, SDXL_1024 } from '../fixtures/costs';
import {
  FULL_SD_CAPABILITIES,
  GiB,
  MiB,
  type ImageJobCosts,
  type ImagePlacement,
  type LlmCosts,
  type LlmState,
  type SdCapabilities,
} from '../../sidecar/core/types';



/** Same model with a 32k context: 4 GB of KV cache. */
const LLM_7B_32K: LlmCosts = { ...LLM_7B_8K, contextSize: 32768, kvCache: 4 * GiB, compute: 500 * MiB };

const NO_CPU: SdCapabilities = { ...FULL_SD_CAPABILITIES, cpuPlacementFlags: 'none' };

function sdxlAt(width: number, height: number, batch = 1): ImageJobCosts {
  const scaled = scaleImageCosts(SDXL_1024, width, height);
  return { ...scaled, batch, compute: { ...scaled.compute, diffusion: scaled.compute.diffusion * batch, diffusionFlash: scaled.compute.diffusionFlash * batch } };
}

interface Row {
  name: string;
  free: number;
  llm: PlannerLlm;
  costs?: ImageJobCosts;
  caps?: SdCapabilities;
  maxAllocation?: number;
  otherUse?: number;
  expect: {
    fits: boolean;
    llmTo?: LlmState;
    placement?: Partial<ImagePlacement>;
    extraTimeMs?: number;
    batchPerRun?: number;
    reason: RegExp;
    suggestions?: RegExp[];
  };
}

const hot = (costs: LlmCosts, neededSoon = true): PlannerLlm => ({ state: 'hot', costs, busy: false, neededSoon });
const noLlm: PlannerLlm = { state: 'stopped', costs: null, busy: false };

const ALL_GPU: ImagePlacement = { textEncoder: 'gpu', diffusion: 'gpu', vae: 'gpu', vaeTiling: false, flashAttention: false };

const TABLE: Row[] = [
  {
    name: 'everything fits: the LLM stays hot, nothing degrades, no extra time',
    free: 16 * GiB,
    llm: hot(LLM_7B_8K),
    expect: { fits: true, placement: ALL_GPU, extraTimeMs: 0, reason: /^estimate 13\.4 GB peak for VAE decode 1024x1024, free 16\.0 GB -> all on the GPU, LLM stays hot/ },
  },
  {
    // ~3.1 GB free beside the 6.9 GB of weights; the 32k context frees 4.5 GB at +0.9 s, cheaper than tiling.
    name: 'SDXL 1024x1024 with ~3 GB free after weights: dropping the LLM context beats VAE on CPU',
    free: 10 * GiB,
    llm: hot(LLM_7B_32K),
    expect: {
      fits: true,
      llmTo: 'warm',
      placement: ALL_GPU,
      extraTimeMs: 900,
      reason: /^estimate 6\.5 GB for VAE decode 1024x1024, free 3\.1 GB beside the weights -> drop the LLM context \(frees 4\.5 GB\), est\. \+900 ms$/,
    },
  },
  {
    // Same job, but requests come 6 a minute: dropping the context leaves them waiting through the 21.8 s job
    // (1e-4/ms x 21.8 s^2 / 2 = 23.8 s expected), far more than tiling's 1.8 s.
    name: 'an LLM in steady use keeps its context: tiled decode rather than a yield that leaves requests waiting',
    free: 10 * GiB,
    llm: { ...hot(LLM_7B_32K), requestRatePerMs: 6 / 60_000 },
    expect: {
      fits: true,
      llmTo: 'hot',
      placement: { ...ALL_GPU, vaeTiling: true },
      extraTimeMs: 1800,
      reason: /-> tiled decode, est\. \+1\.8 s$/,
    },
  },
  {
    // Dropping the 8k context frees only 1.3 GB; unloading (3.9 s) costs more than tiling (1.8 s) while the LLM is in use.
    name: 'dropping the context is not enough: tiled decode (cheap) before VAE on CPU',
    free: 10 * GiB,
    llm: hot(LLM_7B_8K),
    expect: {
      fits: true,
      llmTo: 'hot',
      placement: { ...ALL_GPU, vaeTiling: true },
      extraTimeMs: 1800,
      reason: /^estimate 6\.5 GB for VAE decode 1024x1024, free 3\.1 GB beside the weights -> tiled decode, est\. \+1\.8 s$/,
    },
  },
  {
    // Not used lately: its reload counts at a quarter (0.5 + 3.4 x 0.25 = 1.35 s), cheaper than tiling.
    name: 'an idle LLM is unloaded rather than slowing the image',
    free: 10 * GiB,
    llm: hot(LLM_7B_8K, false),
    expect: { fits: true, llmTo: 'cold', placement: ALL_GPU, extraTimeMs: 1350, reason: /-> unload the LLM \(frees 5\.4 GB\), est\. \+1\.4 s$/ },
  },
  {
    name: 'tiny budget: text encoder and VAE on the CPU, flash attention',
    free: 5.9 * GiB,
    llm: noLlm,
    expect: {
      fits: true,
      placement: { textEncoder: 'cpu', diffusion: 'gpu', vae: 'cpu', flashAttention: true },
      extraTimeMs: 7500,
      reason: /with all weights on the GPU, free 5\.9 GB -> VAE on CPU, text encoder on CPU, flash attention, est\. \+7\.5 s$/,
    },
  },
  {
    name: 'no CPU placement in this sd.cpp build: weights offloaded to RAM and tiled decode',
    free: 5.9 * GiB,
    llm: noLlm,
    caps: NO_CPU,
    expect: {
      fits: true,
      placement: { textEncoder: 'gpu', diffusion: 'offload', vae: 'gpu', vaeTiling: true, flashAttention: true },
      extraTimeMs: 9800,
      reason: /tiled decode, weights offloaded to RAM, flash attention/,
    },
  },
  {
    name: 'a Vulkan driver caps single allocations: a 6.5 GB decode buffer must be tiled even with room to spare',
    free: 20 * GiB,
    llm: noLlm,
    maxAllocation: 4 * GiB,
    expect: {
      fits: true,
      placement: { ...ALL_GPU, vaeTiling: true },
      reason: /^estimate 6\.5 GB for VAE decode 1024x1024 in one buffer, the driver allows 4\.0 GB per allocation -> tiled decode/,
    },
  },
  {
    name: 'a batch that does not fit at once runs image by image',
    free: 5.95 * GiB,
    llm: noLlm,
    costs: sdxlAt(1024, 1024, 4),
    expect: {
      fits: true,
      batchPerRun: 1,
      placement: { textEncoder: 'cpu', vaeTiling: true, flashAttention: true },
      reason: /-> tiled decode, text encoder on CPU, flash attention, run image by image, est\. \+13\.2 s$/,
    },
  },
  {
    name: 'a batch that fits in halves runs two images at a time',
    free: 6.6 * GiB,
    llm: noLlm,
    costs: sdxlAt(1024, 1024, 4),
    expect: { fits: true, batchPerRun: 2, placement: { textEncoder: 'cpu', vae: 'cpu', flashAttention: true }, reason: /run 2 images at a time/ },
  },
  {
    name: 'nothing fits: the reason names the biggest stage with its numbers, and says what would fit',
    free: 5.5 * GiB,
    llm: noLlm,
    costs: sdxlAt(4096, 4096),
    otherUse: 2 * GiB,
    expect: {
      fits: false,
      reason: /^nothing fits: diffusion 4096x4096 needs 16\.0 GB \(diffusion weights \(from RAM\) 5\.1 GB \+ diffusion compute \(flash attention\) 10\.9 GB\) even with .*free 5\.5 GB$/,
      suggestions: [/^a smaller size: \d+x\d+ fits now$/, /smaller or quantized model/],
    },
  },
  {
    name: 'nothing fits because of other programs: closing them is suggested with the numbers',
    free: 5 * GiB,
    llm: noLlm,
    otherUse: 3 * GiB,
    expect: {
      fits: false,
      reason: /^nothing fits: diffusion 1024x1024 needs 5\.8 GB/,
      suggestions: [/smaller or quantized model/, /^closing other programs that use the GPU: they hold 3\.0 GB, 802 MB more is needed$/],
    },
  },
];

function inputFor(row: Row): ImagePlanInput {
  const costs = row.costs ?? SDXL_1024;
  return {
    jobId: 'job-1',
    spec: { width: costs.width, height: costs.height, batch: costs.batch },
    device: {
      id: 'sim:0',
      effectiveFree: row.free,
      ...(row.maxAllocation !== undefined ? { maxAllocation: row.maxAllocation } : {}),
      ...(row.otherUse !== undefined ? { otherUse: row.otherUse } : {}),
    },
    llm: row.llm,
    image: { state: 'stopped', heldBytes: 0 },
    costs,
    capabilities: row.caps ?? FULL_SD_CAPABILITIES,
  };
}

describe('planImageJob: situations -> plans', () => {
  for (const row of TABLE) {
    it(row.name, () => {
      const plan = planImageJob(inputFor(row));
      assert.equal(plan.fits, row.expect.fits, plan.reason);
      assert.match(plan.reason, row.expect.reason);
      if (row.expect.llmTo !== undefined) {
        const to = plan.yields.find((y) => y.resident === 'llm')?.to ?? row.llm.state;
        assert.equal(to, row.expect.llmTo);
      }
      if (row.expect.placement) {
        for (const [key, value] of Object.entries(row.expect.placement)) {
          assert.equal(plan.placement?.[key as keyof ImagePlacement], value, `placement.${key}: ${plan.reason}`);
        }
      }
      if (row.expect.extraTimeMs !== undefined) assert.equal(plan.extraTimeMs, row.expect.extraTimeMs);
      assert.equal(plan.batchPerRun, row.expect.batchPerRun);
      if (row.expect.suggestions) {
        assert.equal(plan.suggestions.length, row.expect.suggestions.length, plan.suggestions.join(' | '));
        row.expect.suggestions.forEach((re, i) => assert.match(plan.suggestions[i], re));
      } else {
        assert.deepEqual(plan.suggestions, []);
      }
      // Whatever was chosen, a plan that fits keeps every stage within the room it had.
      if (plan.fits) {
        const frees = plan.yields.reduce((sum, y) => sum + y.frees, 0);
        const llmKept = row.llm.costs ? planLlmKept(row.llm, plan.yields[0]?.to as LlmState | undefined) : 0;
        for (const stage of plan.stages) assert.ok(stage.peak - llmKept <= row.free + frees, `${stage.stage} over budget`);
      }
    });
  }
});

function planLlmKept(llm: PlannerLlm, to: LlmState | undefined): number {
  const state = to ?? llm.state;
  const c = llm.costs!;
  return state === 'hot' ? c.weights + c.kvCache + c.compute : state === 'warm' ? c.weights : 0;
}

describe('planImageJob: details', () => {
  it('counts what the LLM keeps in every stage and lists the parts of each peak', () => {
    const plan = planImageJob(inputFor(TABLE[0]));
    assert.deepEqual(
      plan.stages.map((s) => s.stage),
      ['textEncode', 'diffusion', 'vaeDecode'],
    );
    for (const stage of plan.stages) {
      assert.equal(stage.parts[0].label, 'LLM (hot)');
      assert.equal(stage.peak, stage.parts.reduce((sum, p) => sum + p.bytes, 0));
    }
    assert.equal(plan.peak, Math.max(...plan.stages.map((s) => s.peak)));
    assert.equal(plan.available, 16 * GiB);
  });

  it("counts an idle sd-server's bytes as room for the job", () => {
    const tight = { ...inputFor(TABLE[2]) };
    const withResident = planImageJob({ ...tight, image: { state: 'resident', heldBytes: 4 * GiB } });
    assert.equal(withResident.fits, true);
    assert.equal(withResident.placement?.vaeTiling, false);
    assert.deepEqual(withResident.yields, []);
  });

  it('a recovery rung makes the plan at least that safe, and the floor keeps what the failed plan had', () => {
    const base = inputFor(TABLE[0]);
    const tiled = planImageJob({ ...base, minimumRung: 'vaeTiling' });
    assert.equal(tiled.placement?.vaeTiling, true);
    assert.match(tiled.reason, /^retry \(recovery rung vaeTiling\)/);
    const cpu = planImageJob({ ...base, minimumRung: 'vaeOnCpu', floor: floorOf(tiled, 'hot') });
    assert.equal(cpu.placement?.vae, 'cpu');
    const te = planImageJob({ ...base, minimumRung: 'textEncoderOnCpu' });
    assert.equal(te.placement?.textEncoder, 'cpu');
    assert.equal(te.placement?.vae, 'cpu', 'rungs are cumulative');
    const stop = planImageJob({ ...base, minimumRung: 'stopLlm' });
    assert.equal(stop.yields[0]?.to, 'stopped');
    assert.equal(stop.placement?.diffusion, 'offload');
  });

  it('a rung the engine cannot do is met by the safest thing it can do', () => {
    const plan = planImageJob({ ...inputFor(TABLE[0]), capabilities: { ...FULL_SD_CAPABILITIES, vaeTiling: false }, minimumRung: 'vaeTiling' });
    assert.equal(plan.placement?.vae, 'cpu');
  });

  it('nextRecoveryRung climbs the ladder past what the failed plan already did', () => {
    const base = inputFor(TABLE[0]);
    const first = planImageJob(base);
    assert.equal(nextRecoveryRung(first, FULL_SD_CAPABILITIES, 'hot'), 'vaeTiling');
    const tiled = planImageJob({ ...base, minimumRung: 'vaeTiling' });
    assert.equal(nextRecoveryRung(tiled, FULL_SD_CAPABILITIES, 'hot'), 'vaeOnCpu');
    const last = planImageJob({ ...base, minimumRung: 'stopLlm' });
    assert.equal(nextRecoveryRung(last, FULL_SD_CAPABILITIES, 'stopped'), null);
    // No LLM to stop and no offloading: the ladder ends after the CPU rungs.
    const cpu = planImageJob({ ...base, llm: noLlm, minimumRung: 'textEncoderOnCpu' });
    assert.equal(nextRecoveryRung(cpu, { ...FULL_SD_CAPABILITIES, offloadToCpu: false }, 'stopped'), null);
  });

  it('the "largest size that fits" suggestion really fits when planned at that size', () => {
    const row = TABLE.find((r) => r.name.startsWith('nothing fits: the reason'))!;
    const plan = planImageJob(inputFor(row));
    const [, w, h] = /(\d+)x(\d+)/.exec(plan.suggestions[0])!.map(Number);
    const atSize = planImageJob({ ...inputFor(row), spec: { width: w, height: h, batch: 1 }, costs: sdxlAt(w, h) });
    assert.equal(atSize.fits, true, atSize.reason);
    const oneStepUp = planImageJob({ ...inputFor(row), spec: { width: w + 64, height: h + 64, batch: 1 }, costs: sdxlAt(w + 64, h + 64) });
    assert.equal(oneStepUp.fits, false);
  });

  it('runs in part of the safety margin only as a last resort, and says by how much', () => {
    const row = TABLE.find((r) => r.name.startsWith('nothing fits because of other programs'))!;
    const input = inputFor(row);
    // 802 MB short with every safer option: a reserve of 1 GB covers it, one of 512 MB does not.
    const inMargin = planImageJob({ ...input, device: { ...input.device, marginReserve: 1 * GiB } });
    assert.equal(inMargin.fits, true, inMargin.reason);
    assert.ok(inMargin.marginUsed !== undefined && Math.abs(inMargin.marginUsed - 802 * MiB) < 2 * MiB, `marginUsed ${inMargin.marginUsed}`);
    assert.match(inMargin.reason, /; nothing else can yield: runs 80[12] MB into the safety margin$/);
    assert.equal(inMargin.available, input.device.effectiveFree);
    const short = planImageJob({ ...input, device: { ...input.device, marginReserve: 512 * MiB } });
    assert.equal(short.fits, false);
    assert.equal(short.marginUsed, undefined);
    // A job that fits without the margin never touches it, and keeps its cheapest plan.
    const roomy = planImageJob({ ...inputFor(TABLE[0]), device: { ...inputFor(TABLE[0]).device, marginReserve: 1 * GiB } });
    assert.equal(roomy.marginUsed, undefined);
    assert.deepEqual(roomy.placement, planImageJob(inputFor(TABLE[0])).placement);
  });
});

describe('planLlmJob', () => {
  const device = (free: number) => ({ id: 'sim:0', effectiveFree: free });
  const idleImage = { state: 'stopped' as const, heldBytes: 0 };

  it('a hot LLM needs nothing', () => {
    const plan = planLlmJob({ jobId: 'l', spec: { contextSize: 4096 }, device: device(0), llm: hot(LLM_7B_8K), image: idleImage });
    assert.equal(plan.fits, true);
    assert.equal(plan.llmTarget, 'hot');
    assert.equal(plan.extraTimeMs, 0);
  });

  it('a warm LLM recreates its context when it fits', () => {
    const plan = planLlmJob({
      jobId: 'l',
      spec: { contextSize: 4096 },
      device: device(2 * GiB),
      llm: { state: 'warm', costs: LLM_7B_8K, busy: false },
      image: idleImage,
    });
    assert.equal(plan.fits, true);
    assert.equal(plan.extraTimeMs, 400);
    assert.match(plan.reason, /^LLM context needs 1\.3 GB, free 2\.0 GB -> load, est\. \+400 ms$/);
  });

  it('waits (does not offload fewer layers) while an image job holds the memory', () => {
    const plan = planLlmJob({
      jobId: 'l',
      spec: { contextSize: 4096 },
      device: device(1 * GiB),
      llm: { state: 'cold', costs: LLM_7B_8K, busy: false },
      image: { state: 'stopped', heldBytes: 0, busy: true },
    });
    assert.equal(plan.fits, false);
    assert.match(plan.reason, /needs 5\.4 GB, free 1\.0 GB while an image job holds memory -> wait for it to end/);
  });

  describe('with a CPU copy of the LLM', () => {
    const busyImage = (remainingMs: number) => ({ state: 'stopped' as const, heldBytes: 0, busy: true, remainingMs });
    const input = (remainingMs: number, cpu: { requestMs: number; startMs: number; gpuRequestMs: number; requestRatePerMs?: number }) => ({
      jobId: 'l',
      spec: { contextSize: 4096 },
      device: device(1 * GiB),
      llm: { state: 'cold' as const, costs: LLM_7B_8K, busy: false },
      image: busyImage(remainingMs),
      cpu,
    });
    // Waiting = time left + loading the LLM (weights + context) + the request on the GPU.
    const waitFor = (remainingMs: number, gpuRequestMs: number) => remainingMs + LLM_7B_8K.reloadWeightsMs + LLM_7B_8K.recreateContextMs + gpuRequestMs;

    it('answers on the CPU when that ends sooner than waiting, using no VRAM', () => {
      const plan = planLlmJob(input(60_000, { requestMs: 20_000, startMs: 2000, gpuRequestMs: 1000 }));
      assert.equal(plan.fits, true);
      assert.equal(plan.lane, 'cpu');
      assert.equal(plan.peak, 0);
      assert.deepEqual(plan.yields, []);
      assert.deepEqual(plan.stages, []);
      assert.equal(plan.extraTimeMs, 21_000);
      assert.equal(
        plan.reason,
        `LLM weights and context needs 5.4 GB, free 1.0 GB while an image job holds memory -> answer on the CPU (on the CPU est. 22.0 s with its start, waiting est. ${formatDuration(waitFor(60_000, 1000))}; no VRAM used)`,
      );
    });

    it('waits when the image job ends sooner than the CPU would answer', () => {
      const plan = planLlmJob(input(10_000, { requestMs: 20_000, startMs: 0, gpuRequestMs: 1000 }));
      assert.equal(plan.fits, false);
      assert.equal(plan.lane, undefined);
      assert.match(plan.reason, /-> wait for it to end \(on the CPU est\. 20\.0 s, waiting est\. [\d.]+ s\)$/);
    });

    it('counts starting the copy: a request it would answer in time goes to the GPU when the start tips it over', () => {
      const wait = waitFor(15_000, 500);
      assert.equal(planLlmJob(input(15_000, { requestMs: wait - 1000, startMs: 0, gpuRequestMs: 500 })).lane, 'cpu');
      assert.equal(planLlmJob(input(15_000, { requestMs: wait - 1000, startMs: 2000, gpuRequestMs: 500 })).fits, false);
    });

    it('counts the requests that would wait for the copy meanwhile: a long answer waits when requests come often', () => {
      // 40 s on the copy against 100 s of waiting; at one request every 10 s, about 4 requests wait 20 s each.
      const long = { requestMs: 40_000, startMs: 0, gpuRequestMs: 2000 };
      assert.equal(planLlmJob(input(100_000, long)).lane, 'cpu', 'nobody else asks: the copy');
      const busy = planLlmJob({ ...input(100_000, { ...long, requestRatePerMs: 1 / 10_000 }) });
      assert.equal(busy.fits, false);
      assert.match(busy.reason, /-> wait for it to end \(on the CPU est\. 40\.0 s \+ 1 min 20 s of waiting for requests that come meanwhile, waiting est\. [\d.]+ min [\d.]+ s\)$/);
      // A short answer still takes the copy at that rate: 5 s + 1.25 s.
      assert.equal(planLlmJob(input(100_000, { requestMs: 5000, startMs: 0, gpuRequestMs: 500, requestRatePerMs: 1 / 10_000 })).lane, 'cpu');
    });

    it('is not used when the GPU LLM can load now', () => {
      const plan = planLlmJob({ ...input(60_000, { requestMs: 1, startMs: 0, gpuRequestMs: 1 }), device: device(8 * GiB) });
      assert.equal(plan.fits, true);
      assert.equal(plan.lane, undefined);
      assert.equal(plan.llmTarget, 'hot');
    });
  });

  it('stops an idle sd-server to make room', () => {
    const plan = planLlmJob({
      jobId: 'l',
      spec: { contextSize: 4096 },
      device: device(2 * GiB),
      llm: { state: 'cold', costs: LLM_7B_8K, busy: false },
      image: { state: 'resident', heldBytes: 7 * GiB, busy: false },
    });
    assert.equal(plan.fits, true);
    assert.deepEqual(plan.yields.map((y) => [y.resident, y.to]), [['image', 'stopped']]);
  });

  it('nothing fits: says the numbers and suggests a smaller context', () => {
    const plan = planLlmJob({
      jobId: 'l',
      spec: { contextSize: 4096 },
      device: device(3 * GiB),
      llm: { state: 'stopped', costs: LLM_7B_8K, busy: false },
      image: idleImage,
    });
    assert.equal(plan.fits, false);
    assert.match(plan.reason, /^nothing fits: starting the LLM needs 5\.4 GB \(weights 4\.1 GB \+ KV cache 1\.0 GB \+ compute 300 MB\), free 3\.0 GB$/);
    assert.match(plan.suggestions[0], /smaller context/);
  });
});

describe('format', () => {
  it('reads sizes and durations the same way everywhere', () => {
    assert.equal(formatBytes(6656 * MiB), '6.5 GB');
    assert.equal(formatBytes(300 * MiB), '300 MB');
    assert.equal(formatBytes(1023.8 * MiB), '1.0 GB');
    assert.equal(formatBytes(0), '0 B');
    assert.equal(formatDuration(1800), '1.8 s');
    assert.equal(formatDuration(250), '250 ms');
    assert.equal(formatDuration(125_000), '2 min 5 s');
    assert.equal(formatExtraTime(0), '+0 s');
  });
});
