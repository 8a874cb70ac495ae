/**
 * Bad image requests, through the path a request really takes: the JSON-RPC handlers (parameter shapes), the
 * service, and the arbiter's admission checks (core/jobValidation). Every one must be refused, or end as a failed
 * job, with a message that says what to do; none may throw anything else or be lost.
 */

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ResponseError } from 'vscode-languageserver/node';
import type { SidecarApi } from '../../../sidecar/api';
import { DEFAULT_JOB_LIMITS, validateJobSpec } from '../../../sidecar/core/jobValidation';
import { FULL_SD_CAPABILITIES, type ImageJobSpec } from '../../../sidecar/core/types';
import { Configure, SubmitJob, WaitJob, type JobDoneParams, type SidecarSettings } from '../../../sidecar/protocol';
import { createSidecarService } from '../../../sidecar/service';
import { bindApi, type RpcConnection } from '../../../sidecar/transport/protocolHandlers';
import { buildSdArgs } from '../../../sidecar/workers/sd/sdArgs';
import { imageSpec } from '../arbiterHarness';
import { ADVICE } from './advice';


/** Bad image specs, each with what its refusal must say. */
const BAD_SPECS: [string, Partial<ImageJobSpec> | Record<string, unknown>, RegExp][] = [
  ['width 0', { width: 0 }, /width must be a whole number of pixels above 0, not 0: use a multiple of 8 such as 512/],
  ['negative height', { height: -512 }, /height must be a whole number of pixels above 0, not -512/],
  ['width 100000', { width: 100_000 }, /width 100000 is above the 8192 px limit: use 8192 or less/],
  ['width 1001 (nearest 1000)', { width: 1001 }, /width 1001 is not a multiple of 8, which sd\.cpp requires: use 1000 or 1008\./],
  ['height 1007 (nearest 1008)', { height: 1007 }, /height 1007 is not a multiple of 8, which sd\.cpp requires: use 1008 or 1000\./],
  ['width 3', { width: 3 }, /use 8\./],
  ['fractional width', { width: 512.5 }, /width must be a whole number of pixels/],
  ['batch 0', { batch: 0 }, /batch must be a whole number of images per job, at least 1, not 0/],
  ['batch 1000', { batch: 1000 }, /batch 1000 is above the limit of 64 images per job: use 64 or less, or split the job/],
  ['steps 0', { steps: 0 }, /steps must be a whole number of sampling steps, at least 1, not 0/],
  ['steps 100000', { steps: 100_000 }, /steps 100000 is above the limit of 1000 sampling steps/],
  ['no model', { modelPath: '' }, /has no model: set vramRelay\.image\.modelPath/],
  ['NUL in the prompt', { prompt: 'a cat\0 on a mat' }, /prompt contains a NUL character .*: remove it/],
  ['NUL in the output path', { outputPath: '/tmp/out\0.png' }, /outputPath contains a NUL character/],
  ['NUL in a part path', { parts: { vae: '/models/vae\0.safetensors' } }, /parts\.vae contains a NUL character/],
  ['a huge prompt', { prompt: 'word '.repeat(40_000) }, /prompt is 200000 bytes long, above the limit of 65536: shorten it/],
  ['a huge negative prompt', { negativePrompt: '\u00e9'.repeat(40_000) }, /negativePrompt is 80000 bytes long/],
  ['an unknown part', { parts: { lora: '/models/x.safetensors' } }, /Unknown model part "lora": use vae, clipL/],
  ['a part that is not a path', { parts: { vae: 42 } }, /parts\.vae must be the path of a model file/],
  ['a seed past 2^53', { seed: 2 ** 60 }, /seed must be a whole number/],
  ['a non-finite cfg scale', { cfgScale: Number.POSITIVE_INFINITY }, /cfgScale must be a finite number, not Infinity: use a number such as 7/],
];

describe('bad image requests: admission checks', () => {
  for (const [what, change, expected] of BAD_SPECS) {
    it(`refuses ${what} and says what to do`, () => {
      const problem = validateJobSpec({ ...imageSpec(), ...change } as ImageJobSpec, DEFAULT_JOB_LIMITS, FULL_SD_CAPABILITIES);
      assert.ok(problem, `${what} was accepted`);
      assert.match(problem, expected);
      assert.match(problem, ADVICE, `no advice in: ${problem}`);
    });
  }

  it('accepts prompts with control characters other than NUL, and passes them to sd.cpp as one argument each', () => {
    const prompt = 'a cat\ton a mat\r\nin the \x1b[31mred\x1b[0m sun \u0007 \u202e reversed';
    const spec = { ...imageSpec(), prompt, negativePrompt: '\x01blurry\x7f', outputPath: '/tmp/out $(rm -rf ~) `x`.png' };
    assert.equal(validateJobSpec(spec, DEFAULT_JOB_LIMITS, FULL_SD_CAPABILITIES), null);
    const args = buildSdArgs(spec, undefined, FULL_SD_CAPABILITIES, spec.outputPath);
    assert.equal(args[args.indexOf('-p') + 1], prompt);
    assert.equal(args[args.indexOf('-n') + 1], '\x01blurry\x7f');
    assert.equal(args[args.indexOf('-o') + 1], spec.outputPath);
  });

  it('accepts a prompt right at the limit', () => {
    assert.equal(validateJobSpec({ ...imageSpec(), prompt: 'x'.repeat(DEFAULT_JOB_LIMITS.maxPromptBytes) }), null);
  });
});

/** A JSON-RPC connection that only records the handlers, so that a test can call them as the transport would. */
function recordingConnection(): RpcConnection & { call(method: string, params: unknown): Promise<unknown> } {
  const handlers = new Map<string, (...args: unknown[]) => unknown>();
  const token = { isCancellationRequested: false, onCancellationRequested: () => ({ dispose() {} }) };
  return {
    onRequest(method, handler) {
      handlers.set(method, handler as (...args: unknown[]) => unknown);
      return { dispose: () => handlers.delete(method) };
    },
    sendNotification() {},
    async call(method, params) {
      const handler = handlers.get(method);
      if (!handler) throw new Error(`no handler for ${method}`);
      // The transport passes the parsed JSON, so the params go through a JSON round trip first.
      return handler(JSON.parse(JSON.stringify(params)) as unknown, token);
    },
  };
}

/** Within `ms`, or a failure naming `what`. */
async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([promise, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

describe('bad image requests: through the JSON-RPC handlers and the service', () => {
  let root: string;
  let api: SidecarApi;
  let connection: ReturnType<typeof recordingConnection>;
  let binding: { dispose(): void };

  before(async () => {
    root = mkdtempSync(join(tmpdir(), 'vram-relay-bad-requests-'));
    api = createSidecarService({ log: () => undefined });
    connection = recordingConnection();
    binding = bindApi(connection, api);
    const settings: SidecarSettings = {
      device: 'simulated',
      simulatedCapacityMiB: 12_288,
      safetyMarginMiB: 512,
      pollIntervalMs: 1000,
      llm: { modelPath: '', engine: 'embedded', serverPath: '', contextSize: 4096, idleWarmSeconds: 0, idleColdSeconds: 0 },
      image: { binaryPath: '', modelPath: '', keepResident: false },
      storageDir: root,
      // No engine is started: a request that passes every check ends with the message that says to trust the workspace.
      allowBinaries: false,
    };
    await within(connection.call(Configure, settings), 30_000, 'configure');
  });

  after(async () => {
    binding.dispose();
    await api.dispose();
    rmSync(root, { recursive: true, force: true });
  });

  /** The refusal of one request: the InvalidParams message, or the failed job's message. */
  async function refusal(spec: unknown): Promise<string> {
    let submitted: { jobId: string };
    try {
      submitted = (await within(connection.call(SubmitJob, { spec }), 10_000, 'submitJob')) as { jobId: string };
    } catch (error) {
      assert.ok(error instanceof ResponseError, `submitJob threw ${String(error)}`);
      assert.equal(error.code, -32602, error.message);
      return error.message;
    }
    const done = (await within(connection.call(WaitJob, { jobId: submitted.jobId }), 10_000, 'waitJob')) as JobDoneParams;
    assert.equal(done.job.status, 'failed', JSON.stringify(done.job));
    return done.job.message ?? '';
  }

  for (const [what, change, expected] of BAD_SPECS) {
    it(`refuses ${what}`, { timeout: 20_000 }, async () => {
      const message = await refusal({ ...imageSpec(), ...change });
      assert.ok(expected.test(message) || /Invalid params for vramRelay\/submitJob: params\.spec\.\w+ must be/.test(message), message);
      assert.ok(ADVICE.test(message) || /must be (a positive integer|a number|a string|an object)/.test(message), `no advice in: ${message}`);
    });
  }

  it('refuses specs of the wrong shape with InvalidParams that names the field', { timeout: 20_000 }, async () => {
    const shapes: [unknown, RegExp][] = [
      [null, /params\.spec must be an object/],
      [{ ...imageSpec(), width: '512' }, /params\.spec\.width must be a positive integer/],
      [{ ...imageSpec(), width: 1e400 }, /params\.spec\.width must be a positive integer/],
      [{ ...imageSpec(), prompt: 42 }, /params\.spec\.prompt must be a string/],
      [{ ...imageSpec(), kind: 'video' }, /params\.spec\.kind must be 'image' or 'llm'/],
      [{ ...imageSpec(), parts: 'vae.safetensors' }, /params\.spec\.parts must be an object/],
    ];
    for (const [spec, expected] of shapes) assert.match(await refusal(spec), expected);
  });

  it('answers a request that passes every check with what to do to run it', { timeout: 20_000 }, async () => {
    assert.match(await refusal(imageSpec()), /No image engine is set up: set vramRelay\.image\.binaryPath/);
  });
});
