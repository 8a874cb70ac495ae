/**
 * Minimal shape checks of request parameters arriving over JSON-RPC, so that a malformed call from a local app is
 * answered with InvalidParams and a sentence saying what to fix, instead of failing somewhere deep in the service.
 * The service still owns the meaning of the values (does the model exist, does the size fit).
 */

import { LLM_STATES_BY_FOOTPRINT } from '../core/types';
import type { JobPriority, LlmTask } from '../core/types';
import type {
  CancelJobParams,
  ConfigureParams,
  GetDecisionsParams,
  PreviewPlanParams,
  SetLlmStateParams,
  SubmitJobParams,
  WaitJobParams,
} from '../protocol';

/** Thrown when parameters have the wrong shape; the transport answers JSON-RPC InvalidParams with its message. */
export class InvalidParamsError extends Error {
  override readonly name = 'InvalidParamsError';
}

const PRIORITIES: readonly JobPriority[] = ['interactive', 'normal', 'batch'];
const LLM_TASKS: readonly LlmTask[] = ['completion', 'infill', 'chat', 'enhancePrompt', 'tagImage'];

type Fields = Record<string, unknown>;

function object(value: unknown, what: string): Fields {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new InvalidParamsError(`${what} must be an object.`);
  }
  return value as Fields;
}

function string(fields: Fields, key: string, what: string, optional = false): void {
  const value = fields[key];
  if (optional && value === undefined) return;
  if (typeof value !== 'string') throw new InvalidParamsError(`${what}.${key} must be a string.`);
}

function nonEmptyString(fields: Fields, key: string, what: string): void {
  string(fields, key, what);
  if ((fields[key] as string).length === 0) throw new InvalidParamsError(`${what}.${key} must not be empty.`);
}

function finiteNumber(fields: Fields, key: string, what: string, optional = false): void {
  const value = fields[key];
  if (optional && value === undefined) return;
  if (typeof value !== 'number' || !Number.isFinite(value)) {
    throw new InvalidParamsError(`${what}.${key} must be a number.`);
  }
}

function positiveInteger(fields: Fields, key: string, what: string, optional = false): void {
  const value = fields[key];
  if (optional && value === undefined) return;
  if (typeof value !== 'number' || !Number.isInteger(value) || value <= 0) {
    throw new InvalidParamsError(`${what}.${key} must be a positive integer.`);
  }
}

function boolean(fields: Fields, key: string, what: string, optional = false): void {
  if (optional && fields[key] === undefined) return;
  if (typeof fields[key] !== 'boolean') throw new InvalidParamsError(`${what}.${key} must be true or false.`);
}

function oneOf(fields: Fields, key: string, allowed: readonly string[], what: string, optional = false): void {
  const value = fields[key];
  if (optional && value === undefined) return;
  if (typeof value !== 'string' || !allowed.includes(value)) {
    throw new InvalidParamsError(`${what}.${key} must be one of ${allowed.map((v) => `'${v}'`).join(', ')}.`);
  }
}

export function checkConfigure(params: unknown): ConfigureParams {
  const p = object(params, 'params');
  oneOf(p, 'device', ['auto', 'simulated'], 'params');
  finiteNumber(p, 'simulatedCapacityMiB', 'params');
  finiteNumber(p, 'safetyMarginMiB', 'params');
  finiteNumber(p, 'pollIntervalMs', 'params');
  const llm = object(p.llm, 'params.llm');
  string(llm, 'modelPath', 'params.llm');
  oneOf(llm, 'engine', ['embedded', 'server'], 'params.llm');
  string(llm, 'serverPath', 'params.llm');
  positiveInteger(llm, 'contextSize', 'params.llm');
  finiteNumber(llm, 'idleWarmSeconds', 'params.llm');
  finiteNumber(llm, 'idleColdSeconds', 'params.llm');
  boolean(llm, 'cpuWhileImageRuns', 'params.llm', true);
  const image = object(p.image, 'params.image');
  string(image, 'binaryPath', 'params.image');
  string(image, 'modelPath', 'params.image');
  boolean(image, 'keepResident', 'params.image');
  string(p, 'storageDir', 'params');
  boolean(p, 'allowBinaries', 'params');
  return params as ConfigureParams;
}

/** `getDecisions` takes optional filters; no params at all means everything. */
export function checkGetDecisions(params: unknown): GetDecisionsParams {
  if (params === undefined || params === null) return {};
  const p = object(params, 'params');
  string(p, 'jobId', 'params', true);
  finiteNumber(p, 'sinceSeq', 'params', true);
  return p as GetDecisionsParams;
}

function checkSpec(value: unknown): void {
  const spec = object(value, 'params.spec');
  if (spec.kind === 'image') {
    // Emptiness and limits are the service's admission checks (core/jobValidation), with their own advice.
    string(spec, 'modelPath', 'params.spec');
    string(spec, 'prompt', 'params.spec');
    string(spec, 'negativePrompt', 'params.spec', true);
    positiveInteger(spec, 'width', 'params.spec');
    positiveInteger(spec, 'height', 'params.spec');
    positiveInteger(spec, 'batch', 'params.spec');
    positiveInteger(spec, 'steps', 'params.spec');
    finiteNumber(spec, 'seed', 'params.spec');
    finiteNumber(spec, 'cfgScale', 'params.spec', true);
    positiveInteger(spec, 'frames', 'params.spec', true);
    string(spec, 'outputPath', 'params.spec');
    if (spec.parts !== undefined) object(spec.parts, 'params.spec.parts');
  } else if (spec.kind === 'llm') {
    oneOf(spec, 'task', LLM_TASKS, 'params.spec');
    positiveInteger(spec, 'contextSize', 'params.spec');
    string(spec, 'prompt', 'params.spec', true);
    string(spec, 'prefix', 'params.spec', true);
    string(spec, 'suffix', 'params.spec', true);
    positiveInteger(spec, 'maxTokens', 'params.spec', true);
    finiteNumber(spec, 'temperature', 'params.spec', true);
    if (spec.messages !== undefined && !Array.isArray(spec.messages)) {
      throw new InvalidParamsError('params.spec.messages must be an array of {role, content}.');
    }
  } else {
    throw new InvalidParamsError(`params.spec.kind must be 'image' or 'llm'.`);
  }
}

export function checkPreviewPlan(params: unknown): PreviewPlanParams {
  const p = object(params, 'params');
  checkSpec(p.spec);
  return p as unknown as PreviewPlanParams;
}

export function checkSubmitJob(params: unknown): SubmitJobParams {
  const p = object(params, 'params');
  checkSpec(p.spec);
  oneOf(p, 'priority', PRIORITIES, 'params', true);
  return p as unknown as SubmitJobParams;
}

function checkJobId(params: unknown): { jobId: string } {
  const p = object(params, 'params');
  nonEmptyString(p, 'jobId', 'params');
  return p as { jobId: string };
}

export const checkCancelJob: (params: unknown) => CancelJobParams = checkJobId;
export const checkWaitJob: (params: unknown) => WaitJobParams = checkJobId;

export function checkSetLlmState(params: unknown): SetLlmStateParams {
  const p = object(params, 'params');
  oneOf(p, 'state', LLM_STATES_BY_FOOTPRINT, 'params');
  return p as unknown as SetLlmStateParams;
}

/** Requests without parameters accept none, null or an object, which is ignored (clients differ in what they send). */
export function checkNoParams(params: unknown): void {
  if (params === undefined || params === null) return;
  object(params, 'params');
}
