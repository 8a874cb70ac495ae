/**
 * Runs the packaged extension inside a real VS Code (code-server) and drives it from Debian's Chromium through
 * playwright-core, the way a user would: command palette, status bar, webview, editor.
 *
 * One `VsCodeSession` is one code-server with its own user data, extensions folder and workspace, and one
 * browser. `dispose()` always ends both (and everything they started), even after a failed test.
 * The tools come from `test/e2e/setup.sh` (Node 24 and code-server in a cache folder outside node_modules).
 */
import { chromium, type BrowserContext, type FrameLocator, type Locator, type Page } from 'playwright-core';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const ARTIFACTS_ROOT = path.join(REPO_ROOT, '.test-artifacts', 'e2e');
const CHROMIUM = process.env.VRAM_RELAY_E2E_CHROMIUM ?? '/usr/bin/chromium';

/** Flags that keep Chromium off the network; playwright adds `--headless` itself. */
const CHROMIUM_FLAGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** Settings every session starts with: no welcome page, no prompts, nothing that reaches for the network. */
const BASE_SETTINGS: Record<string, unknown> = {
  'workbench.startupEditor': 'none',
  'workbench.tips.enabled': false,
  'workbench.enableExperiments': false,
  'workbench.secondarySideBar.defaultVisibility': 'hidden',
  'security.workspace.trust.enabled': false,
  'telemetry.telemetryLevel': 'off',
  'update.mode': 'none',
  'extensions.autoUpdate': false,
  'extensions.autoCheckUpdates': false,
  'extensions.ignoreRecommendations': true,
  'chat.disableAIFeatures': true,
  'git.enabled': false,
  'window.commandCenter': false,
};

/** Browser-side check: the quick input is hidden, or it no longer shows the palette's `>` query. */
const PALETTE_RELEASED = `(() => {
  const widget = document.querySelector('.quick-input-widget');
  const input = widget?.querySelector('.quick-input-box input');
  return !widget || !widget.checkVisibility() || !input || !input.value.startsWith('>');
})()`;

export const SECOND = 1000;
/** Generous: code-server and the extension host share two cores with the test runner. */
export const STARTUP_TIMEOUT = 120 * SECOND;
export const UI_TIMEOUT = 30 * SECOND;

export interface E2eTools {
  /** Node 24, which code-server requires. */
  node: string;
  /** code-server's package folder. */
  codeServer: string;
}

/** Where `test/e2e/setup.sh` put Node 24 and code-server; a clear message when it has not run. */
export function findE2eTools(): E2eTools {
  const cache = process.env.VRAM_RELAY_E2E_CACHE ?? path.join(os.homedir(), '.cache', 'vram-relay-e2e');
  const manifest = path.join(cache, 'tools.json');
  if (!fs.existsSync(manifest)) {
    throw new Error(`No code-server install found (${manifest} is missing). Run: bash test/e2e/setup.sh`);
  }
  const tools = JSON.parse(fs.readFileSync(manifest, 'utf8')) as E2eTools;
  for (const file of [tools.node, path.join(tools.codeServer, 'out', 'node', 'entry.js'), CHROMIUM]) {
    if (!fs.existsSync(file)) throw new Error(`${file} is missing. Run: bash test/e2e/setup.sh`);
  }
  return tools;
}

interface ExtensionManifest {
  publisher: string;
  name: string;
  version: string;
  main?: string;
}

export function readManifest(root = REPO_ROOT): ExtensionManifest {
  return JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as ExtensionManifest;
}

/** `publisher.name`, the identifier VS Code uses for the extension. */
export function extensionId(manifest = readManifest()): string {
  return `${manifest.publisher}.${manifest.name}`;
}

/**
 * Lays out the built extension the way an installed VSIX looks, as `<publisher>.<name>-<version>` inside
 * `extensionsDir`: the manifest, dist/, media/ and the docs are copied; node_modules is a link to the
 * repository's, because node-llama-cpp (and its native binaries) is loaded from there at run time.
 */
export function stageExtension(extensionsDir: string, root = REPO_ROOT): string {
  const manifest = readManifest(root);
  const main = path.join(root, manifest.main ?? 'dist/extension.js');
  if (!fs.existsSync(main)) throw new Error(`${main} is missing: build the extension first (node esbuild.mjs).`);
  const target = path.join(extensionsDir, `${manifest.publisher}.${manifest.name}-${manifest.version}`);
  fs.mkdirSync(target, { recursive: true });
  for (const entry of ['package.json', 'package.nls.json', 'README.md', 'CHANGELOG.md', 'LICENSE', 'dist', 'media']) {
    const source = path.join(root, entry);
    if (fs.existsSync(source)) fs.cpSync(source, path.join(target, entry), { recursive: true });
  }
  fs.symlinkSync(path.join(root, 'node_modules'), path.join(target, 'node_modules'), 'dir');
  return target;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function tail(file: string, lines = 40): string {
  try {
    return fs.readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n');
  } catch {
    return '(no output)';
  }
}

/** True while any process of the group led by `pid` is alive. */
function groupAlive(pid: number): boolean {
  try {
    process.kill(-pid, 0);
    return true;
  } catch {
    return false;
  }
}

function killGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // Already gone.
  }
}

/** Process groups and temporary folders still to clean up if the test process ends without `dispose()`. */
const liveGroups = new Set<number>();
const liveTemps = new Set<string>();
function cleanUpNow(): void {
  for (const pid of liveGroups) killGroup(pid, 'SIGKILL');
  for (const dir of liveTemps) fs.rmSync(dir, { recursive: true, force: true });
}
process.once('exit', cleanUpNow);
for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
  process.once(signal, () => process.exit(code));
}

export interface SessionOptions {
  /** Names the artifacts folder: `.test-artifacts/e2e/<name>/`. */
  name: string;
  /**
   * User settings on top of the base ones (e.g. `"vramRelay.memory.device": "simulated"`); a function receives
   * the workspace folder, for settings that hold absolute paths into it.
   */
  settings?: Record<string, unknown> | ((workspace: string) => Record<string, unknown>);
  /**
   * Settings of `machine` scope (engine binary paths), written where a remote VS Code keeps the machine's own
   * settings (`<user-data-dir>/Machine/settings.json`), as a user of code-server would set them.
   */
  machineSettings?: Record<string, unknown> | ((workspace: string) => Record<string, unknown>);
  /** Extra environment for code-server, which passes it on to the extension host. */
  env?: Record<string, string>;
  /** The extension to stage (a folder with package.json and the built dist/); the repository by default. */
  extensionRoot?: string;
  /** Files to write into the workspace before opening it, relative path -> content. */
  workspaceFiles?: Record<string, string>;
  /** Prepares the workspace folder (e.g. writes a model file) before code-server opens it. */
  prepareWorkspace?: (workspace: string) => Promise<void>;
}

export class VsCodeSession {
  private constructor(
    readonly page: Page,
    readonly workspace: string,
    readonly artifacts: string,
    private readonly context: BrowserContext,
    private readonly server: ChildProcess,
    private readonly temp: string,
    private readonly userDataDir: string,
  ) {}

  /** Starts code-server with the staged extension, opens the workbench in Chromium and waits for it. */
  static async start(options: SessionOptions): Promise<VsCodeSession> {
    const tools = findE2eTools();
    const artifacts = path.join(ARTIFACTS_ROOT, options.name);
    fs.rmSync(artifacts, { recursive: true, force: true });
    fs.mkdirSync(artifacts, { recursive: true });
    const temp = fs.mkdtempSync(path.join(os.tmpdir(), 'vram-relay-e2e-'));
    liveTemps.add(temp);
    const userDataDir = path.join(temp, 'user-data');
    let server: ChildProcess | undefined;
    let context: BrowserContext | undefined;
    try {
      const workspace = path.join(temp, 'workspace');
      const extensionsDir = path.join(temp, 'extensions');
      prepareFolders(options, userDataDir, extensionsDir, workspace);
      await options.prepareWorkspace?.(workspace);
      stageExtension(extensionsDir, options.extensionRoot ?? process.env.VRAM_RELAY_E2E_EXTENSION);

      const port = await freePort();
      const serverLog = path.join(artifacts, 'code-server.log');
      const env: Record<string, string> = {
        ...(process.env as Record<string, string>),
        PATH: `${path.dirname(tools.node)}${path.delimiter}${process.env.PATH ?? ''}`,
        // Keep code-server's own config and state out of the user's home.
        XDG_CONFIG_HOME: path.join(temp, 'config'),
        XDG_DATA_HOME: path.join(temp, 'data'),
        VRAM_RELAY_TEST: '1',
        ...options.env,
      };
      delete env.NODE_TEST_CONTEXT;
      delete env.NODE_OPTIONS;
      const logFd = fs.openSync(serverLog, 'a');
      // Its own process group, so that dispose() ends the extension host and the sidecar with it.
      server = spawn(
        tools.node,
        [
          path.join(tools.codeServer, 'out', 'node', 'entry.js'),
          '--auth', 'none',
          '--bind-addr', `127.0.0.1:${port}`,
          '--disable-telemetry',
          '--disable-update-check',
          '--disable-workspace-trust',
          '--user-data-dir', userDataDir,
          '--extensions-dir', extensionsDir,
          workspace,
        ],
        { env, detached: true, stdio: ['ignore', logFd, logFd] },
      );
      fs.closeSync(logFd);
      const exited = new Promise<void>((resolve) => server?.once('exit', () => resolve()));
      server.once('error', () => undefined);
      if (server.pid === undefined) throw new Error(`code-server did not start: ${tail(serverLog)}`);
      liveGroups.add(server.pid);
      await waitForHealthy(port, exited, serverLog);

      context = await chromium.launchPersistentContext(path.join(temp, 'chromium'), {
        executablePath: CHROMIUM,
        headless: true,
        args: CHROMIUM_FLAGS,
        viewport: { width: 1440, height: 900 },
      });
      const page = context.pages()[0] ?? (await context.newPage());
      const consoleLog = path.join(artifacts, 'browser-console.log');
      page.on('console', (message) => {
        if (message.type() === 'error' || message.type() === 'warning') fs.appendFileSync(consoleLog, `[${message.type()}] ${message.text()}\n`);
      });
      page.on('pageerror', (error) => fs.appendFileSync(consoleLog, `[pageerror] ${error.stack ?? error.message}\n`));
      await page.goto(`http://127.0.0.1:${port}/?folder=${encodeURIComponent(workspace)}`);
      await page.locator('.monaco-workbench .part.statusbar').waitFor({ timeout: STARTUP_TIMEOUT });
      return new VsCodeSession(page, workspace, artifacts, context, server, temp, userDataDir);
    } catch (error) {
      await context?.close().catch(() => undefined);
      if (server) await endGroup(server);
      const logs = path.join(userDataDir, 'logs');
      if (fs.existsSync(logs)) fs.cpSync(logs, path.join(artifacts, 'logs'), { recursive: true });
      fs.rmSync(temp, { recursive: true, force: true });
      liveTemps.delete(temp);
      throw error;
    }
  }

  /** Runs a command from the palette by its full title, e.g. `VRAM Relay: Show Budget Panel`. */
  async runCommand(title: string): Promise<void> {
    const input = this.page.locator('.quick-input-widget .quick-input-box input');
    await this.page.keyboard.press('Escape');
    await this.page.keyboard.press('F1');
    await input.waitFor({ state: 'visible', timeout: UI_TIMEOUT });
    await input.fill(`>${title}`);
    const row = this.page.locator('.quick-input-widget .monaco-list-row', {
      has: this.page.locator('.label-name', { hasText: new RegExp(`^${escapeRegExp(title)}$`) }),
    });
    await row.first().click({ timeout: UI_TIMEOUT });
    // The command's own input box reuses the palette's widget: wait until the palette has let go of it.
    await this.page.waitForFunction(PALETTE_RELEASED, undefined, { timeout: UI_TIMEOUT });
  }

  /** Types `text` into the open input box (or filters the open quick pick) and accepts it with Enter. */
  async answerInput(text: string): Promise<void> {
    const input = this.page.locator('.quick-input-widget .quick-input-box input');
    await input.waitFor({ state: 'visible', timeout: UI_TIMEOUT });
    await input.fill(text);
    await input.press('Enter');
  }

  /**
   * Accepts the defaults of whatever the command asks next (quick picks, input boxes, a modal confirmation) until
   * nothing has been asked for `quietMs`. Returns how many answers it gave.
   */
  async acceptDefaults(quietMs = 3 * SECOND, maxAnswers = 12): Promise<number> {
    const input = this.page.locator('.quick-input-widget .quick-input-box input');
    const dialogButton = this.page.locator('.monaco-dialog-box .dialog-buttons a.monaco-button').first();
    let answers = 0;
    for (let idle = 0; idle < quietMs && answers < maxAnswers; ) {
      if (await input.isVisible()) {
        await input.press('Enter');
        answers++;
        idle = 0;
      } else if (await dialogButton.isVisible()) {
        await dialogButton.click();
        answers++;
        idle = 0;
      } else {
        idle += 250;
      }
      await delay(250);
    }
    return answers;
  }

  /** Opens a workspace file in an editor through Quick Open and waits until the editor has focus. */
  async openFile(relative: string): Promise<void> {
    await this.page.keyboard.press('Escape');
    await this.page.keyboard.press('Control+P');
    const input = this.page.locator('.quick-input-widget .quick-input-box input');
    await input.waitFor({ state: 'visible', timeout: UI_TIMEOUT });
    await input.fill(relative);
    await this.page.locator('.quick-input-widget .monaco-list-row', { hasText: path.basename(relative) }).first().waitFor({ timeout: UI_TIMEOUT });
    await input.press('Enter');
    await this.page.locator('.tabs-container .tab.active', { hasText: path.basename(relative) }).first().waitFor({ timeout: UI_TIMEOUT });
    await this.focusEditor();
  }

  /** Gives the active text editor the keyboard focus and waits until it has it. */
  async focusEditor(): Promise<void> {
    const editor = this.page.locator('.part.editor .editor-group-container.active .monaco-editor').first();
    // Recent VS Code types through an EditContext element; older versions through a textarea.
    await editor.locator('.native-edit-context, textarea.inputarea').first().focus({ timeout: UI_TIMEOUT });
    await this.page.locator('.part.editor .editor-group-container.active .monaco-editor.focused').first().waitFor({ timeout: UI_TIMEOUT });
  }

  /** Moves the cursor of the active editor to `line` (and `column`), both 1-based, through Go to Line. */
  async goToLine(line: number, column?: number): Promise<void> {
    await this.page.keyboard.press('Control+G');
    await this.answerInput(column === undefined ? `:${line}` : `:${line}:${column}`);
    await this.page.locator('.quick-input-widget').waitFor({ state: 'hidden', timeout: UI_TIMEOUT });
    await this.focusEditor();
  }

  /** Undoes the last edit in the active editor. */
  async undo(): Promise<void> {
    await this.focusEditor();
    await this.page.keyboard.press('Control+Z');
  }

  /** Moves the cursor to `line` (1-based) of the active editor and selects the line's text. */
  async selectLine(line: number): Promise<void> {
    await this.goToLine(line);
    await this.page.keyboard.press('End');
    await this.page.keyboard.press('Shift+Home');
  }

  /** Opens the light bulb menu at the cursor (Ctrl+.) and returns the titles it offers; Escape closes it. */
  async codeActions(): Promise<string[]> {
    const rows = this.page.locator('.action-widget .monaco-list-row.action');
    await this.openLightBulbMenu(rows.first());
    return (await rows.allInnerTexts()).map((text) => text.trim());
  }

  /** Opens the light bulb menu at the cursor (Ctrl+.) and applies the action titled `title`. */
  async applyCodeAction(title: string | RegExp): Promise<void> {
    const item = this.page.locator('.action-widget .monaco-list-row', { hasText: title }).first();
    await this.openLightBulbMenu(item);
    await item.click();
  }

  /**
   * Presses Ctrl+. until `shown` is visible. A key press that lands while the editor is still settling (a quick
   * input closing, a "No code actions available" hint fading) opens nothing, so one press is not enough to be sure.
   */
  private async openLightBulbMenu(shown: Locator): Promise<void> {
    const deadline = Date.now() + UI_TIMEOUT;
    for (;;) {
      await this.focusEditor();
      await this.page.keyboard.press('Control+.');
      const wait = Math.min(5 * SECOND, deadline - Date.now());
      try {
        await shown.waitFor({ state: 'visible', timeout: Math.max(wait, 1) });
        return;
      } catch (error) {
        if (Date.now() >= deadline) throw error;
        console.error('Ctrl+. opened no matching light bulb entry within 5 s; pressing it again.');
        await this.page.keyboard.press('Escape');
      }
    }
  }

  /** Saves the active editor, so that its content can be read from disk. */
  async save(): Promise<void> {
    await this.page.keyboard.press('Control+S');
  }

  /** Reads a workspace file once `accept` says its content is the expected one; throws with the last content. */
  async waitForFile(relative: string, accept: (content: string) => boolean, timeout = UI_TIMEOUT): Promise<string> {
    const file = path.join(this.workspace, relative);
    const deadline = Date.now() + timeout;
    let content = '';
    while (Date.now() < deadline) {
      content = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
      if (accept(content)) return content;
      await delay(250);
    }
    throw new Error(`${relative} did not reach the expected content within ${timeout / SECOND}s; it holds:\n${content}`);
  }

  /** Workspace files (relative paths) below `folder` once at least one matches `pattern`. */
  async waitForFiles(folder: string, pattern: RegExp, timeout = UI_TIMEOUT): Promise<string[]> {
    const root = path.join(this.workspace, folder);
    const deadline = Date.now() + timeout;
    while (Date.now() < deadline) {
      const errors = await this.errorNotifications();
      if (errors.length > 0) throw new Error(`Waiting for ${pattern} in ${folder}/, the extension reported: ${errors.join(' | ')}`);
      const found = findFiles(root, (file) => pattern.test(path.basename(file))).map((file) => path.relative(this.workspace, file));
      if (found.length > 0) return found.sort();
      await delay(500);
    }
    throw new Error(`No file matching ${pattern} appeared in ${folder}/ within ${timeout / SECOND}s`);
  }

  /**
   * Messages of the visible error notifications that come from the extension under test, so that a test stops
   * waiting as soon as one appears (the workbench's own errors about the missing network are left out).
   */
  async errorNotifications(source = 'VRAM Relay'): Promise<string[]> {
    const toasts = this.page.locator('.notifications-toasts .notification-toast', { has: this.page.locator('.codicon-error'), hasText: source });
    return (await toasts.locator('.notification-list-item-message').allInnerTexts()).map((text) => text.trim());
  }

  /** The status bar entry contributed as `itemId` by the extension under test. */
  statusItem(itemId: string): Locator {
    return this.page.locator(`.part.statusbar [id="${extensionId()}.${itemId}"]`);
  }

  /** The visible text of a status bar entry (codicons are not text). */
  async statusItemText(itemId: string, timeout = STARTUP_TIMEOUT): Promise<string> {
    const item = this.statusItem(itemId);
    await item.waitFor({ state: 'visible', timeout });
    return (await item.innerText()).trim();
  }

  /** Waits until the status bar entry's text matches `pattern` (it updates as the sidecar reports) and returns it. */
  async waitForStatusText(itemId: string, pattern: RegExp, timeout = STARTUP_TIMEOUT): Promise<string> {
    return waitForText(this.statusItem(itemId), pattern, timeout, `Status bar item ${itemId}`);
  }

  /** The content of the active webview, two iframes deep inside the workbench. */
  webview(): FrameLocator {
    return this.page.frameLocator('iframe.webview.ready').first().frameLocator('#active-frame');
  }

  /** Saves a PNG of `target` (the whole window when omitted) into the session's artifacts folder. */
  async screenshot(name: string, target?: Locator): Promise<string> {
    const file = path.join(this.artifacts, `${name}.png`);
    if (target) await target.screenshot({ path: file, timeout: UI_TIMEOUT });
    else await this.page.screenshot({ path: file });
    return file;
  }

  async screenshotStatusBar(name = 'status-bar'): Promise<string> {
    return this.screenshot(name, this.page.locator('.part.statusbar'));
  }

  /** The editor area, where the budget panel opens. */
  async screenshotEditor(name: string): Promise<string> {
    return this.screenshot(name, this.page.locator('.part.editor'));
  }

  /**
   * Runs one test's body; when it fails, keeps a screenshot of the window and the logs (extension host, the
   * extension's own output channel, code-server) before passing the error on.
   */
  async capture<T>(name: string, body: () => Promise<T>): Promise<T> {
    try {
      return await body();
    } catch (error) {
      const safe = name.replace(/[^a-zA-Z0-9-]+/g, '-');
      await this.screenshot(`failed-${safe}`).catch(() => undefined);
      this.keepLogs();
      // CI shows the test output, not the artifacts: the logs' ends go there too.
      console.error(`--- ${name} failed; artifacts in ${this.artifacts}`);
      console.error(`--- extension host log (end):\n${tail(this.extensionHostLogFile())}`);
      console.error(`--- VRAM Relay log (end):\n${this.extensionLog().split('\n').slice(-40).join('\n')}`);
      throw error;
    }
  }

  /** Copies the workbench's log folder (extension host and output channels) into the artifacts. */
  keepLogs(): void {
    const logs = path.join(this.userDataDir, 'logs');
    if (fs.existsSync(logs)) fs.cpSync(logs, path.join(this.artifacts, 'logs'), { recursive: true });
  }

  /** Path of the extension host's log (activation errors land there), or '' when there is none yet. */
  extensionHostLogFile(): string {
    return findFiles(path.join(this.userDataDir, 'logs'), (file) => path.basename(file) === 'remoteexthost.log')[0] ?? '';
  }

  /** The extension's own log (its LogOutputChannel), or '' when it has written none. */
  extensionLog(): string {
    const logs = path.join(this.userDataDir, 'logs');
    const found = findFiles(logs, (file) => /VRAM Relay\.log$/.test(file) || file.includes(`${extensionId()}`));
    return found.map((file) => fs.readFileSync(file, 'utf8')).join('\n');
  }

  /** Ends the browser and code-server with everything it started, and removes the temporary folders. */
  async dispose(): Promise<void> {
    await this.context.close().catch(() => undefined);
    await endGroup(this.server);
    fs.rmSync(this.temp, { recursive: true, force: true });
    liveTemps.delete(this.temp);
  }
}

/** User settings, an empty extensions folder and the workspace with its files. */
function prepareFolders(options: SessionOptions, userDataDir: string, extensionsDir: string, workspace: string): void {
  fs.mkdirSync(path.join(userDataDir, 'User'), { recursive: true });
  fs.mkdirSync(extensionsDir, { recursive: true });
  fs.mkdirSync(workspace, { recursive: true });
  const resolve = (settings: SessionOptions['settings']) => (typeof settings === 'function' ? settings(workspace) : settings);
  fs.writeFileSync(path.join(userDataDir, 'User', 'settings.json'), JSON.stringify({ ...BASE_SETTINGS, ...resolve(options.settings) }, null, 2));
  fs.mkdirSync(path.join(userDataDir, 'Machine'), { recursive: true });
  fs.writeFileSync(path.join(userDataDir, 'Machine', 'settings.json'), JSON.stringify(resolve(options.machineSettings) ?? {}, null, 2));
  for (const [relative, content] of Object.entries(options.workspaceFiles ?? {})) {
    fs.mkdirSync(path.dirname(path.join(workspace, relative)), { recursive: true });
    fs.writeFileSync(path.join(workspace, relative), content);
  }
}

async function waitForHealthy(port: number, serverExit: Promise<void>, serverLog: string): Promise<void> {
  let exited = false;
  void serverExit.then(() => {
    exited = true;
  });
  const deadline = Date.now() + STARTUP_TIMEOUT;
  while (Date.now() < deadline) {
    if (exited) throw new Error(`code-server exited during start-up:\n${tail(serverLog)}`);
    try {
      const response = await fetch(`http://127.0.0.1:${port}/healthz`, { signal: AbortSignal.timeout(2 * SECOND) });
      if (response.ok) return;
    } catch {
      // Not listening yet.
    }
    await delay(250);
  }
  throw new Error(`code-server did not answer on port ${port} within ${STARTUP_TIMEOUT / SECOND}s:\n${tail(serverLog)}`);
}

/** Waits until the visible text of `target` matches `pattern` (content that renders late) and returns it. */
export async function waitForText(target: Locator, pattern: RegExp, timeout = UI_TIMEOUT, what = 'The element'): Promise<string> {
  const deadline = Date.now() + timeout;
  let text = '';
  while (Date.now() < deadline) {
    text = (await target.innerText({ timeout: Math.max(1, deadline - Date.now()) }).catch(() => '')).trim();
    if (pattern.test(text)) return text;
    await delay(250);
  }
  throw new Error(`${what} never matched ${pattern} within ${timeout / SECOND}s; last text: "${text}"`);
}

/** SIGTERM to the whole process group, SIGKILL to what is left after a few seconds; waits until it is gone. */
async function endGroup(server: ChildProcess): Promise<void> {
  const pid = server.pid;
  if (pid === undefined) return;
  killGroup(pid, 'SIGTERM');
  for (let waited = 0; groupAlive(pid) && waited < 5 * SECOND; waited += 100) await delay(100);
  killGroup(pid, 'SIGKILL');
  for (let waited = 0; groupAlive(pid) && waited < 5 * SECOND; waited += 100) await delay(100);
  liveGroups.delete(pid);
}

function findFiles(root: string, keep: (file: string) => boolean): string[] {
  if (!fs.existsSync(root)) return [];
  return (fs.readdirSync(root, { recursive: true }) as string[])
    .map((relative) => path.join(root, relative))
    .filter((file) => fs.statSync(file).isFile() && keep(file));
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
