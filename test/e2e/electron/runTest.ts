/**
 * The @vscode/test-electron suite: downloads VS Code and runs suite/ inside it. Where VS Code cannot be
 * downloaded (no network, or VRAM_RELAY_OFFLINE=1) or there is no display for Electron, it prints one line
 * saying why it skipped and exits 0; the code-server suite (test/e2e/*.e2e.test.ts) covers those machines.
 *
 *   node --import tsx test/e2e/electron/runTest.ts
 */
import { runTests } from '@vscode/test-electron';
import * as esbuild from 'esbuild';
import * as dns from 'node:dns/promises';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO_ROOT = path.resolve(HERE, '..', '..', '..');
const UPDATE_HOST = 'update.code.visualstudio.com';
const PROBE_TIMEOUT_MS = 5000;

function skip(reason: string): never {
  console.log(`SKIP @vscode/test-electron suite: ${reason}. (The code-server end-to-end suite runs the extension in a real VS Code instead.)`);
  process.exit(0);
}

/** Why VS Code cannot be downloaded here, or undefined when it can. */
async function downloadBlocker(): Promise<string | undefined> {
  if (process.env.VRAM_RELAY_OFFLINE === '1') return 'VRAM_RELAY_OFFLINE=1';
  try {
    await Promise.race([
      dns.lookup(UPDATE_HOST),
      new Promise((_, reject) => setTimeout(() => reject(new Error('DNS lookup timed out')), PROBE_TIMEOUT_MS)),
    ]);
    const response = await fetch(`https://${UPDATE_HOST}/api/releases/stable`, { signal: AbortSignal.timeout(PROBE_TIMEOUT_MS) });
    if (!response.ok) return `${UPDATE_HOST} answered HTTP ${response.status}`;
    await response.body?.cancel();
  } catch (error) {
    const cause = (error as { cause?: { code?: string } }).cause?.code;
    return `cannot reach ${UPDATE_HOST} to download VS Code (${cause ?? (error as Error).message})`;
  }
  return undefined;
}

async function main(): Promise<void> {
  const blocker = await downloadBlocker();
  if (blocker) skip(blocker);
  if (process.platform === 'linux' && !process.env.DISPLAY && !process.env.WAYLAND_DISPLAY) {
    skip('no display for Electron (run it under xvfb-run)');
  }
  if (!fs.existsSync(path.join(REPO_ROOT, 'dist', 'extension.js'))) {
    throw new Error('dist/extension.js is missing: build the extension first (node esbuild.mjs).');
  }

  const temp = fs.mkdtempSync(path.join(os.tmpdir(), 'vram-relay-electron-'));
  try {
    // VS Code loads the suite with require(): bundle it to CommonJS, leaving `vscode` to the host.
    const suite = path.join(temp, 'suite.cjs');
    await esbuild.build({
      entryPoints: [path.join(HERE, 'suite', 'index.ts')],
      outfile: suite,
      bundle: true,
      platform: 'node',
      format: 'cjs',
      target: 'node20',
      external: ['vscode'],
      logLevel: 'warning',
    });
    const userDataDir = path.join(temp, 'user-data');
    const workspace = path.join(temp, 'workspace');
    fs.mkdirSync(path.join(userDataDir, 'User'), { recursive: true });
    fs.mkdirSync(workspace);
    fs.writeFileSync(
      path.join(userDataDir, 'User', 'settings.json'),
      JSON.stringify({ 'vramRelay.memory.device': 'simulated', 'workbench.startupEditor': 'none' }, null, 2),
    );
    await runTests({
      version: process.env.VRAM_RELAY_VSCODE_VERSION ?? 'stable',
      extensionDevelopmentPath: REPO_ROOT,
      extensionTestsPath: suite,
      extensionTestsEnv: { VRAM_RELAY_TEST: '1' },
      launchArgs: [workspace, '--disable-extensions', '--disable-workspace-trust', '--user-data-dir', userDataDir],
    });
  } finally {
    fs.rmSync(temp, { recursive: true, force: true });
  }
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : error);
  process.exit(1);
});
