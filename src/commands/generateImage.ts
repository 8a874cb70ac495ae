/**
 * Generate Image: prompt (selection, argument, or an input box with an Enhance button), size, options, then the
 * plan; when the plan degrades something the user confirms first. A cancellable progress notification follows
 * the stages and steps. The image lands inside the workspace under a fresh name, with its parameters and plan
 * beside it, and opens.
 */

import { lstatSync, promises as fs } from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import type { Plan } from '../../sidecar/core/types';
import { PreviewPlan } from '../../sidecar/protocol';
import { writeFileExclusive } from '../exclusiveWrite';
import {
  parseSeed,
  parseSize,
  randomSeed,
  SIZE_PRESETS,
  sizeMultipleFor,
  toImageJobSpec,
  validateBatch,
  validateImageRequest,
  validatePrompt,
  validateSteps,
  type ImageRequest,
} from '../imageRequest';
import { progressMessage, progressPercent } from '../imageProgress';
import { JobFailedError, runJob } from '../jobRunner';
import { errorMessage, reportError } from '../notify';
import { isInside, outputFilesFor, promptSlug, resolveOutputFolder, uniqueBaseName } from '../outputPath';
import { describeNoFit, summarisePlan } from '../planSummary';
import { findPromptAt } from '../promptDetection';
import { readExtensionSettings, readSidecarSettings } from '../settings';
import type { Services } from '../services';
import { enhanceText } from './enhancePrompt';

/** Arguments for scripted use (code actions, tests, keybindings); anything missing is asked for. */
export interface GenerateImageArgs {
  prompt?: string;
  negativePrompt?: string;
  width?: number;
  height?: number;
  steps?: number;
  seed?: number;
  batch?: number;
  modelPath?: string;
  /** false: run a degraded plan without asking (scripts); a plan that does not fit is never run. */
  confirm?: boolean;
}

const LAST_SIZE_KEY = 'vramRelay.lastImageSize';
/** Names taken by runs in progress, so two runs started together never pick the same file. */
const reservedNames = new Set<string>();
const JSON_RPC_METHOD_NOT_FOUND = -32601;

function pickWorkspaceFolder(): vscode.WorkspaceFolder | undefined {
  const folders = vscode.workspace.workspaceFolders ?? [];
  const active = vscode.window.activeTextEditor?.document.uri;
  return (active && vscode.workspace.getWorkspaceFolder(active)) ?? folders[0];
}

function promptFromEditor(): string | undefined {
  const editor = vscode.window.activeTextEditor;
  if (!editor) return undefined;
  if (!editor.selection.isEmpty) return editor.document.getText(editor.selection).trim() || undefined;
  const line = editor.document.lineAt(editor.selection.active.line).text;
  return findPromptAt(line, editor.selection.active.character, editor.document.languageId)?.text;
}

/** An input box with an Enhance button that rewrites what was typed in place. */
function askPrompt(services: Services, initial: string): Promise<string | undefined> {
  return new Promise((resolve) => {
    const input = vscode.window.createInputBox();
    const enhance: vscode.QuickInputButton = { iconPath: new vscode.ThemeIcon('sparkle'), tooltip: 'Enhance prompt with the local LLM' };
    input.title = 'Generate Image (1/3): prompt';
    input.placeholder = 'a lighthouse on a cliff at dusk, oil painting';
    input.prompt = 'Describe the image. The ✨ button rewrites it with the local LLM.';
    input.value = initial;
    input.buttons = [enhance];
    input.ignoreFocusOut = true;
    let cancelEnhance: vscode.CancellationTokenSource | undefined;
    let done = false;
    const finish = (value: string | undefined) => {
      if (done) return;
      done = true;
      cancelEnhance?.cancel();
      input.dispose();
      resolve(value);
    };
    input.onDidChangeValue((value) => {
      input.validationMessage = value.length > 0 ? validatePrompt(value) : undefined;
    });
    input.onDidTriggerButton(async () => {
      const prompt = input.value;
      if (prompt.trim() === '') {
        input.validationMessage = 'Type a prompt first, then enhance it.';
        return;
      }
      cancelEnhance = new vscode.CancellationTokenSource();
      input.busy = true;
      input.enabled = false;
      input.prompt = 'Enhancing with the local LLM…';
      try {
        const result = await enhanceText(services, prompt, { token: cancelEnhance.token, onText: (soFar) => (input.value = soFar) });
        input.value = result;
        input.prompt = 'Enhanced. Edit it or press Enter to continue.';
      } catch (error) {
        input.value = prompt;
        input.validationMessage = `Could not enhance: ${errorMessage(error)}`;
      } finally {
        input.busy = false;
        input.enabled = true;
      }
    });
    input.onDidAccept(() => {
      const problem = validatePrompt(input.value);
      if (problem) input.validationMessage = problem;
      else finish(input.value.trim());
    });
    input.onDidHide(() => finish(undefined));
    input.show();
  });
}

async function askSize(services: Services, modelPath: string): Promise<{ width: number; height: number } | undefined> {
  const multiple = sizeMultipleFor(modelPath);
  const last = services.context.globalState.get<{ width: number; height: number }>(LAST_SIZE_KEY);
  type SizeItem = vscode.QuickPickItem & { size?: { width: number; height: number } };
  const items: SizeItem[] = SIZE_PRESETS.filter((p) => p.width % multiple === 0 && p.height % multiple === 0).map((p) => ({
    label: p.label,
    description: p.detail,
    size: { width: p.width, height: p.height },
  }));
  if (last) {
    const index = items.findIndex((i) => i.size?.width === last.width && i.size?.height === last.height);
    const [lastItem] = index >= 0 ? items.splice(index, 1) : [{ label: `${last.width} × ${last.height}`, size: last }];
    items.unshift({ ...lastItem, description: 'last used' });
  }
  items.push({ label: '$(edit) Custom size…', description: `multiples of ${multiple}, 64 to 4096 px` });
  const picked = await vscode.window.showQuickPick(items, { title: 'Generate Image (2/3): size', placeHolder: 'Image size (width × height)', ignoreFocusOut: true });
  if (!picked) return undefined;
  if (picked.size) return picked.size;
  const typed = await vscode.window.showInputBox({
    title: 'Generate Image: custom size',
    prompt: `Width x height in pixels, multiples of ${multiple} (this model), 64 to 4096.`,
    placeHolder: '1024x768',
    ignoreFocusOut: true,
    validateInput: (value) => {
      const parsed = parseSize(value, multiple);
      return 'error' in parsed ? parsed.error : undefined;
    },
  });
  if (!typed) return undefined;
  const parsed = parseSize(typed, multiple);
  return 'error' in parsed ? undefined : parsed;
}

/** The last step: Generate, or change steps, seed, batch or negative prompt and come back. */
async function askOptions(request: ImageRequest, seedIsRandom: boolean): Promise<ImageRequest | undefined> {
  let random = seedIsRandom;
  for (;;) {
    type OptionItem = vscode.QuickPickItem & { id: 'run' | 'steps' | 'seed' | 'batch' | 'negative' };
    const items: OptionItem[] = [
      { id: 'run', label: '$(play) Generate', description: `${request.width} × ${request.height}, ${path.basename(request.modelPath)}` },
      { id: 'steps', label: `$(list-ordered) Steps: ${request.steps}` },
      { id: 'seed', label: `$(symbol-number) Seed: ${random ? 'random' : request.seed}` },
      { id: 'batch', label: `$(layers) Batch: ${request.batch}` },
      { id: 'negative', label: `$(circle-slash) Negative prompt: ${request.negativePrompt || 'none'}` },
    ];
    const picked = await vscode.window.showQuickPick(items, { title: 'Generate Image (3/3): options', placeHolder: 'Enter to generate, or change an option', ignoreFocusOut: true });
    if (!picked) return undefined;
    if (picked.id === 'run') return request;
    if (picked.id === 'steps') {
      const value = await vscode.window.showInputBox({ title: 'Sampling steps', value: String(request.steps), validateInput: validateSteps, ignoreFocusOut: true });
      if (value !== undefined) request = { ...request, steps: Number(value) };
    } else if (picked.id === 'batch') {
      const value = await vscode.window.showInputBox({ title: 'Images in this run', value: String(request.batch), validateInput: validateBatch, ignoreFocusOut: true });
      if (value !== undefined) request = { ...request, batch: Number(value) };
    } else if (picked.id === 'seed') {
      const value = await vscode.window.showInputBox({
        title: 'Seed',
        prompt: 'A whole number reproduces an image; leave empty for a random seed.',
        value: random ? '' : String(request.seed),
        ignoreFocusOut: true,
        validateInput: (text) => {
          const parsed = parseSeed(text);
          return typeof parsed === 'object' ? parsed.error : undefined;
        },
      });
      if (value !== undefined) {
        const parsed = parseSeed(value);
        random = parsed === undefined;
        request = { ...request, seed: typeof parsed === 'number' ? parsed : randomSeed() };
      }
    } else if (picked.id === 'negative') {
      const value = await vscode.window.showInputBox({ title: 'Negative prompt', prompt: 'What the image should not show; empty for none.', value: request.negativePrompt ?? '', ignoreFocusOut: true });
      if (value !== undefined) request = { ...request, negativePrompt: value.trim() || undefined };
    }
  }
}

/** Asks the planner first; true when the job should run. */
async function confirmPlan(services: Services, request: ImageRequest, confirm: boolean): Promise<{ go: boolean; plan?: Plan }> {
  let plan: Plan;
  try {
    plan = await services.sidecar.request(PreviewPlan, { spec: toImageJobSpec(request, '') });
  } catch (error) {
    if ((error as { code?: number }).code === JSON_RPC_METHOD_NOT_FOUND) {
      services.sidecar.log.warn('This sidecar cannot preview plans; the job runs without a preview.');
      return { go: true };
    }
    throw error;
  }
  if (!plan.fits) {
    const choice = await vscode.window.showErrorMessage(`VRAM Relay: ${describeNoFit(plan)}`, 'Show Budget Panel', 'Free GPU Memory');
    if (choice === 'Show Budget Panel') services.panel.show();
    if (choice === 'Free GPU Memory') void vscode.commands.executeCommand('vramRelay.freeGpuMemory');
    return { go: false, plan };
  }
  const summary = summarisePlan(plan, request.batch);
  if (!summary || !confirm) return { go: true, plan };
  const choice = await vscode.window.showWarningMessage(
    summary,
    { modal: true, detail: `${plan.reason}\n\nThe image will be the same; only where and how it is computed changes.` },
    'Run',
  );
  return { go: choice === 'Run', plan };
}

interface SavedRun {
  images: string[];
  parameters: string;
}

async function runAndSave(services: Services, request: ImageRequest, workspaceRoot: string, folder: string, plan: Plan | undefined): Promise<SavedRun | undefined> {
  await fs.mkdir(folder, { recursive: true });
  // Checked again now that the folder exists: a link created since the setting was read must not take the images out.
  if (!isInside(workspaceRoot, folder)) {
    throw new Error(`The image folder ${folder} now leads outside the workspace (${workspaceRoot}). Set vramRelay.output.imageFolder to a folder inside it, such as assets/generated.`);
  }
  // lstat, so that even a dangling link counts as taken and is never written through.
  const taken = (name: string) => reservedNames.has(path.join(folder, name)) || lstatSync(path.join(folder, name), { throwIfNoEntry: false }) !== undefined;
  const base = uniqueBaseName(promptSlug(request.prompt), request.batch, taken);
  const files = outputFilesFor(base, request.batch);
  const reserved = files.all.map((name) => path.join(folder, name));
  for (const name of reserved) reservedNames.add(name);
  try {
    return await runReserved(services, request, folder, plan, files);
  } finally {
    for (const name of reserved) reservedNames.delete(name);
  }
}

async function runReserved(
  services: Services,
  request: ImageRequest,
  folder: string,
  plan: Plan | undefined,
  files: { output: string; parameters: string },
): Promise<SavedRun> {
  // The sidecar numbers a batch from this path's stem (see outputFilesFor).
  const outputPath = path.join(folder, files.output);
  const spec = toImageJobSpec(request, outputPath);
  const priority = readExtensionSettings().imagePriority;

  const done = await vscode.window.withProgress(
    { location: vscode.ProgressLocation.Notification, title: `Generating ${request.width} × ${request.height}`, cancellable: true },
    async (progress, token) => {
      let shown = 0;
      progress.report({ message: 'Queued' });
      return runJob(services.sidecar, spec, {
        priority,
        token,
        onProgress: (p) => {
          const percent = progressPercent(p);
          progress.report({ message: progressMessage(p), increment: percent > shown ? percent - shown : undefined });
          shown = Math.max(shown, percent);
        },
      });
    },
  );

  const outputs = (done.outputs && done.outputs.length > 0 ? done.outputs : [outputPath]).filter((file) => {
    if (isInside(folder, file)) return true;
    services.sidecar.log.warn(`Ignoring an output outside the image folder: ${file}`);
    return false;
  });
  const parametersPath = path.join(folder, files.parameters);
  const record = {
    prompt: request.prompt,
    negativePrompt: request.negativePrompt,
    model: request.modelPath,
    width: request.width,
    height: request.height,
    steps: request.steps,
    seed: request.seed,
    batch: request.batch,
    images: outputs.map((file) => path.basename(file)),
    jobId: done.job.id,
    attempts: done.job.attempt,
    plan: done.job.plan ?? plan,
    createdAt: new Date(done.job.endedAt ?? Date.now()).toISOString(),
  };
  try {
    await writeFileExclusive(parametersPath, `${JSON.stringify(record, null, 2)}\n`);
  } catch (error) {
    services.sidecar.log.warn(`Could not write ${parametersPath}: ${errorMessage(error)}`);
  }
  return { images: outputs, parameters: parametersPath };
}

export async function generateImageCommand(services: Services, given?: unknown): Promise<SavedRun | undefined> {
  // Menus pass the document's URI; only a plain object is taken as arguments.
  const args: GenerateImageArgs = given && typeof given === 'object' && !(given instanceof vscode.Uri) ? (given as GenerateImageArgs) : {};
  if (!vscode.workspace.isTrusted) {
    const choice = await vscode.window.showErrorMessage('VRAM Relay: image generation runs an engine binary, which untrusted workspaces never do. Trust this workspace to generate images.', 'Manage Workspace Trust');
    if (choice) void vscode.commands.executeCommand('workbench.trust.manage');
    return undefined;
  }
  const workspace = pickWorkspaceFolder();
  if (!workspace || workspace.uri.scheme !== 'file') {
    void vscode.window.showErrorMessage('VRAM Relay: open a folder first. Images are saved inside the workspace.');
    return undefined;
  }
  const settings = readExtensionSettings(workspace.uri);
  const where = resolveOutputFolder(workspace.uri.fsPath, settings.imageFolder);
  if ('error' in where) {
    const choice = await vscode.window.showErrorMessage(`VRAM Relay: ${where.error}`, 'Open Setting');
    if (choice) void vscode.commands.executeCommand('workbench.action.openSettings', 'vramRelay.output.imageFolder');
    return undefined;
  }
  const modelPath = args.modelPath ?? readSidecarSettings(services.storageDir).image.modelPath;
  if (!modelPath) {
    const choice = await vscode.window.showErrorMessage('VRAM Relay: no image model is set.', 'Select Models', 'Open Setting');
    if (choice === 'Select Models') void vscode.commands.executeCommand('vramRelay.selectModels', { role: 'image' });
    if (choice === 'Open Setting') void vscode.commands.executeCommand('workbench.action.openSettings', 'vramRelay.image.modelPath');
    return undefined;
  }

  const prompt = args.prompt ?? promptFromEditor() ?? (await askPrompt(services, ''));
  if (!prompt) return undefined;
  const size = args.width && args.height ? { width: args.width, height: args.height } : await askSize(services, modelPath);
  if (!size) return undefined;
  await services.context.globalState.update(LAST_SIZE_KEY, size);

  let request: ImageRequest = {
    prompt,
    negativePrompt: args.negativePrompt,
    modelPath,
    width: size.width,
    height: size.height,
    steps: args.steps ?? settings.defaultSteps,
    batch: args.batch ?? 1,
    seed: args.seed ?? randomSeed(),
  };
  const scripted = args.prompt !== undefined && args.width !== undefined && args.height !== undefined;
  if (!scripted) {
    const chosen = await askOptions(request, args.seed === undefined);
    if (!chosen) return undefined;
    request = chosen;
  }
  const problems = validateImageRequest(request);
  if (problems.length > 0) {
    void vscode.window.showErrorMessage(`VRAM Relay: ${problems.join(' ')}`);
    return undefined;
  }

  try {
    const { go, plan } = await confirmPlan(services, request, args.confirm !== false);
    if (!go) return undefined;
    const saved = await runAndSave(services, request, workspace.uri.fsPath, where.folder, plan);
    if (!saved || saved.images.length === 0) return saved;
    await vscode.commands.executeCommand('vscode.open', vscode.Uri.file(saved.images[0]), { preview: false });
    if (saved.images.length > 1) {
      void vscode.window.showInformationMessage(`VRAM Relay: saved ${saved.images.length} images in ${path.relative(workspace.uri.fsPath, where.folder)}.`);
    }
    return saved;
  } catch (error) {
    const extra = error instanceof JobFailedError ? ['Show Budget Panel'] : [];
    await reportError(services.sidecar, 'Generate image', error, ...extra);
    return undefined;
  }
}
