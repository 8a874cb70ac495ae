/**
 * Find Engines: looks for sd.cpp and llama-server on PATH (and for sd.cpp builds downloaded before), checks the
 * chosen binary, and sets the machine-scoped path. For sd.cpp it can also download an official release build for
 * this platform and GPU: the user sees what, how big, from where and to where, and nothing is downloaded or run
 * without "Download".
 */

import { statSync } from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { probeLlamaServer } from '../../sidecar/workers/llm/llamaServer';
import { probeSdBinary, type SdHelpInfo } from '../../sidecar/workers/sd/sdHelp';
import { checkDownloadedSd } from '../engineDownload/binaryCheck';
import { buildPickItems, consentText } from '../engineDownload/consentText';
import { EngineInstallError } from '../engineDownload/installError';
import { findEngineBinaries, installEngine } from '../engineDownload/installEngine';
import {
  downloadChoices,
  engineFolderName,
  preferredChoice,
  suggestedBackend,
  type DeviceHint,
  type EngineDownloadChoice,
  type EngineRelease,
  type HostPlatform,
} from '../engineDownload/releaseAssets';
import { fetchLatestRelease, SD_RELEASE_SOURCE } from '../engineDownload/releaseSource';
import { ENGINE_RELEASES, findOnPath, type EngineKind } from '../engineLocator';
import { errorMessage } from '../notify';
import type { Services } from '../services';

const SETTING: Record<EngineKind, string> = { image: 'image.binaryPath', llmServer: 'llm.serverPath' };
const NAME: Record<EngineKind, string> = { image: 'stable-diffusion.cpp (sd-cli)', llmServer: 'llama.cpp server (llama-server)' };

/** What Find Engines needs from the extension: where downloads go, and what the device probe found. */
export type EngineServices = Pick<Services, 'storageDir' | 'sidecar'>;

export function isEngineKind(value: unknown): value is EngineKind {
  return value === 'image' || value === 'llmServer';
}

function isFile(candidate: string): boolean {
  try {
    return statSync(candidate).isFile();
  } catch {
    return false;
  }
}

function enginesDir(services: EngineServices): string {
  return path.join(services.storageDir, 'engines');
}

async function chooseEngine(services: EngineServices, kind: EngineKind): Promise<void> {
  const found = findOnPath(kind, process.env.PATH ?? '', process.platform, isFile, process.env.PATHEXT);
  const downloaded = kind === 'image' ? await downloadedEngines(enginesDir(services)) : [];
  type Item = vscode.QuickPickItem & { file?: string; action?: 'browse' | 'download' | 'releases' };
  const items: Item[] = [
    ...found.map((file) => ({ label: path.basename(file), description: path.dirname(file), file })),
    ...downloaded.map((file) => ({ label: path.basename(file), description: `downloaded: ${path.basename(path.dirname(file))}`, file })),
    { label: '$(folder-opened) Browse for the binary…', action: 'browse' },
    kind === 'image'
      ? { label: '$(cloud-download) Download an official release…', detail: 'From github.com/leejet/stable-diffusion.cpp, for this platform and GPU', action: 'download' }
      : { label: '$(link-external) Open the official releases page', action: 'releases' },
  ];
  const count = found.length + downloaded.length;
  const picked = await vscode.window.showQuickPick(items, {
    title: `Find ${NAME[kind]}`,
    placeHolder: count > 0 ? `Found ${count}: pick one, browse, or download` : 'Not found on PATH: browse, or download a release for your platform',
  });
  if (!picked) return;
  if (picked.action === 'releases') {
    await vscode.env.openExternal(vscode.Uri.parse(ENGINE_RELEASES[kind]));
    return;
  }
  if (picked.action === 'download') {
    await downloadSdRelease(services);
    return;
  }
  const file =
    picked.action === 'browse' ? (await vscode.window.showOpenDialog({ title: `Select ${NAME[kind]}`, canSelectMany: false }))?.[0]?.fsPath : picked.file;
  if (!file) return;
  await useBinary(services, kind, file);
}

/** Checks the binary (`--help`) and sets it; a wrong one gets a message that says what to do instead. */
async function useBinary(services: EngineServices, kind: EngineKind, file: string): Promise<void> {
  let summary: string;
  try {
    summary = await vscode.window.withProgress(
      { location: vscode.ProgressLocation.Window, title: `VRAM Relay: checking ${path.basename(file)}` },
      async () => {
        if (kind === 'image') return describeSd(await probeSdBinary(file));
        await probeLlamaServer(file);
        return 'llama-server';
      },
    );
  } catch (error) {
    const actions = kind === 'image' ? ['Download a Release', 'Pick Another'] : ['Open Releases Page', 'Pick Another'];
    const choice = await vscode.window.showErrorMessage(`VRAM Relay: ${errorMessage(error)}`, ...actions);
    if (choice === 'Download a Release') await downloadSdRelease(services);
    if (choice === 'Open Releases Page') await vscode.env.openExternal(vscode.Uri.parse(ENGINE_RELEASES[kind]));
    if (choice === 'Pick Another') await chooseEngine(services, kind);
    return;
  }
  await setBinary(kind, file, summary);
}

async function setBinary(kind: EngineKind, file: string, summary: string): Promise<void> {
  // Binary paths are machine settings: a workspace can never point them elsewhere.
  await vscode.workspace.getConfiguration('vramRelay').update(SETTING[kind], file, vscode.ConfigurationTarget.Global);
  void vscode.window.showInformationMessage(`VRAM Relay: ${NAME[kind]} set to ${file} (${summary}).`);
}

function describeSd(help: SdHelpInfo): string {
  return help.capabilities.backend === 'unknown' ? help.kind : `${help.kind}, ${help.capabilities.backend}`;
}

/** sd.cpp binaries of the builds downloaded before (one per `sd-*` folder). */
async function downloadedEngines(dir: string): Promise<string[]> {
  const folders = await vscode.workspace.fs.readDirectory(vscode.Uri.file(dir)).then(
    (entries) => entries.filter(([name, type]) => type === vscode.FileType.Directory && name.startsWith('sd-')).map(([name]) => path.join(dir, name)),
    () => [] as string[],
  );
  const binaries = await Promise.all(folders.map(async (folder) => (await findEngineBinaries(folder))[0]));
  return binaries.filter((file): file is string => file !== undefined);
}

// ---------------------------------------------------------------------------------------------------------------
// Download

function host(): HostPlatform {
  return { platform: process.platform, arch: process.arch };
}

function deviceHint(services: EngineServices): { hint?: DeviceHint; names: string } {
  const snapshot = services.sidecar.snapshot;
  if (!snapshot) return { names: '' };
  const gpus = snapshot.devices.filter((device) => device.kind !== 'cpu' && device.kind !== 'simulated');
  return { hint: { source: snapshot.deviceSource, kinds: snapshot.devices.map((device) => device.kind) }, names: gpus.map((device) => device.name).join(', ') };
}

/** Asks GitHub for the latest release, picks the build, asks for consent, downloads, verifies and installs it. */
export async function downloadSdRelease(services: EngineServices): Promise<void> {
  const release = await withCancellableProgress('VRAM Relay: asking GitHub for the latest stable-diffusion.cpp release', (signal) =>
    fetchLatestRelease(SD_RELEASE_SOURCE, { signal }),
  );
  if (!release) return;

  const choices = downloadChoices(release, host());
  if (choices.length === 0) {
    await offerReleasePage(
      `stable-diffusion.cpp ${release.tag} has no build for ${process.platform} ${process.arch}. ` +
        `Build it from source (or pick an older release by hand) and set vramRelay.image.binaryPath to its sd-cli.`,
      release.htmlUrl,
    );
    return;
  }

  const { hint, names } = deviceHint(services);
  const suggested = suggestedBackend(hint, host(), choices.map((c) => c.build.backend));
  // The device probe answered: start from its build; otherwise the user picks among those that exist here.
  let choice = hint?.source === 'real' ? preferredChoice(choices, suggested) : undefined;
  for (;;) {
    choice ??= await pickBuild(release, choices, suggested, names);
    if (!choice) return;
    const folder = path.join(enginesDir(services), engineFolderName(release.tag, choice.build.backend));
    const installed = (await findEngineBinaries(folder))[0];
    const text = consentText(release, choice, folder, installed !== undefined);
    const buttons = [...(installed ? ['Use Installed'] : []), 'Download', 'Choose Another Build…'];
    const answer = await vscode.window.showInformationMessage(text.message, { modal: true, detail: text.detail }, ...buttons);
    if (answer === 'Choose Another Build…') {
      choice = undefined;
      continue;
    }
    if (answer === 'Use Installed' && installed) {
      await useBinary(services, 'image', installed);
      return;
    }
    if (answer !== 'Download') return;
    await install(services, release, choice);
    return;
  }
}

async function pickBuild(
  release: EngineRelease,
  choices: EngineDownloadChoice[],
  suggested: ReturnType<typeof suggestedBackend>,
  names: string,
): Promise<EngineDownloadChoice | undefined> {
  const picked = await vscode.window.showQuickPick(buildPickItems(choices, suggested, names || undefined), {
    title: `stable-diffusion.cpp ${release.tag}: which build?`,
    placeHolder: 'Pick the build for your GPU (CUDA for NVIDIA on Windows, Vulkan for most GPUs, CPU when there is none)',
    matchOnDetail: true,
  });
  return picked?.choice;
}

async function install(services: EngineServices, release: EngineRelease, choice: EngineDownloadChoice): Promise<void> {
  const result = await vscode.window.withProgress(
    { location: vscode.ProgressLocation.Notification, title: `VRAM Relay: sd.cpp ${choice.label}`, cancellable: true },
    async (progress, token) => {
      const abort = new AbortController();
      const subscription = token.onCancellationRequested(() => abort.abort());
      let reported = 0;
      try {
        return await installEngine({
          release,
          choice,
          enginesDir: enginesDir(services),
          source: SD_RELEASE_SOURCE,
          signal: abort.signal,
          checkBinary: checkDownloadedSd,
          onProgress: ({ phase, received, total, file }) => {
            const percent = total > 0 ? (received / total) * 100 : 0;
            const message =
              phase === 'download'
                ? `downloading ${file ?? ''}: ${(received / 1024 / 1024).toFixed(1)} of ${(total / 1024 / 1024).toFixed(1)} MiB`
                : phase === 'unpack'
                  ? `verified; unpacking ${file ?? ''}`
                  : phase === 'check'
                    ? 'checking that sd-cli runs here'
                    : 'finishing';
            progress.report({ message, increment: Math.max(0, percent - reported) });
            reported = Math.max(reported, percent);
          },
        });
      } catch (error) {
        return error instanceof EngineInstallError ? error : new EngineInstallError('filesystem', errorMessage(error));
      } finally {
        subscription.dispose();
      }
    },
  );

  if (!(result instanceof EngineInstallError)) {
    await setBinary('image', result.binaryPath, `${choice.label}, ${release.tag}`);
    return;
  }
  if (result.reason === 'cancelled') {
    vscode.window.setStatusBarMessage('VRAM Relay: sd.cpp download cancelled; nothing was installed.', 5000);
    return;
  }
  const retry = result.reason === 'network' || result.reason === 'http' || result.reason === 'digest' ? ['Try Again'] : [];
  const another = result.reason === 'check' ? ['Choose Another Build…'] : [];
  const answer = await vscode.window.showErrorMessage(`VRAM Relay: ${result.message}`, ...retry, ...another, 'Open Release Page');
  if (answer === 'Try Again') await install(services, release, choice);
  if (answer === 'Choose Another Build…') {
    const next = await pickBuild(release, downloadChoices(release, host()), undefined, '');
    if (next) await install(services, release, next);
  }
  if (answer === 'Open Release Page') await vscode.env.openExternal(vscode.Uri.parse(release.htmlUrl));
}

/** Runs `work` under a cancellable notification; returns undefined (after telling the user) when it failed. */
async function withCancellableProgress<T>(title: string, work: (signal: AbortSignal) => Promise<T>): Promise<T | undefined> {
  try {
    return await vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title, cancellable: true }, async (_progress, token) => {
      const abort = new AbortController();
      const subscription = token.onCancellationRequested(() => abort.abort());
      try {
        return await work(abort.signal);
      } finally {
        subscription.dispose();
      }
    });
  } catch (error) {
    if (error instanceof EngineInstallError && error.reason === 'cancelled') return undefined;
    await offerReleasePage(errorMessage(error), SD_RELEASE_SOURCE.releasesPage);
    return undefined;
  }
}

async function offerReleasePage(message: string, page: string): Promise<void> {
  const answer = await vscode.window.showErrorMessage(`VRAM Relay: ${message}`, 'Open Releases Page');
  if (answer) await vscode.env.openExternal(vscode.Uri.parse(page));
}

export async function findEnginesCommand(services: EngineServices, kind?: EngineKind): Promise<void> {
  const which =
    kind ??
    (
      await vscode.window.showQuickPick(
        [
          { label: 'Image engine', description: 'stable-diffusion.cpp: sd-cli or sd-server', engine: 'image' as const },
          { label: 'LLM server (optional)', description: 'llama-server, when vramRelay.llm.engine is "server"', engine: 'llmServer' as const },
        ],
        { title: 'Find Engines' },
      )
    )?.engine;
  if (which) await chooseEngine(services, which);
}
