/**
 * The extension in a real VS Code: it activates, the status bar monitor shows the (simulated, labelled demo)
 * device's VRAM, and the budget panel opens with a bar per device. Screenshots go to .test-artifacts/e2e/smoke/.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { SECOND, UI_TIMEOUT, VsCodeSession, waitForText } from './harness';

const MONITOR = 'vramRelay.monitor';

describe('VRAM Relay in code-server: smoke', { timeout: 8 * 60 * SECOND }, () => {
  let session: VsCodeSession | undefined;

  before(async () => {
    session = await VsCodeSession.start({
      name: 'smoke',
      // A capacity other than the default, so that the figures shown prove the setting reached the sidecar.
      settings: { 'vramRelay.memory.device': 'simulated', 'vramRelay.memory.simulatedCapacityMiB': 8192 },
    });
  });

  after(async () => {
    await session?.dispose();
  });

  test('the status bar monitor shows the simulated device in GB, marked as a demo', async () => {
    const vscode = session!;
    await vscode.capture('status-bar', async () => {
      const text = await vscode.waitForStatusText(MONITOR, /\/\s*8(\.0)?\s*GB/);
      await vscode.screenshotStatusBar();
      assert.match(text, /\d+(\.\d+)?\s*\/\s*8(\.0)?\s*GB/, `expected used/total of the 8 GB device, got "${text}"`);
      assert.match(text, /demo/i, `a simulated device must say so, got "${text}"`);
    });
  });

  test('Show Budget Panel opens the webview with a bar per device', async () => {
    const vscode = session!;
    await vscode.capture('budget-panel', async () => {
      await vscode.runCommand('VRAM Relay: Show Budget Panel');
      const text = await waitForText(vscode.webview().locator('#device-bars'), /simulated/i, UI_TIMEOUT, 'The device bars');
      await vscode.screenshotEditor('budget-panel');
      assert.match(text, /simulated/i, `the device bars show no simulated device: "${text}"`);
      assert.match(text, /\b8(\.0)?\s*GB/, `the device bar does not show the 8 GB capacity: "${text}"`);
    });
  });
});
