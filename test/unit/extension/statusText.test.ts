import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { GiB, MiB } from '../../../sidecar/core/types';
import { RECENT_TROUBLE_MS, statusView } from '../../../src/statusText';
import { decision, imageJob, plan, snapshot } from './fixtures';

describe('statusView', () => {
  it('shows used/total per GPU, the LLM state and the image worker', () => {
    const view = statusView({ connection: 'running', snapshot: snapshot(), now: 10_000 });
    assert.equal(view.text, '$(server) 5.2/12.0 GB · LLM hot · SD idle');
    assert.equal(view.severity, 'normal');
    assert.match(view.accessibilityLabel, /^VRAM Relay: 5\.2\/12\.0 GB/);
  });

  it('lists several GPUs and marks the simulated device as a demo', () => {
    const s = snapshot({
      deviceSource: 'simulated',
      devices: [
        { id: 'sim:0', name: 'Sim A', kind: 'simulated', total: 12 * GiB, used: 2 * GiB, free: 10 * GiB, unified: false, at: 0 },
        { id: 'sim:1', name: 'Sim B', kind: 'simulated', total: 8 * GiB, used: 1 * GiB, free: 7 * GiB, unified: false, at: 0 },
      ],
      effectiveFree: {},
    });
    const view = statusView({ connection: 'running', snapshot: s, now: 0 });
    assert.equal(view.text, '$(server) 2.0/12.0 GB · 1.0/8.0 GB [demo] · LLM hot · SD idle');
    assert.match(view.tooltip, /demo device/);
  });

  it('says CPU only when there is no GPU', () => {
    const s = snapshot({
      deviceSource: 'cpu-only',
      devices: [{ id: 'cpu', name: 'System RAM', kind: 'cpu', total: 24 * GiB, used: 8 * GiB, free: 16 * GiB, unified: true, at: 0 }],
    });
    assert.match(statusView({ connection: 'running', snapshot: s, now: 0 }).text, /CPU only · LLM hot/);
  });

  it('shows the running image stage with sampling steps', () => {
    const s = snapshot({ running: [imageJob()], llm: { ...snapshot().llm, state: 'warm' } });
    const view = statusView({ connection: 'running', snapshot: s, now: 0, activeStage: { jobId: 'job-1', stage: 'diffusion', step: 7, totalSteps: 20 } });
    assert.equal(view.text, '$(server) 5.2/12.0 GB · LLM warm · SD sampling 7/20');
  });

  it('turns to warning when effective free memory is under the margin', () => {
    const view = statusView({ connection: 'running', snapshot: snapshot({ effectiveFree: { 'nvidia:0': 100 * MiB } }), now: 0 });
    assert.equal(view.severity, 'warning');
  });

  it('turns to error after a recent failure and back once it is old', () => {
    const s = snapshot({ recentDecisions: [decision({ kind: 'fail', at: 1000, reason: 'VAE decode failed twice' })] });
    const recent = statusView({ connection: 'running', snapshot: s, now: 2000 });
    assert.equal(recent.severity, 'error');
    assert.match(recent.tooltip, /VAE decode failed twice/);
    assert.equal(statusView({ connection: 'running', snapshot: s, now: 1000 + RECENT_TROUBLE_MS + 1 }).severity, 'normal');
  });

  it('turns to error while a running job had to degrade', () => {
    const degraded = imageJob({ plan: plan({ placement: { textEncoder: 'gpu', diffusion: 'gpu', vae: 'gpu', vaeTiling: true, flashAttention: false } }) });
    const view = statusView({ connection: 'running', snapshot: snapshot({ running: [degraded] }), now: 0 });
    assert.equal(view.severity, 'error');
    assert.match(view.tooltip, /VAE will decode tiled/);
  });

  it('has a tooltip with the breakdown and command links', () => {
    const { tooltip } = statusView({ connection: 'running', snapshot: snapshot(), now: 0 });
    assert.match(tooltip, /\| RTX 4070 \| 5\.2 GB \| 6\.0 GB \| 12\.0 GB \|/);
    assert.match(tooltip, /LLM weights 4\.0 GB/);
    assert.match(tooltip, /\(command:vramRelay\.showBudgetPanel\)/);
    assert.match(tooltip, /\(command:vramRelay\.freeGpuMemory\)/);
    assert.match(tooltip, /\(command:vramRelay\.showLogs\)/);
  });

  it('says when the sidecar is starting or failed', () => {
    assert.match(statusView({ connection: 'starting', now: 0 }).text, /loading~spin/);
    const failed = statusView({ connection: 'failed', failure: 'dist/sidecar.js not found', now: 0 });
    assert.equal(failed.severity, 'error');
    assert.match(failed.tooltip, /restartSidecar/);
    assert.match(failed.tooltip, /sidecar\\\.js not found/);
  });

  it('says the sidecar is restarting, why, which restart it is and what happens to the jobs in flight', () => {
    const view = statusView({
      connection: 'restarting',
      failure: 'killed by SIGKILL',
      restart: { attempt: 1, max: 4 },
      jobsInFlight: 2,
      snapshot: snapshot(),
      now: 0,
    });
    assert.equal(view.text, '$(sync~spin) VRAM Relay restarting…');
    assert.equal(view.severity, 'warning');
    assert.match(view.tooltip, /stopped unexpectedly \(killed by SIGKILL\) and is restarting \(automatic restart 1 of 4\)/);
    assert.match(view.tooltip, /2 jobs in flight: image jobs are resubmitted/);
    assert.match(view.tooltip, /\(command:vramRelay\.showLogs\)/);
    assert.match(view.accessibilityLabel, /restarting \(killed by SIGKILL\)/);
    // The figures of a process that is gone are not shown as if they were current.
    assert.doesNotMatch(view.text, /GB/);
  });

  it('once automatic restarts are spent, says it stopped and restarts on click', () => {
    const view = statusView({ connection: 'failed', failure: 'The sidecar stopped 5 times in 3 minutes and was not restarted again', now: 0 });
    assert.equal(view.text, '$(error) VRAM Relay stopped');
    assert.equal(view.command, 'vramRelay.restartSidecar');
    assert.match(view.tooltip, /stopped 5 times in 3 minutes/);
    assert.match(view.tooltip, /\[Restart Sidecar\]\(command:vramRelay\.restartSidecar\)/);
    assert.match(view.accessibilityLabel, /Click to restart it/);
  });

  it('goes back to the normal display when the sidecar is back, remembering the restart for a few minutes', () => {
    const lastRestart = { at: 1000, reason: 'killed by SIGKILL' };
    const back = statusView({ connection: 'running', snapshot: snapshot(), lastRestart, now: 2000 });
    assert.equal(back.text, '$(server) 5.2/12.0 GB · LLM hot · SD idle');
    assert.equal(back.command, 'vramRelay.showBudgetPanel');
    assert.equal(back.severity, 'warning');
    assert.match(back.tooltip, /stopped unexpectedly \(killed by SIGKILL\) and was restarted/);
    const later = statusView({ connection: 'running', snapshot: snapshot(), lastRestart, now: 1000 + RECENT_TROUBLE_MS + 1 });
    assert.equal(later.severity, 'normal');
    assert.doesNotMatch(later.tooltip, /restarted/);
  });

  it('marks the LLM as lent while completions are paused', () => {
    assert.match(statusView({ connection: 'running', snapshot: snapshot(), now: 0, completionsPaused: true }).text, /LLM hot \(lent\)/);
  });

  it('says the LLM answers on the CPU while its CPU copy runs in place of the yielded GPU LLM, and when the copy failed', () => {
    const lent = (cpuCopy: 'available' | 'running' | 'set-aside', state: 'cold' | 'hot' = 'cold') =>
      statusView({ connection: 'running', snapshot: snapshot({ running: [imageJob()], llm: { ...snapshot().llm, state, cpuCopy } }), now: 0 });
    const running = lent('running');
    assert.match(running.text, / · LLM on CPU · /);
    assert.match(running.tooltip, /CPU copy of the LLM is running \(RAM, no VRAM\)/);
    assert.match(lent('available').text, / · LLM cold · /, 'not started yet');
    assert.doesNotMatch(lent('available').tooltip, /CPU copy/);
    assert.match(lent('running', 'hot').text, / · LLM hot · /, 'the GPU LLM is back: it answers');
    assert.match(lent('set-aside').tooltip, /CPU copy of the LLM failed and is set aside/);
  });
});
