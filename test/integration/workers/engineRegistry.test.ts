/**
 * A sidecar that is killed outright cannot stop its engines: the next sidecar must. Real processes throughout: a
 * small owner process tracks a detached engine (a `sleep` standing in for a resident sd-server), is SIGKILLed, and
 * this process, as the next sidecar, reaps what it left.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { processStartTime, reapOrphanedEngines } from '../../../sidecar/workers/engineRegistry';
import { useEngineRegistry } from '../../../sidecar/workers/processTree';
import { processExists } from '../../helpers/processes';

const processTree = fileURLToPath(new URL('../../../sidecar/workers/processTree.ts', import.meta.url));
const posix = process.platform !== 'win32';
const dirs: string[] = [];
const pids: number[] = [];

function freshDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'vram-relay-engines-'));
  dirs.push(dir);
  return dir;
}

async function until(check: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Starts an owner that registers a detached `sleep` as its engine; resolves with both pids once registered. */
async function ownerWithEngine(dir: string): Promise<{ owner: number; engine: number }> {
  const script = `
    import { spawn } from 'node:child_process';
    import { trackProcessGroup, useEngineRegistry } from ${JSON.stringify(processTree)};
    useEngineRegistry(${JSON.stringify(dir)});
    const engine = spawn('sleep', ['300'], { detached: true, stdio: 'ignore' });
    trackProcessGroup(engine.pid);
    console.log(JSON.stringify({ owner: process.pid, engine: engine.pid }));
    setInterval(() => undefined, 1 << 30);
  `;
  const file = join(mkdtempSync(join(tmpdir(), 'vram-relay-owner-')), 'owner.mts');
  dirs.push(join(file, '..'));
  writeFileSync(file, script);
  const child = spawn(process.execPath, ['--import', 'tsx', file], { stdio: ['ignore', 'pipe', 'inherit'] });
  const line = await new Promise<string>((resolve, reject) => {
    child.stdout.once('data', (chunk: Buffer) => resolve(chunk.toString()));
    child.once('exit', (code) => reject(new Error(`the owner exited with ${code}`)));
  });
  const pidsOf = JSON.parse(line) as { owner: number; engine: number };
  pids.push(pidsOf.owner, pidsOf.engine);
  return pidsOf;
}

describe('engine registry: engines left by a killed sidecar', { skip: posix ? false : 'process groups and start times are POSIX here' }, () => {
  after(() => {
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // Gone already.
      }
    }
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });

  it('the next sidecar stops the engine of one that was SIGKILLed, and removes its file', async () => {
    const dir = freshDir();
    const { owner, engine } = await ownerWithEngine(dir);
    assert.deepEqual(readdirSync(dir), [`engines-${owner}.json`]);
    process.kill(owner, 'SIGKILL');
    await until(() => !processExists(owner));
    assert.ok(processExists(engine), 'the engine outlives a SIGKILLed owner: this is what reaping is for');
    const reaped = useEngineRegistry(dir);
    assert.deepEqual(
      reaped.map((r) => [r.pid, r.ownerPid]),
      [[engine, owner]],
    );
    await until(() => !processExists(engine));
    assert.ok(!existsSync(join(dir, `engines-${owner}.json`)));
  });

  it('leaves the engines of a sidecar that is still running (another VS Code window)', async () => {
    const dir = freshDir();
    const { owner, engine } = await ownerWithEngine(dir);
    const killed: number[] = [];
    assert.deepEqual(reapOrphanedEngines(dir, (pid) => killed.push(pid)), []);
    assert.deepEqual(killed, []);
    assert.ok(processExists(engine) && existsSync(join(dir, `engines-${owner}.json`)));
  });

  it('never signals a pid that now belongs to another process, and drops files it cannot read', () => {
    const dir = freshDir();
    // A dead owner whose engine pid is now this very test process (started at another time).
    const stale = { owner: { pid: 2 ** 22 + 7, started: '1' }, engines: [{ pid: process.pid, started: 'not-this-start-time' }] };
    writeFileSync(join(dir, 'engines-4194311.json'), JSON.stringify(stale));
    writeFileSync(join(dir, 'engines-1.json'), 'not json');
    const killed: number[] = [];
    assert.deepEqual(reapOrphanedEngines(dir, (pid) => killed.push(pid)), []);
    assert.deepEqual(killed, []);
    assert.deepEqual(readdirSync(dir), []);
  });

  it('removes what a dead sidecar\'s engines left half-written, and nothing else', () => {
    const dir = freshDir();
    const out = join(dir, 'assets');
    mkdirSync(out);
    mkdirSync(join(dir, 'vrelay-sd-Ab12Cd'));
    writeFileSync(join(dir, 'vrelay-sd-Ab12Cd', 'core'), '');
    for (const name of ['.cat.vrelay-0123abcd-0.png', '.cat.vrelay-0123abcd-0_2.png', 'cat.png', 'notes.md']) writeFileSync(join(out, name), 'x');
    const registry = {
      owner: { pid: 2 ** 22 + 9, started: '1' },
      engines: [
        // The engine finished on its own after its sidecar died (not running), so only its files are left.
        {
          pid: 2 ** 22 + 11,
          started: '1',
          leftovers: [
            { dir: out, prefix: '.cat.vrelay-0123abcd-0' },
            { dir, prefix: 'vrelay-sd-Ab12Cd' },
            // Never trusted: prefixes the sidecar does not make, and relative folders.
            { dir: out, prefix: 'cat' },
            { dir: out, prefix: '' },
            { dir: 'assets', prefix: '.cat.vrelay-0123abcd-0' },
          ],
        },
      ],
    };
    writeFileSync(join(dir, `engines-${2 ** 22 + 9}.json`), JSON.stringify(registry));
    assert.deepEqual(reapOrphanedEngines(dir, () => assert.fail('nothing is running')), []);
    assert.deepEqual(readdirSync(out).sort(), ['cat.png', 'notes.md']);
    assert.deepEqual(readdirSync(dir).sort(), ['assets']);
  });

  it('reads a start time for a running process and none for a pid that is not running', () => {
    assert.ok(processStartTime(process.pid));
    assert.equal(processStartTime(2 ** 22 + 7), undefined);
    assert.equal(processStartTime(-1), undefined);
  });
});
