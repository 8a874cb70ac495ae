/**
 * The figures the arbiter plans with: image and LLM costs from the model headers, corrected by calibration.
 * Model headers are read once per file; calibration records from the workers' logged buffers are added as jobs
 * run and written to `<storageDir>/calibration.json` (atomically, one write at a time).
 */

import { join } from 'node:path';
import type { Log } from '../api';
import type { MeasuredEvent } from '../core/arbiter';
import { CalibrationStore, loadCalibrationFile, saveCalibrationFile } from '../core/calibration';
import { estimateImageJob } from '../core/estimators/imageEstimator';
import { estimateLlm, layersThatFit } from '../core/estimators/llmEstimator';
import { LLM_KV_TYPE, recordsFromMeasured } from '../core/estimators/measuredRecords';
import type { Bytes, ImageJobCosts, ImageJobSpec, LlmCosts, SdCapabilities } from '../core/types';
import { readImageModelInfo, type ImageModelInfo } from '../models/imageModelInfo';
import { readLlmModelMeta, type LlmModelMeta } from '../models/llmModelMeta';


export interface LlmCostSettings {
  modelPath: string;
  contextSize: number;
  /** Bytes the LLM may use on the device (total minus margin): decides how many layers go there. */
  deviceBudget: Bytes;
  backend: string;
}

export class ModelCosts {
  private readonly imageModels = new Map<string, Promise<ImageModelInfo>>();
  private readonly llmModels = new Map<string, Promise<LlmModelMeta>>();
  private calibration = new CalibrationStore();
  private loaded: Promise<void> = Promise.resolve();
  private saving: Promise<void> = Promise.resolve();
  private file: string | undefined;

  constructor(private readonly log: Log) {}

  /** Loads `<storageDir>/calibration.json` (an empty store when there is none). */
  useStorage(storageDir: string): void {
    const file = storageDir ? join(storageDir, 'calibration.json') : undefined;
    if (file === this.file) return;
    this.file = file;
    if (!file) return;
    this.loaded = loadCalibrationFile(file).then(
      ({ store, problem }) => {
        this.calibration = store;
        if (problem) this.log('warn', problem);
        if (store.size > 0) this.log('info', `calibration: ${store.size} measurements loaded from ${file}`);
      },
      (error: unknown) => this.log('warn', `could not read the calibration file ${file}: ${messageOf(error)}`),
    );
  }

  async image(spec: ImageJobSpec, capabilities: SdCapabilities): Promise<ImageJobCosts> {
    await this.loaded;
    const model = await this.imageModel(spec);
    return estimateImageJob(
      model,
      { width: spec.width, height: spec.height, batch: spec.batch, frames: spec.frames ?? 1, steps: spec.steps },
      { backend: capabilities.backend, calibration: this.calibration },
    );
  }

  /** The LLM's figures, with as many layers on the device as fit in its budget. */
  async llm(settings: LlmCostSettings): Promise<LlmCosts> {
    await this.loaded;
    const meta = await this.llmModel(settings.modelPath);
    const options = { backend: settings.backend, calibration: this.calibration };
    const gpuLayers = layersThatFit(meta, settings.deviceBudget, settings.contextSize, LLM_KV_TYPE, options);
    return estimateLlm(meta, { gpuLayers, contextSize: settings.contextSize, kvType: LLM_KV_TYPE, backend: settings.backend }, this.calibration);
  }

  /** Turns an arbiter `measured` event into calibration records and saves them. */
  async record(event: MeasuredEvent, backend: SdCapabilities['backend'], llmCosts: LlmCosts | null): Promise<void> {
    const spec = event.job.spec;
    const imageModel = spec.kind === 'image' ? await this.imageModel(spec).catch(() => undefined) : undefined;
    const llmMeta = spec.kind === 'llm' && llmCosts ? await this.llmModel(llmCosts.modelPath).catch(() => undefined) : undefined;
    const records = recordsFromMeasured(event, {
      backend,
      at: Date.now(),
      imageModel,
      llm: llmCosts && llmMeta ? { costs: llmCosts, meta: llmMeta } : undefined,
    });
    const added = this.calibration.addAll(records);
    if (added === 0 || !this.file) return;
    const file = this.file;
    const store = this.calibration;
    this.saving = this.saving.then(() =>
      saveCalibrationFile(store, file).catch((error: unknown) => this.log('warn', `could not save calibration to ${file}: ${messageOf(error)}`)),
    );
    await this.saving;
  }

  /** Waits for the last calibration write. */
  flush(): Promise<void> {
    return this.saving;
  }

  private imageModel(spec: ImageJobSpec): Promise<ImageModelInfo> {
    const key = JSON.stringify([spec.modelPath, spec.parts ?? {}]);
    return cached(this.imageModels, key, () => readImageModelInfo(spec.modelPath, spec.parts));
  }

  private llmModel(path: string): Promise<LlmModelMeta> {
    return cached(this.llmModels, path, () => readLlmModelMeta(path));
  }
}

/** Caches successes only, so that a file the user fixes is read again. */
function cached<T>(map: Map<string, Promise<T>>, key: string, read: () => Promise<T>): Promise<T> {
  let entry = map.get(key);
  if (!entry) {
    entry = read();
    map.set(key, entry);
    entry.catch(() => map.delete(key));
  }
  return entry;
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
