import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { NvidiaProbe } from '../../../sidecar/devices/nvidiaProbe';
import type { DeviceSnapshot } from '../../../sidecar/core/types';
import { MiB } from '../../../sidecar/core/types';
import { fakeTools } from './fakeTools';

const posix = process.platform !== 'win32';

/** Watches until `done` says so (or fails after `ms`), then stops the watch. */
function watchUntil(
  probe: NvidiaProbe,
  intervalMs: number,
  done: (samples: DeviceSnapshot[][], errors: Error[]) => boolean,
  ms = 20_000,
): Promise<{ samples: DeviceSnapshot[][]; errors: Error[] }> {
  const samples: DeviceSnapshot[][] = [];
  const errors: Error[] = [];
  return new Promise((resolve, reject) => {
    let stop = () => undefined as void;
    const timer = setTimeout(() => {
      stop();
      reject(new Error(`not done within ${ms} ms: ${samples.length} samples, errors: ${errors.map((e) => e.message).join(' | ')}`));
    }, ms);
    const check = () => {
      if (!done(samples, errors)) return;
      clearTimeout(timer);
      stop();
      resolve({ samples, errors });
    };
    stop = probe.watch(
      intervalMs,
      (snapshots) => {
        samples.push(snapshots);
        check();
      },
      (error) => {
        errors.push(error);
        check();
      },
    );
  });
}

const runs = (state: string, kind: string) => {
  try {
    return Number(readFileSync(join(state, `nvidia-smi-${kind}.count`), 'utf8'));
  } catch {
    return 0;
  }
};

describe('NvidiaProbe with a stand-in nvidia-smi', { skip: !posix && 'needs a POSIX shell' }, () => {
  it('samples once: GPUs with their processes', async () => {
    const tools = fakeTools(['nvidia-smi'], 'ok');
    try {
      const probe = new NvidiaProbe({ env: tools.env });
      const snapshots = await probe.sample();
      assert.deepEqual(
        snapshots.map((s) => [s.id, s.total / MiB, s.free / MiB, s.processes?.length]),
        [
          ['nvidia:0', 24564, 22899, 2],
          ['nvidia:1', 46068, 36346, 2],
        ],
      );
      probe.dispose();
    } finally {
      tools.cleanup();
    }
  });

  it('streams readings from ONE long-lived process, grouped per loop, with per-process use', async () => {
    const tools = fakeTools(['nvidia-smi'], 'ok');
    const probe = new NvidiaProbe({ env: tools.env, processIntervalMs: 200 });
    try {
      const { samples } = await watchUntil(probe, 50, (s) => s.length >= 6 && s[s.length - 1][0].processes !== undefined);
      for (const snapshots of samples) assert.deepEqual(snapshots.map((s) => s.id), ['nvidia:0', 'nvidia:1']);
      const used = samples.map((s) => s[0].used / MiB);
      assert.ok(used.every((u, i) => i === 0 || u > used[i - 1]), `readings come in loop order: ${used}`);
      assert.deepEqual(samples[samples.length - 1][0].processes?.map((p) => p.pid), [1106871, 52114]);
      assert.equal(runs(tools.state, 'stream'), 1, 'one stream process for the whole watch');
    } finally {
      probe.dispose();
      tools.cleanup();
    }
  });

  it('skips garbage lines, says so once, and keeps reading', async () => {
    const tools = fakeTools(['nvidia-smi'], 'garbage');
    const probe = new NvidiaProbe({ env: tools.env });
    try {
      const { samples, errors } = await watchUntil(probe, 50, (s) => s.length >= 4);
      assert.ok(samples.every((s) => s.length === 2));
      const garbage = errors.filter((e) => /not a GPU reading/.test(e.message));
      assert.equal(garbage.length, 1);
    } finally {
      probe.dispose();
      tools.cleanup();
    }
  });

  it('restarts a stream that dies, and says why', async () => {
    const tools = fakeTools(['nvidia-smi'], 'exit-after-2');
    const probe = new NvidiaProbe({ env: tools.env, restartDelayMs: 50 });
    try {
      const { errors } = await watchUntil(probe, 50, (s, e) => e.length > 0 && s.length >= 4 && runs(tools.state, 'stream') >= 2);
      assert.match(errors[0].message, /exit code 3: Unable to determine the device handle/);
      assert.match(errors[0].message, /restarting it in 50 ms/);
    } finally {
      probe.dispose();
      tools.cleanup();
    }
  });

  it('restarts a stream that goes silent, then falls back to one query per interval', async () => {
    const tools = fakeTools(['nvidia-smi'], 'silent');
    const probe = new NvidiaProbe({ env: tools.env, stallMs: 800, restartDelayMs: 20 });
    try {
      const { samples, errors } = await watchUntil(probe, 50, (s) => s.length >= 2);
      assert.ok(errors.some((e) => /no reading for 800 ms/.test(e.message)));
      assert.ok(errors.some((e) => /streamed no reading 3 times .*querying it once every 50 ms/.test(e.message)));
      assert.deepEqual(samples[0].map((s) => s.id), ['nvidia:0', 'nvidia:1']);
    } finally {
      probe.dispose();
      tools.cleanup();
    }
  });

  it('reports a missing nvidia-smi instead of throwing, and stops cleanly', async () => {
    const tools = fakeTools([], 'ok');
    const probe = new NvidiaProbe({ env: tools.env, restartDelayMs: 20 });
    try {
      await assert.rejects(probe.sample(), /nvidia-smi is not on PATH/);
      const { errors } = await watchUntil(probe, 50, (_s, e) => e.length >= 2);
      assert.ok(errors.some((e) => /not on PATH/.test(e.message)));
    } finally {
      probe.dispose();
      tools.cleanup();
    }
  });

  it('stops a one-shot query still running when the probe is disposed', async () => {
    const tools = fakeTools(['nvidia-smi'], 'hang');
    const probe = new NvidiaProbe({ env: tools.env, timeoutMs: 60_000 });
    try {
      const started = Date.now();
      const query = probe.sample();
      setTimeout(() => probe.dispose(), 200);
      await assert.rejects(query, /was stopped: the device probe was closed/);
      assert.ok(Date.now() - started < 30_000, 'the query ended long before its own time limit');
    } finally {
      probe.dispose();
      tools.cleanup();
    }
  });

  it('gives up a one-shot query on a hanging nvidia-smi after its time limit', async () => {
    const tools = fakeTools(['nvidia-smi'], 'hang');
    const probe = new NvidiaProbe({ env: tools.env, timeoutMs: 300 });
    try {
      await assert.rejects(probe.sample(), /did not answer within 300 ms/);
    } finally {
      probe.dispose();
      tools.cleanup();
    }
  });
});
