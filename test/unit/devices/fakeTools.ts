/** Puts stand-ins named nvidia-smi / rocm-smi on a PATH for the probe tests (POSIX only). */
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const fakeScript = fileURLToPath(new URL('../../fixtures/devices/fakeSmiTool.mjs', import.meta.url));

export interface FakeTools {
  env: NodeJS.ProcessEnv;
  state: string;
  cleanup(): void;
}

export function fakeTools(tools: ('nvidia-smi' | 'rocm-smi')[], mode: string, modes: Partial<Record<string, string>> = {}): FakeTools {
  const root = mkdtempSync(join(tmpdir(), 'vram-relay-fake-smi-'));
  const bin = join(root, 'bin');
  const state = join(root, 'state');
  mkdirSync(bin);
  mkdirSync(state);
  for (const tool of tools) {
    const path = join(bin, tool);
    const toolMode = modes[tool] ?? mode;
    writeFileSync(path, `#!/bin/sh\nFAKE_SMI_MODE=${toolMode} exec "${process.execPath}" "${fakeScript}" ${tool} "$@"\n`);
    chmodSync(path, 0o755);
  }
  // Only the fake tools and the basics: a real nvidia-smi on the test machine must not answer instead.
  const env = { PATH: [bin, '/usr/bin', '/bin'].join(delimiter), FAKE_SMI_STATE: state };
  return { env, state, cleanup: () => removeWithRetries(root) };
}

/**
 * A fake tool that was just killed may still be starting up and write its run counter while the folder is being
 * removed. Node's own retries only retry the final rmdir, not the listing, so retry the whole removal.
 */
function removeWithRetries(root: string): void {
  for (let attempt = 1; ; attempt++) {
    try {
      rmSync(root, { recursive: true, force: true });
      return;
    } catch (error) {
      if (attempt >= 50 || (error as NodeJS.ErrnoException).code !== 'ENOTEMPTY') throw error;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 100);
    }
  }
}
