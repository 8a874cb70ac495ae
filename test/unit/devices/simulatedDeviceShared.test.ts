import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import type { ResultPromise } from 'execa';
import { SIM_DEVICE_ENV, SimulatedDevice, SimulatedOutOfMemoryError } from '../../../sidecar/devices/simulatedDevice';
import { MiB } from '../../../sidecar/core/types';

const repoRoot = fileURLToPath(new URL('../../..', import.meta.url));
const childScript = fileURLToPath(new URL('../../fixtures/devices/simAllocChild.ts', import.meta.url));

const children: ResultPromise[] = [];

/** Wrapped in an object: the subprocess is itself a promise, which `await` would wait for. */
async function startChild(dir: string, mode: 'hold' | 'fill', bytes: number): Promise<{ child: ResultPromise }> {
  // execa is ESM only: a dynamic import loads it whether tsx runs this file as CommonJS or as ESM.
  const { execa } = await import('execa');
  const child = execa(process.execPath, ['--import', 'tsx', childScript, mode, String(bytes)], {
    cwd: repoRoot,
    env: { [SIM_DEVICE_ENV]: dir },
    stdin: 'pipe',
    reject: false,
    timeout: 60_000,
  });
  children.push(child);
  const queue = { lines: [] as string[] };
  outputs.set(child, queue);
  createInterface({ input: child.stdout! }).on('line', (line) => queue.lines.push(line));
  return { child };
}

/** The next JSON line the child prints, or a failure after `ms`. */
async function nextLine(child: ResultPromise, ms = 30_000): Promise<Record<string, unknown>> {
  const queue = outputs.get(child)!;
  const deadline = Date.now() + ms;
  while (queue.lines.length === 0) {
    if (Date.now() > deadline) throw new Error(`child printed nothing within ${ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return JSON.parse(queue.lines.shift()!) as Record<string, unknown>;
}
/** Lines each child printed, collected from the start so that none is missed. */
const outputs = new Map<ResultPromise, { lines: string[] }>();

describe('SimulatedDevice shared between processes', () => {
  let root: string;
  before(() => {
    root = mkdtempSync(join(tmpdir(), 'vram-relay-sim-'));
  });
  after(async () => {
    for (const child of children) child.kill('SIGKILL');
    await Promise.allSettled(children);
    rmSync(root, { recursive: true, force: true });
  });

  it('shares allocations between two handles on the same directory', () => {
    const dir = join(root, 'two-handles');
    const a = SimulatedDevice.createShared(dir, { capacity: 64 * MiB, granularity: MiB });
    const b = SimulatedDevice.openShared(dir);
    assert.equal(b.shared, true);
    const id = a.allocate(String(process.pid), 40 * MiB);
    assert.equal(b.trueFree(), 24 * MiB);
    assert.throws(() => b.allocate(String(process.pid), 25 * MiB), SimulatedOutOfMemoryError);
    assert.equal(b.release(id), true, 'any handle can release an allocation');
    assert.equal(a.trueFree(), 64 * MiB);
    b.setOtherUse(10 * MiB);
    assert.equal(a.config().otherUse, 10 * MiB);
    assert.deepEqual(
      readdirSync(dir).filter((f) => !f.startsWith('config')),
      [],
      'no ledger, lock or temporary file is left once nothing is held',
    );
  });

  it('says what to do when the directory holds no device', () => {
    assert.throws(() => SimulatedDevice.openShared(join(root, 'missing')), /createShared/);
    assert.equal(SimulatedDevice.fromEnv({}), null);
  });

  it('breaks a lock and frees a ledger left by a process that no longer exists', async () => {
    const { execa } = await import('execa');
    const gone = await execa(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']);
    const deadPid = Number(gone.stdout);
    const dir = join(root, 'stale');
    const device = SimulatedDevice.createShared(dir, { capacity: 64 * MiB, granularity: MiB });
    mkdirSync(join(dir, 'lock'));
    writeFileSync(join(dir, 'lock', 'holder'), String(deadPid));
    writeFileSync(
      join(dir, `ledger-${deadPid}.json`),
      JSON.stringify([{ id: 'x', owner: String(deadPid), bytes: 32 * MiB, at: Date.now() }]),
    );
    assert.equal(device.trueFree(), 64 * MiB);
    device.allocate(String(process.pid), 64 * MiB);
    assert.equal(device.releaseOwner(String(process.pid)), 64 * MiB);
    assert.deepEqual(readdirSync(dir), ['config.json']);
  });

  it('gives memory back when a child process holding it is killed', async () => {
    const dir = join(root, 'kill');
    const device = SimulatedDevice.createShared(dir, { capacity: 256 * MiB });
    const { child } = await startChild(dir, 'hold', 100 * MiB);
    const ready = await nextLine(child);
    assert.equal(ready.ready, true);
    assert.equal(device.usage(), 100 * MiB);
    assert.equal(device.usage(String(child.pid)), 100 * MiB);
    const listed = device.snapshot().processes?.find((p) => p.pid === child.pid);
    assert.equal(listed?.used, 100 * MiB);

    child.kill('SIGKILL');
    const result = await child;
    assert.equal(result.signal, 'SIGKILL');
    assert.equal(device.usage(), 0);
    assert.equal(device.trueFree(), 256 * MiB);
    assert.equal(device.snapshot().free, 256 * MiB);
  });

  it('never over-commits while several processes allocate at once', async () => {
    const dir = join(root, 'contend');
    const device = SimulatedDevice.createShared(dir, { capacity: 300 * MiB, granularity: MiB });
    const racers: ResultPromise[] = [];
    for (let i = 0; i < 3; i++) racers.push((await startChild(dir, 'fill', MiB)).child);
    for (const child of racers) assert.equal((await nextLine(child)).ready, true);

    const counted = racers.map((child) => nextLine(child));
    for (const child of racers) child.stdin!.write('go\n');
    const counts = (await Promise.all(counted)).map((line) => line.count as number);
    assert.equal(counts[0] + counts[1] + counts[2], 300, `each MiB went to exactly one process (${counts})`);
    assert.equal(device.usage(), 300 * MiB);
    assert.equal(device.trueFree(), 0);
    for (const [i, child] of racers.entries()) assert.equal(device.usage(String(child.pid)), counts[i] * MiB);

    for (const child of racers) child.stdin!.write('release\n');
    const results = await Promise.all(racers);
    assert.deepEqual(
      results.map((r) => r.exitCode),
      [0, 0, 0],
    );
    assert.equal(device.usage(), 0);
    assert.deepEqual(readdirSync(dir), ['config.json'], 'every ledger is gone and the lock released');
  });
});
