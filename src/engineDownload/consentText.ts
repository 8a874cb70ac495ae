/**
 * The words of the download consent dialog and the build picker (pure): what will be downloaded, how big, from
 * where, and where it goes. Nothing is downloaded unless the user answers "Download" to exactly this text.
 */

import * as path from 'node:path';
import { formatBytes } from '../format';
import type { EngineDownloadChoice, EngineRelease, SdBuildBackend } from './releaseAssets';

export interface ConsentText {
  message: string;
  detail: string;
}

export function consentText(release: EngineRelease, choice: EngineDownloadChoice, destination: string, alreadyInstalled: boolean): ConsentText {
  const files = [choice.asset, ...choice.companions];
  const published = release.publishedAt ? ` (published ${release.publishedAt.slice(0, 10)})` : '';
  const lines = [
    `Release: ${release.name}${release.name === release.tag ? '' : ` (${release.tag})`}${published}`,
    `Build: ${choice.label}${choice.note ? `: ${choice.note}` : ''}`,
    ...files.map((file) => `File: ${file.name}, ${formatBytes(file.size)}\n  from ${file.url}`),
    ...(files.length > 1 ? [`Total: ${formatBytes(choice.totalBytes)}`] : []),
    `Destination: ${destination}${path.sep}`,
    '',
    `Each file is checked against the sha256 digest GitHub publishes for it, unpacked, and its sd-cli is run once with --help; ` +
      `then vramRelay.image.binaryPath is set to it.`,
    ...(alreadyInstalled ? ['', 'This build is already in the destination folder: downloading again replaces it.'] : []),
  ];
  return {
    message: `Download stable-diffusion.cpp ${release.tag} (${choice.label}, ${formatBytes(choice.totalBytes)}) from GitHub?`,
    detail: lines.join('\n'),
  };
}

export interface BuildPickItem {
  label: string;
  description: string;
  detail: string;
  choice: EngineDownloadChoice;
}

/** Picker rows, the suggested build first and marked as such. */
export function buildPickItems(choices: readonly EngineDownloadChoice[], suggested: SdBuildBackend | undefined, why?: string): BuildPickItem[] {
  const first = suggested ? choices.find((choice) => choice.build.backend === suggested) : undefined;
  const ordered = first ? [first, ...choices.filter((choice) => choice !== first)] : [...choices];
  return ordered.map((choice) => ({
    label: choice.label,
    description: `${formatBytes(choice.totalBytes)}${choice === first ? ` · suggested${why ? ` for ${why}` : ''}` : ''}`,
    detail: `${choice.note ?? ''} ${[choice.asset, ...choice.companions].map((asset) => asset.name).join(' + ')}`.trim(),
    choice,
  }));
}
