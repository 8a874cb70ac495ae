/**
 * Estimator accuracy: every published figure of memory-facts.md and every calibration record, estimate against
 * measurement, with PASS/MISS per row and per category (issue 5 targets: VAE decode and diffusion buffers within
 * 10%, LLM weights and KV cache within 5%).
 *
 *   node --import tsx bench/estimator-accuracy.ts [--calibration FILE]... [--out DIR] [--no-write]
 *   node --import tsx bench/estimator-accuracy.ts --measure-llama-cpu FILE
 *
 * Calibration records come from each --calibration file, or else from the calibration files the sidecar keeps
 * (VS Code's global storage for the extension, and the state folder of `--serve`), when they exist. Files are only
 * read. The table goes to the terminal and to DIR/estimator-accuracy.md (default docs/bench).
 *
 * --measure-llama-cpu runs llama.cpp (node-llama-cpp, CPU) on small models written on the fly, turns the buffers it
 * logs into calibration records the way the sidecar does, and writes them to FILE (how
 * test/fixtures/calibration/llama-cpu.json was made). The estimates stored with them are the estimator's priors.
 */

import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { homedir, tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { CalibrationStore, recordsFromLlmRun, saveCalibrationFile, type CalibrationRecord } from '../sidecar/core/calibration';
import {
  calibrationRows,
  imageRecordPrior,
  llmOffloaded,
  llmRecordPrior,
  markdownSummary,
  markdownTable,
  notesList,
  storedEstimateComparable,
  summarize,
  textSummary,
  textTable,
  type AccuracyRow,
  type RecordPrior,
} from '../sidecar/core/estimators/accuracy';
import { KV_BYTES_PER_ELEMENT } from '../sidecar/core/estimators/figures';
import { PUBLISHED_NOT_COMPARED, publishedComparisons } from '../sidecar/core/estimators/publishedFigures';
import { readImageModelInfo, type ImageModelInfo } from '../sidecar/models/imageModelInfo';
import { readLlmModelMeta, type LlmModelMeta } from '../sidecar/models/llmModelMeta';
import { defaultStateDir } from '../sidecar/transport/tokenFile';
import { parseLlamaLogLine, toMeasuredBuffers, type LlamaLogEvent } from '../sidecar/workers/llm/llamaLogParser';
import { writeLlamaGguf, type LlamaGgufOptions } from '../test/helpers/ggufWriter';
import { publishedModels } from '../test/unit/estimators/publishedModels';

const EXTENSION_ID = 'vram-relay.vram-relay';
const USAGE = `Usage:
  node --import tsx bench/estimator-accuracy.ts [--calibration FILE]... [--out DIR] [--no-write]
  node --import tsx bench/estimator-accuracy.ts --measure-llama-cpu FILE

  --calibration FILE        a calibration.json the sidecar wrote (repeatable). Default: the ones found in VS Code's
                            global storage (User/globalStorage/${EXTENSION_ID}/calibration.json) and in the
                            state folder of --serve (${join(defaultStateDir(), 'calibration.json')}).
  --out DIR                 where estimator-accuracy.md goes (default docs/bench); --no-write: terminal only.
  --measure-llama-cpu FILE  measure llama.cpp on this CPU with small generated models; write the records to FILE.`;

export class UsageError extends Error {}

// ---------------------------------------------------------------------------------------------------------------
// Where the sidecar keeps calibration data

/** The calibration files the sidecar may have written on this machine, most likely first. */
export function defaultCalibrationFiles(platform: NodeJS.Platform = process.platform, env: NodeJS.ProcessEnv = process.env, home: string = homedir()): string[] {
  const userData: string[] = [];
  const products = ['Code', 'Code - Insiders', 'VSCodium', 'Code - OSS'];
  if (platform === 'win32') {
    const appData = env.APPDATA || join(home, 'AppData', 'Roaming');
    userData.push(...products.map((product) => join(appData, product)));
  } else if (platform === 'darwin') {
    userData.push(...products.map((product) => join(home, 'Library', 'Application Support', product)));
  } else {
    const config = env.XDG_CONFIG_HOME && env.XDG_CONFIG_HOME.startsWith('/') ? env.XDG_CONFIG_HOME : join(home, '.config');
    userData.push(...products.map((product) => join(config, product)));
  }
  // VS Code Server (remote hosts, where a workspace extension runs) and code-server.
  userData.push(join(home, '.vscode-server', 'data'), join(home, '.local', 'share', 'code-server'));
  return [...userData.map((dir) => join(dir, 'User', 'globalStorage', EXTENSION_ID, 'calibration.json')), join(defaultStateDir(platform, env, home), 'calibration.json')];
}

/** Reads a calibration file without touching it (the sidecar's loader moves a corrupt file aside; this must not). */
async function readCalibration(file: string): Promise<{ records: CalibrationRecord[]; dropped: number }> {
  let content: unknown;
  try {
    content = JSON.parse(await readFile(file, 'utf8'));
  } catch (error) {
    const why = (error as NodeJS.ErrnoException).code === 'ENOENT' ? 'it does not exist' : error instanceof SyntaxError ? 'it is not valid JSON' : String(error);
    throw new UsageError(`Cannot read calibration file ${file}: ${why}. Give a calibration.json the sidecar wrote.`);
  }
  const listed = (content as { records?: unknown } | null)?.records;
  if (!Array.isArray(listed)) throw new UsageError(`${file} is not a calibration file: it has no "records" list.`);
  const records = CalibrationStore.fromJSON(content).all();
  return { records, dropped: listed.length - records.length };
}

// ---------------------------------------------------------------------------------------------------------------
// Priors for records

class ModelReader {
  private readonly llm = new Map<string, Promise<LlmModelMeta>>();
  private readonly image = new Map<string, Promise<ImageModelInfo>>();

  llmModel(path: string): Promise<LlmModelMeta> {
    if (!this.llm.has(path)) this.llm.set(path, readLlmModelMeta(path));
    return this.llm.get(path)!;
  }

  imageModel(path: string): Promise<ImageModelInfo> {
    if (!this.image.has(path)) this.image.set(path, readImageModelInfo(path));
    return this.image.get(path)!;
  }
}

/**
 * The estimator's prior for one record, recomputed from the model file (a stored estimate may already include
 * calibration), or the stored estimate when the file cannot be read and the stored figure is the same buffer's.
 */
async function priorOf(record: CalibrationRecord, all: readonly CalibrationRecord[], models: ModelReader): Promise<RecordPrior> {
  const offloadedRun = llmOffloaded(record, all);
  const stored: RecordPrior | undefined = storedEstimateComparable(record, offloadedRun) ? { value: record.estimate!, basis: 'estimate stored with the record' } : undefined;
  if (record.key.startsWith('time.')) return stored ?? { missing: 'no estimate stored with this time' };
  if (!existsSync(record.model)) return stored ?? { missing: 'model file not found here, and no comparable estimate stored with the record' };
  try {
    if (record.key.startsWith('llm.')) return llmRecordPrior(await models.llmModel(record.model), record, offloadedRun);
    return imageRecordPrior(await models.imageModel(record.model), record);
  } catch (error) {
    const why = error instanceof Error ? error.message : String(error);
    return stored ? { ...stored, basis: `${stored.basis} (model file unreadable)` } : { missing: `model file unreadable: ${why}` };
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The report

export interface CalibrationSection {
  file: string;
  rows: AccuracyRow[];
  dropped: number;
}

function displayPath(file: string): string {
  const absolute = resolve(file);
  const inRepo = relative(process.cwd(), absolute);
  if (!inRepo.startsWith('..')) return inRepo;
  const home = homedir();
  return absolute.startsWith(home) ? `~${absolute.slice(home.length)}` : absolute;
}

function printSection(title: string, rows: readonly AccuracyRow[]): void {
  console.log(`\n${title}\n`);
  console.log(textTable(rows));
  console.log('');
  console.log(textSummary(summarize(rows)));
  const notes = notesList(rows);
  if (notes.length) console.log(`\nNotes:\n${notes.join('\n')}`);
}

const METHOD = `## How the estimates relate to the figures

The figures are test data only: the estimators never read them (sidecar/core/estimators/publishedFigures.ts holds
them, figures.ts the estimator constants). Per category:

- **VAE decode**: derived from the KL VAE decoder's shapes (128 x [1, 2, 4, 4] channels, 3x3 convolutions, f32
  activations, f16 im2col) and ggml's allocator, which keeps a tensor until its last reader has run. The peak is the
  first full-resolution resnet: its input (256 channels, kept for the shortcut), the normalised input, and the
  convolution's buffer: 256 x 9 x 2 B of im2col (6656 B/px) or, with a direct convolution, the 128-channel output
  (2560 B/px). Nothing is fitted. Two choices were informed by the figures: Vulkan is taken to convolve directly
  by default (memory-facts.md:12), and the ".25 MB" the logs add is left out (0.004%).
- **Diffusion**: without flash attention, ComfyUI's published efficient-attention formula and per-model factors
  for the part linear in latent area, plus the attention score matrix from the architecture (tokens^2 x heads x
  4 B at the first self-attention; heads from the model width, Flux's 256 text tokens from sd.cpp's T5 chunk
  length). With flash attention the scores go; for the UNets the largest convolution step stays (the first
  full-resolution output block: 960 channels in, im2col f16, two skips waiting: 27520 B per latent pixel).
  Nothing is fitted to sd.cpp's logs.
- **Image model weights**: the estimator sums the tensor sizes in the model files' headers. The rows use tensor
  lists built from each architecture's configuration (test/unit/models/imageCheckpoints.ts), so they check the
  header reading and the component split against what people quote.
- **LLM weights and KV cache**: GGUF tensor sizes (ggml block sizes) per layer, and the KV formula per layer from
  the header's shapes. memory-facts.md publishes the KV formula but no measured weights; the measured rows come
  from calibration records (llama.cpp's own buffer logs).
- **Whole jobs**: sums of the estimates under sd.cpp's defaults (every part resident, the largest stage buffer
  on top), or all LLM layers on the device.
- **LLM compute buffer** (calibration rows, no target in issue 5): constants fitted on llama.cpp's CPU logs of
  three other model shapes (figures.ts); the fixture's models and contexts are not among them.
`;

export function accuracyMarkdown(published: readonly AccuracyRow[], sections: readonly CalibrationSection[], searched: readonly string[], explicit: boolean): string {
  const out: string[] = [];
  out.push('# Estimator accuracy', '');
  const args = process.argv.slice(2).filter((arg) => arg !== '--no-write');
  out.push(`Made by \`node --import tsx bench/estimator-accuracy.ts${args.length ? ` ${args.join(' ')}` : ''}\`. \`npm run bench:estimators\` runs the script and rewrites this file; do not edit it by hand.`, '');
  out.push(
    'Estimates of the memory estimators (sidecar/core/estimators) against every figure of',
    'shared/reference/memory-facts.md they can be held to, and against calibration records (measured buffers).',
    'Issue 5 targets: VAE decode and diffusion buffers within 10%, LLM weights and KV cache within 5%.',
    'Error = (estimate - measured) / measured: positive is the safe side. Sizes in MiB; `MB` in the sources is',
    'sd.cpp\'s log unit (MiB), `GB` quotes are read as 10^9 bytes.',
    '',
  );
  const all = [...published, ...sections.flatMap((section) => section.rows)];
  out.push('## Summary (published figures and calibration records)', '', markdownSummary(summarize(all)), '');
  out.push('## Published figures (memory-facts.md)', '', markdownTable(published), '');
  const notes = notesList(published);
  if (notes.length) out.push('Notes on rows that miss or are not scored, and on where a figure\'s case comes from:', '', ...notes, '');
  out.push('### Figures not compared, and why', '');
  for (const entry of PUBLISHED_NOT_COMPARED) out.push(`- ${entry.source}, ${entry.figure}: ${entry.reason}`);
  out.push('');
  out.push('## Calibration records', '');
  if (sections.length === 0) {
    out.push(explicit ? 'The given calibration files hold no records.' : 'No calibration file found on the machine that made this table. Looked in:', '');
    if (!explicit) out.push(...searched.map((file) => `- \`${displayPath(file)}\``), '');
  }
  for (const section of sections) {
    out.push(`From \`${displayPath(section.file)}\`${section.dropped ? ` (${section.dropped} malformed rows skipped)` : ''}:`, '');
    if (section.rows.length === 0) {
      out.push('No records.', '');
      continue;
    }
    out.push(markdownTable(section.rows), '', markdownSummary(summarize(section.rows)), '');
    const sectionNotes = notesList(section.rows);
    if (sectionNotes.length) out.push(...sectionNotes, '');
  }
  out.push(METHOD);
  return out.join('\n');
}

async function writeAtomically(file: string, text: string): Promise<void> {
  await mkdir(dirname(file), { recursive: true });
  const temporary = `${file}.${process.pid}.tmp`;
  try {
    await writeFile(temporary, text, 'utf8');
    await rename(temporary, file);
  } catch (error) {
    await rm(temporary, { force: true });
    throw error;
  }
}

async function report(calibrationFiles: string[], outDir: string | undefined): Promise<void> {
  const published = publishedComparisons(publishedModels());
  printSection('Published figures (memory-facts.md)', published);

  const explicit = calibrationFiles.length > 0;
  const searched = explicit ? calibrationFiles : defaultCalibrationFiles();
  const files = explicit ? calibrationFiles : searched.filter((file) => existsSync(file));
  const sections: CalibrationSection[] = [];
  const models = new ModelReader();
  for (const file of files) {
    try {
      sections.push(await calibrationSection(file, models));
    } catch (error) {
      // A file named on the command line must be usable; one found in a default place is only reported.
      if (explicit || !(error instanceof UsageError)) throw error;
      console.warn(`Skipping ${file}: ${error.message}`);
    }
  }
  if (sections.length === 0) {
    console.log(`\nCalibration records: none. No calibration file at:\n${searched.map((file) => `  ${file}`).join('\n')}`);
    console.log('Run some jobs with the sidecar (it records what the engines log), or pass --calibration FILE.');
  }
  for (const section of sections) {
    if (section.dropped) console.log(`\n${section.file}: ${section.dropped} malformed rows skipped.`);
    if (section.rows.length) printSection(`Calibration records (${displayPath(section.file)})`, section.rows);
    else console.log(`\n${section.file}: no records.`);
  }

  const all = [...published, ...sections.flatMap((section) => section.rows)];
  console.log(`\nAll rows\n\n${textSummary(summarize(all))}`);

  if (outDir !== undefined) {
    const file = join(outDir, 'estimator-accuracy.md');
    await writeAtomically(file, accuracyMarkdown(published, sections, searched, explicit));
    console.log(`\nWrote ${displayPath(file)}`);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Measuring llama.cpp on the CPU

/** Shapes and contexts unlike the ones the compute-buffer constants were fitted on (figures.ts). */
export const MEASURED_SHAPES: (LlamaGgufOptions & { name: string })[] = [
  { name: 'llama-3x768-h12-kv4-ffn2048-q4_0', layers: 3, embeddingLength: 768, headCount: 12, headCountKv: 4, feedForwardLength: 2048, weightType: 'q4_0' },
  { name: 'llama-2x384-h6-kv6-ffn1536-f16', layers: 2, embeddingLength: 384, headCount: 6, headCountKv: 6, feedForwardLength: 1536, weightType: 'f16' },
];
/** Options the measured models were written with (the same options give the same file). */
export function measuredShapeOptions(index: number): LlamaGgufOptions {
  return { ...MEASURED_SHAPES[index], contextLength: 8192, seed: index + 1 };
}

const MEASURED_CONTEXTS = [
  { contextSize: 3072, flashAttention: false, batchSize: 512 },
  { contextSize: 6144, flashAttention: true, batchSize: 256 },
];

/** The model name the measured records carry (the file itself was temporary). */
export function measuredModelName(shape: string): string {
  return `ggufWriter:${shape}`;
}

async function measureLlamaCpu(outFile: string): Promise<void> {
  const { getLlama, LlamaLogLevel } = await import('node-llama-cpp');
  const { version } = JSON.parse(await readFile(join(process.cwd(), 'node_modules', 'node-llama-cpp', 'package.json'), 'utf8')) as { version: string };
  const lines: string[] = [];
  const llama = await getLlama({ gpu: false, logLevel: LlamaLogLevel.debug, logger: (_level, message) => lines.push(...message.split('\n')) });
  const dir = await mkdtemp(join(tmpdir(), 'vram-relay-measure-'));
  const store = new CalibrationStore();
  try {
    for (const [index, shape] of MEASURED_SHAPES.entries()) {
      const path = join(dir, `${shape.name}.gguf`);
      await writeLlamaGguf(path, measuredShapeOptions(index));
      const meta = await readLlmModelMeta(path);
      lines.length = 0;
      const model = await llama.loadModel({ modelPath: path, gpuLayers: 0 });
      const loadLines = [...lines];
      try {
        for (const [contextIndex, options] of MEASURED_CONTEXTS.entries()) {
          lines.length = 0;
          const context = await model.createContext(options);
          await context.dispose();
          // The weights were logged once, at load: they go with the first context's records.
          const logged = [...(contextIndex === 0 ? loadLines : []), ...lines];
          const buffers = logged.map(parseLlamaLogLine).filter((event): event is Extract<LlamaLogEvent, { type: 'buffer' }> => event?.type === 'buffer');
          const context0 = {
            model: measuredModelName(shape.name),
            backend: 'cpu',
            gpuLayers: 0,
            contextSize: options.contextSize,
            kvType: 'f16',
            kvBytesPerElement: KV_BYTES_PER_ELEMENT.f16,
            gpuBlocks: 0,
            ubatch: options.batchSize,
            flashAttention: options.flashAttention,
            source: `node-llama-cpp ${version} on the CPU; model written by test/helpers/ggufWriter.ts; estimate: the prior when measured`,
            at: Date.now(),
          };
          for (const record of recordsFromLlmRun(context0, toMeasuredBuffers(buffers))) {
            const prior = llmRecordPrior(meta, record, false);
            store.add({ ...record, estimate: 'value' in prior ? prior.value : undefined });
          }
        }
      } finally {
        await model.dispose();
      }
    }
  } finally {
    await llama.dispose();
    await rm(dir, { recursive: true, force: true });
  }
  await saveCalibrationFile(store, outFile);
  console.log(`Wrote ${store.size} records to ${outFile}`);
}

// ---------------------------------------------------------------------------------------------------------------

/** A calibration file as rows, each record against the estimator's prior. */
export async function calibrationSection(file: string, models = new ModelReader()): Promise<CalibrationSection> {
  const { records, dropped } = await readCalibration(file);
  const priors = new Map<CalibrationRecord, RecordPrior>();
  for (const record of records) priors.set(record, await priorOf(record, records, models));
  return { file, rows: calibrationRows(records, (record) => priors.get(record)!), dropped };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      calibration: { type: 'string', multiple: true },
      out: { type: 'string', default: 'docs/bench' },
      'no-write': { type: 'boolean', default: false },
      'measure-llama-cpu': { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return;
  }
  if (values['measure-llama-cpu']) return measureLlamaCpu(values['measure-llama-cpu']);
  await report(values.calibration ?? [], values['no-write'] ? undefined : values.out);
}

// Run only as a script, so that tests can import the functions above.
if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) void main().catch(failed);

function failed(error: unknown): void {
  if (error instanceof UsageError || (error as { code?: string }).code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') {
    console.error(`${(error as Error).message}\n\n${USAGE}`);
    process.exitCode = 2;
    return;
  }
  console.error(error);
  process.exitCode = 1;
}
