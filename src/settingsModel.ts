/**
 * The `vramRelay.*` settings as the sidecar receives them. Pure: the caller passes a getter over VS Code's
 * configuration (or a plain object in tests).
 */

import type { SidecarSettings } from '../sidecar/protocol';

/** Reads one setting below `vramRelay.`; returns undefined when unset. */
export type SettingGetter = (key: string) => unknown;

export type EnhancementStyle = 'concise' | 'detailed' | 'tags';

/** Settings the sidecar only reads when it starts: changing one asks the user to restart it. */
export const RESTART_SETTINGS: readonly string[] = ['memory.device', 'llm.engine', 'llm.serverPath', 'image.binaryPath'];

/** Settings that only the extension uses; changing them never reaches the sidecar. */
export const EXTENSION_ONLY_SETTINGS: readonly string[] = [
  'output.imageFolder',
  'output.defaultSteps',
  'prompt.enhancementStyle',
  'completions.enabled',
  'models.folders',
  'image.priority',
];

export const SETTING_DEFAULTS = {
  'memory.device': 'auto',
  'memory.simulatedCapacityMiB': 12288,
  'memory.safetyMarginMiB': 512,
  'memory.pollIntervalMs': 1000,
  'llm.engine': 'embedded',
  'llm.serverPath': '',
  'llm.modelPath': '',
  'llm.contextSize': 4096,
  'llm.idleWarmSeconds': 300,
  'llm.idleColdSeconds': 1800,
  'llm.cpuWhileImageRuns': true,
  'image.binaryPath': '',
  'image.modelPath': '',
  'image.keepResident': true,
  'image.priority': 'normal',
  'models.folders': [] as string[],
  'output.imageFolder': 'assets/generated',
  'output.defaultSteps': 20,
  'prompt.enhancementStyle': 'concise',
  'completions.enabled': true,
} as const;

function str(get: SettingGetter, key: keyof typeof SETTING_DEFAULTS): string {
  const value = get(key);
  return typeof value === 'string' ? value.trim() : (SETTING_DEFAULTS[key] as string);
}

function num(get: SettingGetter, key: keyof typeof SETTING_DEFAULTS, min: number, max: number): number {
  const value = get(key);
  const fallback = SETTING_DEFAULTS[key] as number;
  const n = typeof value === 'number' && Number.isFinite(value) ? value : fallback;
  return Math.min(max, Math.max(min, n));
}

function oneOf<T extends string>(get: SettingGetter, key: keyof typeof SETTING_DEFAULTS, allowed: readonly T[]): T {
  const value = get(key);
  return allowed.includes(value as T) ? (value as T) : (SETTING_DEFAULTS[key] as T);
}

export interface SettingsContext {
  /** Where the sidecar keeps calibration data and its token file (the extension's global storage). */
  storageDir: string;
  /** Whether the workspace is trusted; an untrusted one never launches engine binaries. */
  trusted: boolean;
}

/** Maps the user's settings onto what `vramRelay/configure` carries, clamping out-of-range numbers. */
export function toSidecarSettings(get: SettingGetter, context: SettingsContext): SidecarSettings {
  return {
    device: oneOf(get, 'memory.device', ['auto', 'simulated'] as const),
    simulatedCapacityMiB: num(get, 'memory.simulatedCapacityMiB', 1024, 1024 * 1024),
    safetyMarginMiB: num(get, 'memory.safetyMarginMiB', 0, 16384),
    pollIntervalMs: num(get, 'memory.pollIntervalMs', 100, 60_000),
    llm: {
      modelPath: str(get, 'llm.modelPath'),
      engine: oneOf(get, 'llm.engine', ['embedded', 'server'] as const),
      serverPath: str(get, 'llm.serverPath'),
      contextSize: Math.round(num(get, 'llm.contextSize', 256, 1_048_576)),
      idleWarmSeconds: num(get, 'llm.idleWarmSeconds', 0, 86_400),
      idleColdSeconds: num(get, 'llm.idleColdSeconds', 0, 86_400),
      cpuWhileImageRuns: get('llm.cpuWhileImageRuns') !== false,
    },
    image: {
      binaryPath: str(get, 'image.binaryPath'),
      modelPath: str(get, 'image.modelPath'),
      keepResident: get('image.keepResident') !== false,
    },
    storageDir: context.storageDir,
    allowBinaries: context.trusted,
  };
}

/** Extension-side settings: where images go and how prompts are rewritten. */
export interface ExtensionSettings {
  imageFolder: string;
  defaultSteps: number;
  enhancementStyle: EnhancementStyle;
  completionsEnabled: boolean;
  modelFolders: string[];
  imagePriority: 'interactive' | 'normal' | 'batch';
}

export function toExtensionSettings(get: SettingGetter): ExtensionSettings {
  const folders = get('models.folders');
  return {
    imageFolder: str(get, 'output.imageFolder') || SETTING_DEFAULTS['output.imageFolder'],
    defaultSteps: Math.round(num(get, 'output.defaultSteps', 1, 150)),
    enhancementStyle: oneOf(get, 'prompt.enhancementStyle', ['concise', 'detailed', 'tags'] as const),
    completionsEnabled: get('completions.enabled') !== false,
    modelFolders: Array.isArray(folders) ? folders.filter((f): f is string => typeof f === 'string' && f.trim() !== '').map((f) => f.trim()) : [],
    imagePriority: oneOf(get, 'image.priority', ['interactive', 'normal', 'batch'] as const),
  };
}

/**
 * Of the settings a configuration change touched, those that need a sidecar restart. `affects` answers
 * whether the change touched `vramRelay.<key>`.
 */
export function changedRestartSettings(affects: (key: string) => boolean): string[] {
  return RESTART_SETTINGS.filter((key) => affects(key)).map((key) => `vramRelay.${key}`);
}

/** Whether a change touched anything the sidecar receives. */
export function touchesSidecar(affects: (key: string) => boolean): boolean {
  return Object.keys(SETTING_DEFAULTS).some((key) => !EXTENSION_ONLY_SETTINGS.includes(key) && affects(key));
}
