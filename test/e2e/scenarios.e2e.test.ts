/**
 * What a user does, in a real VS Code against the simulated device: generate an image from the palette (the
 * sd.cpp stand-in plays the engine), enhance a prompt from the palette and from the light bulb (the real
 * node-llama-cpp on a small random-weight model written here), and live through a sidecar crash in the middle of
 * an image job. Screenshots go to .test-artifacts/e2e/scenarios/.
 *
 * Only the crash scenario: node --import tsx --test --test-name-pattern="sidecar is killed" test/e2e/scenarios.e2e.test.ts
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { GiB } from '../../sidecar/core/types';
import { promptSlug } from '../../src/outputPath';
import { SimulatedDevice } from '../../sidecar/devices/simulatedDevice';
import { writeLlamaGguf } from '../helpers/ggufWriter';
import { SDCPP_STANDIN_BIN, readStandinArgsLog, readStandinServerRequests, sdcppStandinEnv } from '../standins/sdcppStandin';
import { SD1_UNET, clipTextTensors, klVaeTensors, unetTensors, writeSafetensors } from '../unit/models/imageCheckpoints';
import { extensionId, SECOND, UI_TIMEOUT, VsCodeSession, waitForText } from './harness';
import { isRunning } from '../helpers/processes';

const MONITOR = 'vramRelay.monitor';
const PROMPT = 'a watercolor painting of a lighthouse at sunset, dramatic lighting';
const NOTES = ['# Cover art', '', PROMPT, ''].join('\n');
/** The crash scenario's own prompt, so that its files are told apart from the first scenario's. */
const CRASH_PROMPT = 'a pencil sketch of a fox asleep in the snow';
const CRASH_SLUG = promptSlug(CRASH_PROMPT);
/** Sampling steps of the crash scenario: at 100 ms a step the job runs long enough to be killed in the middle. */
const CRASH_STEPS = 100;
const CRASH_SEED = 4242;
/**
 * Why the Enhance Prompt tests are TODO (they still run, and report what they hit): the sidecar answers and the
 * prompt line is rewritten, but after Undo + Save the file still holds the rewritten line (checked with the
 * service in place on 2 cores). Make them plain tests once undo restores the prompt.
 */

describe('VRAM Relay in code-server: what a user does', { timeout: 12 * 60 * SECOND }, () => {
  let session: VsCodeSession | undefined;
  /** The simulated 12 GiB device shared by the test, the sidecar and the sd.cpp stand-in. */
  let deviceDir: string;
  let argsLog: string;

  before(async () => {
    deviceDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vram-relay-e2e-device-'));
    SimulatedDevice.createShared(deviceDir, { capacity: 12 * GiB });
    argsLog = path.join(deviceDir, 'sd-cli-runs.jsonl');
    session = await VsCodeSession.start({
      name: 'scenarios',
      machineSettings: { 'vramRelay.image.binaryPath': SDCPP_STANDIN_BIN },
      settings: (workspace) => ({
        'vramRelay.memory.device': 'simulated',
        'vramRelay.image.modelPath': path.join(workspace, 'models', 'sd15.safetensors'),
        'vramRelay.llm.modelPath': path.join(workspace, 'models', 'tiny-llama.gguf'),
        'vramRelay.output.imageFolder': 'assets/generated',
        'vramRelay.output.defaultSteps': 4,
      }),
      env: sdcppStandinEnv({ deviceDir, stepMs: 100, argsLog }),
      // One file per test, so that a failed test leaves nothing behind for the next one.
      workspaceFiles: { 'enhance.md': NOTES, 'light-bulb.md': NOTES },
      async prepareWorkspace(workspace) {
        const models = path.join(workspace, 'models');
        fs.mkdirSync(models, { recursive: true });
        await writeLlamaGguf(path.join(models, 'tiny-llama.gguf'));
        // An SD1.5 checkpoint whose header is real and whose data is a sparse hole.
        await writeSafetensors(path.join(models, 'sd15.safetensors'), [
          ...unetTensors('model.diffusion_model.', SD1_UNET),
          ...clipTextTensors('cond_stage_model.transformer.text_model.'),
          ...klVaeTensors('first_stage_model.', 4),
          { name: 'alphas_cumprod', shape: [1000] },
        ]);
      },
    });
  });

  after(async () => {
    await session?.dispose();
    if (deviceDir) fs.rmSync(deviceDir, { recursive: true, force: true });
  });

  test('Generate Image from the palette saves the image and its parameters into the workspace and opens it', async () => {
    const vscode = session!;
    await vscode.capture('generate-image', async () => {
      await vscode.waitForStatusText(MONITOR, /GB/);
      await vscode.runCommand('VRAM Relay: Generate Image');
      await vscode.answerInput(PROMPT);
      await vscode.acceptDefaults();
      const images = await vscode.waitForFiles('assets/generated', /\.png$/i, 3 * 60 * SECOND);
      await vscode.screenshotStatusBar('status-bar-after-generate');
      const image = images[0];
      const png = fs.readFileSync(path.join(vscode.workspace, image));
      assert.equal(png.subarray(0, 8).toString('hex'), '89504e470d0a1a0a', `${image} is not a PNG`);
      const runs = await readStandinArgsLog(argsLog);
      assert.ok(runs.length > 0, 'the sd.cpp stand-in never ran');
      // sd-cli takes the prompt on its command line; a resident sd-server takes it in the HTTP request.
      const requests = await readStandinServerRequests(argsLog);
      assert.ok(
        runs.some((run) => run.argv.includes(PROMPT)) || requests.some((r) => r.request.prompt === PROMPT),
        `neither a run nor a server request carried the prompt: ${JSON.stringify({ runs, requests })}`,
      );
      const sidecars = await vscode.waitForFiles('assets/generated', /\.json$/i);
      const parameters = fs.readFileSync(path.join(vscode.workspace, sidecars[0]), 'utf8');
      assert.ok(parameters.includes('lighthouse'), `the parameters file does not carry the prompt:\n${parameters}`);
      const tab = vscode.page.locator('.tabs-container .tab', { hasText: path.basename(image) });
      await tab.first().waitFor({ state: 'visible', timeout: 30 * SECOND });
      await vscode.screenshotEditor('generated-image');
    });
  });

  test('Enhance Prompt from the palette rewrites the selected prompt as one undoable edit', async () => {
    const vscode = session!;
    await vscode.capture('enhance-prompt', async () => {
      await vscode.openFile('enhance.md');
      await vscode.selectLine(3);
      await vscode.runCommand('VRAM Relay: Enhance Prompt');
      await vscode.acceptDefaults();
      // The rewrite streams in; wait until it has stopped changing (saved content is stable).
      const rewritten = await settledContent(vscode, 'enhance.md', (text) => text !== NOTES, 3 * 60 * SECOND);
      assert.notEqual(rewritten, NOTES, 'the prompt was not rewritten');
      assert.ok(rewritten.startsWith('# Cover art\n'), 'the edit touched more than the selected prompt');
      await vscode.screenshotEditor('enhanced-prompt');
      await vscode.undo();
      await vscode.save();
      await vscode.waitForFile('enhance.md', (text) => text === NOTES);
    });
  });

  test('the light bulb on a Markdown prompt line offers "Enhance prompt" and "Generate image from this prompt"', async () => {
    const vscode = session!;
    await vscode.capture('light-bulb-offers', async () => {
      await vscode.openFile('light-bulb.md');
      await vscode.goToLine(3, 10);
      const titles = await vscode.codeActions();
      await vscode.screenshotEditor('light-bulb-menu');
      await vscode.page.keyboard.press('Escape');
      assert.ok(titles.some((title) => /^Enhance prompt/i.test(title)), `offered: ${titles.join(' | ')}`);
      assert.ok(titles.some((title) => /^Generate image from this prompt/i.test(title)), `offered: ${titles.join(' | ')}`);
    });
  });

  test('no light bulb action on a line that is not a prompt', async () => {
    const vscode = session!;
    await vscode.capture('light-bulb-not-a-prompt', async () => {
      await vscode.openFile('light-bulb.md');
      await vscode.goToLine(1, 3);
      await vscode.page.keyboard.press('Control+.');
      const rows = vscode.page.locator('.action-widget .monaco-list-row.action', { hasText: /Enhance prompt/i });
      // The menu (or "No code actions available") settles quickly; give it a moment, then look.
      await new Promise((resolve) => setTimeout(resolve, 2 * SECOND));
      assert.equal(await rows.count(), 0, 'a Markdown heading was offered "Enhance prompt"');
      await vscode.page.keyboard.press('Escape');
    });
  });

  test('applying "Enhance prompt" from the light bulb rewrites the line in place, undoably', async () => {
    const vscode = session!;
    await vscode.capture('light-bulb-apply', async () => {
      await vscode.openFile('light-bulb.md');
      await vscode.goToLine(3, 10);
      await vscode.applyCodeAction(/^Enhance prompt/i);
      const rewritten = await settledContent(vscode, 'light-bulb.md', (text) => text !== NOTES, 3 * 60 * SECOND);
      assert.ok(rewritten.startsWith('# Cover art\n\n'), 'the edit touched more than the prompt line');
      await vscode.screenshotEditor('light-bulb-applied');
      await vscode.undo();
      await vscode.save();
      await vscode.waitForFile('light-bulb.md', (text) => text === NOTES);
    });
  });

  // Last, because it kills the sidecar the other scenarios use (it comes back, but the log shows the crash).
  test('when the sidecar is killed mid-job, the status bar shows the restart and the image still arrives once', async () => {
    const vscode = session!;
    await vscode.capture('sidecar-crash', async () => {
      await vscode.waitForStatusText(MONITOR, /GB/);
      // The budget panel is open during the crash: it shows a banner while the sidecar is away.
      await vscode.runCommand('VRAM Relay: Show Budget Panel');
      await waitForText(vscode.webview().locator('#device-bars'), /GB/, UI_TIMEOUT, 'The device bars');
      const banner = vscode.webview().locator('[data-testid="sidecar-banner"]');
      assert.equal(await banner.isVisible(), false, 'a banner is shown while the sidecar runs');
      await vscode.runCommand('VRAM Relay: Generate Image');
      await vscode.answerInput(CRASH_PROMPT);
      await waitForQuickInputTitle(vscode, /\(2\/3\)/);
      await vscode.page.keyboard.press('Enter');
      // Options: open "Steps", type the count, and come back to Generate.
      await waitForQuickInputTitle(vscode, /\(3\/3\)/);
      await vscode.answerInput('Steps');
      await waitForQuickInputTitle(vscode, /Sampling steps/);
      await vscode.answerInput(String(CRASH_STEPS));
      await waitForQuickInputTitle(vscode, /\(3\/3\)/);
      await vscode.answerInput('Seed');
      await waitForQuickInputTitle(vscode, /^Seed/);
      await vscode.answerInput(String(CRASH_SEED));
      await waitForQuickInputTitle(vscode, /\(3\/3\)/);
      await vscode.page.keyboard.press('Enter');

      await vscode.waitForStatusText(MONITOR, new RegExp(`SD sampling \\d+/${CRASH_STEPS}`), 2 * 60 * SECOND);
      const sidecars = sidecarProcesses(path.dirname(vscode.workspace));
      assert.equal(sidecars.length, 1, `expected one sidecar process of this session, found ${sidecars.join(', ') || 'none'}`);
      // Watch the status bar from the browser before the kill, so that a quick restart is not missed.
      const itemId = JSON.stringify(`${extensionId()}.${MONITOR}`);
      const sawRestarting = vscode.page.waitForFunction(`/restarting/.test(document.getElementById(${itemId})?.innerText ?? '')`, undefined, {
        polling: 50,
        timeout: 60 * SECOND,
      });
      const bannerShown = banner.filter({ hasText: /is restarting/ }).waitFor({ state: 'visible', timeout: 60 * SECOND });
      const runsBefore = await readStandinArgsLog(argsLog);
      const runsBeforeKill = runsBefore.length;
      const enginesBeforeKill = runsBefore.map((run) => run.pid).filter(isRunning);
      process.kill(sidecars[0], 'SIGKILL');
      await sawRestarting;
      await vscode.screenshotStatusBar('status-bar-restarting');
      await bannerShown;
      await vscode.screenshotEditor('panel-banner-restarting');
      await banner.waitFor({ state: 'hidden', timeout: 60 * SECOND });

      const told = vscode.page.locator('.notifications-toasts .notification-toast', { hasText: /the sidecar restarted; 1 job was resubmitted/ });
      await told.first().waitFor({ state: 'visible', timeout: 60 * SECOND });
      await vscode.screenshot('resubmitted-notification');
      const [image] = await vscode.waitForFiles('assets/generated', new RegExp(`^${CRASH_SLUG}.*\\.png$`), 3 * 60 * SECOND);
      await vscode.waitForStatusText(MONITOR, /GB/);
      await vscode.screenshotStatusBar('status-bar-after-restart');

      const after = sidecarProcesses(path.dirname(vscode.workspace));
      assert.equal(after.length, 1, 'no sidecar runs after the restart');
      assert.notEqual(after[0], sidecars[0]);
      const png = fs.readFileSync(path.join(vscode.workspace, image));
      assert.equal(png.subarray(0, 8).toString('hex'), '89504e470d0a1a0a', `${image} is not a PNG`);
      // Once: one image and one parameters file under the job's name, nothing numbered beside them.
      const folder = path.join(vscode.workspace, 'assets', 'generated');
      const mine = fs.readdirSync(folder).filter((name) => name.startsWith(CRASH_SLUG));
      assert.deepEqual(mine.sort(), [path.basename(image), path.basename(image).replace(/\.png$/, '.json')].sort(), `files: ${mine.join(', ')}`);
      // The job ran again on the new sidecar (sd-server receives the prompt over HTTP, sd-cli on its command line).
      const runsAfterKill = (await readStandinArgsLog(argsLog)).slice(runsBeforeKill);
      assert.ok(
        runsAfterKill.some((run) => run.argv.includes(CRASH_PROMPT) || run.argv.includes('--listen-port')),
        `the new sidecar never started the engine: ${JSON.stringify(runsAfterKill)}`,
      );
      // What the killed sidecar left running (a resident sd-server holds its model in VRAM) was stopped.
      assert.deepEqual(enginesBeforeKill.filter(isRunning), [], 'engines of the killed sidecar still run');
      const log = await waitForLog(vscode, /Resubmitted job job-\d+ as job-\d+ after the restart/);
      assert.match(log, /stopped unexpectedly \(killed by SIGKILL\)/);
      // The same request: the parameters beside the image carry the seed that was asked for.
      const parameters = JSON.parse(fs.readFileSync(path.join(folder, path.basename(image).replace(/\.png$/, '.json')), 'utf8')) as { seed: number; steps: number };
      assert.equal(parameters.seed, CRASH_SEED);
      assert.equal(parameters.steps, CRASH_STEPS);
    });
  });

  // Last: it closes the editor.
  test('closing the editor stops every engine the sidecar started (the resident sd-server included)', async () => {
    const engines = (await readStandinArgsLog(argsLog)).map((run) => run.pid);
    assert.ok(engines.some(isRunning), 'a resident sd-server runs before the editor closes');
    await session!.dispose();
    session = undefined;
    const deadline = Date.now() + 10 * SECOND;
    while (engines.some(isRunning) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(engines.filter(isRunning), [], 'engines still running after the editor closed');
  });
});

/**
 * Saves the active editor until its content on disk satisfies `accept` and has stopped changing; gives up at once
 * when the extension shows an error.
 */
async function settledContent(vscode: VsCodeSession, relative: string, accept: (text: string) => boolean, timeout: number): Promise<string> {
  const deadline = Date.now() + timeout;
  let previous: string | undefined;
  while (Date.now() < deadline) {
    const errors = await vscode.errorNotifications();
    if (errors.length > 0) throw new Error(`The extension reported: ${errors.join(' | ')}`);
    await vscode.save();
    const content = await vscode.waitForFile(relative, () => true);
    if (accept(content) && content === previous) return content;
    previous = content;
    await new Promise((resolve) => setTimeout(resolve, 2 * SECOND));
  }
  throw new Error(`${relative} never settled within ${timeout / SECOND}s`);
}

/** Waits until the open quick input's title matches, so that the next answer goes to the right step. */
async function waitForQuickInputTitle(vscode: VsCodeSession, pattern: RegExp): Promise<void> {
  await waitForText(vscode.page.locator('.quick-input-widget .quick-input-title'), pattern, UI_TIMEOUT, 'The quick input title');
}

/** Process ids of this session's sidecars: node processes running the staged `dist/sidecar.js` below `sessionRoot`. */
function sidecarProcesses(sessionRoot: string): number[] {
  const found: number[] = [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let argv: string[];
    try {
      argv = fs.readFileSync(path.join('/proc', name, 'cmdline'), 'utf8').split('\0');
    } catch {
      continue;
    }
    if (argv.some((arg) => arg.startsWith(sessionRoot) && arg.endsWith(path.join('dist', 'sidecar.js')))) found.push(Number(name));
  }
  return found;
}

/** The extension's log once it matches (the workbench writes it to disk a little later than it is logged). */
async function waitForLog(vscode: VsCodeSession, pattern: RegExp, timeout = UI_TIMEOUT): Promise<string> {
  const deadline = Date.now() + timeout;
  let log = vscode.extensionLog();
  while (!pattern.test(log) && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 500));
    log = vscode.extensionLog();
  }
  assert.match(log, pattern);
  return log;
}
