/**
 * Runs inside the VS Code that @vscode/test-electron downloaded, in its extension host: the extension is
 * installed from the repository, activates, registers its palette commands and shows the monitor's command
 * without throwing. Bundled to CommonJS by runTest.ts before VS Code starts.
 */
import assert from 'node:assert/strict';
import * as vscode from 'vscode';

const EXTENSION_ID = 'vram-relay.vram-relay';

interface Check {
  name: string;
  run(): Promise<void>;
}

const checks: Check[] = [
  {
    name: 'the extension is installed and activates',
    async run() {
      const extension = vscode.extensions.getExtension(EXTENSION_ID);
      assert.ok(extension, `${EXTENSION_ID} is not installed in the test instance`);
      await extension.activate();
      assert.equal(extension.isActive, true);
    },
  },
  {
    name: 'every contributed command is registered',
    async run() {
      const extension = vscode.extensions.getExtension(EXTENSION_ID);
      const contributed = ((extension?.packageJSON as { contributes?: { commands?: { command: string }[] } })
        .contributes?.commands ?? []).map((entry) => entry.command);
      assert.ok(contributed.length > 0, 'the manifest contributes no commands');
      const registered = new Set(await vscode.commands.getCommands(true));
      const missing = contributed.filter((command) => !registered.has(command));
      assert.deepEqual(missing, [], `commands in package.json but not registered: ${missing.join(', ')}`);
    },
  },
  {
    name: 'Show Budget Panel runs',
    async run() {
      await vscode.commands.executeCommand('vramRelay.showBudgetPanel');
      const tabs = vscode.window.tabGroups.all.flatMap((group) => group.tabs);
      assert.ok(tabs.some((tab) => tab.input instanceof vscode.TabInputWebview), 'no webview tab opened');
    },
  },
];

/** Called by VS Code's test runner; a rejected promise fails the run. */
export async function run(): Promise<void> {
  const failures: string[] = [];
  for (const check of checks) {
    try {
      await check.run();
      console.log(`ok - ${check.name}`);
    } catch (error) {
      failures.push(check.name);
      console.error(`not ok - ${check.name}\n${error instanceof Error ? error.stack : String(error)}`);
    }
  }
  console.log(`${checks.length - failures.length} passed, ${failures.length} failed`);
  if (failures.length > 0) throw new Error(`${failures.length} of ${checks.length} checks failed`);
}
