/**
 * Keep-alive timer unloading (the Ollama way): the LLM is loaded when a request comes and unloaded after 5 minutes
 * without one. At load it gets as many GPU layers as fit in the free memory the driver reports minus Ollama's
 * 457 MiB reserve (the rest run on the CPU) and keeps that count until it is unloaded. Image jobs run sd-cli
 * --auto-fit with whatever is free: while the LLM is resident and there is no room, they fail.
 */

import { OLLAMA_DEVICE_RESERVE } from '../../../sidecar/core/estimators/figures';
import type { Millis } from '../../../sidecar/core/types';
import { LLM_META } from '../catalog';
import { Session, WaitQueue, type PolicyRun } from '../session';
import type { ImageArrival, Trace } from '../trace';
import type { SdBuild } from '../truth';
import { TrueLlm, TrueSdCli } from '../workers';
import { layersFor, moveLlm, runAutoFit, serve } from './common';

export const KEEP_ALIVE_MS: Millis = 5 * 60_000;

export async function runKeepAlive(trace: Trace, sdBuild: SdBuild = 'current', keepAliveMs: Millis = KEEP_ALIVE_MS): Promise<PolicyRun> {
  const session = new Session(trace, sdBuild);
  const world = session.world;
  const llm = new TrueLlm(world, LLM_META.blockCount + 1);
  llm.prime('hot');
  const sd = new TrueSdCli(world);
  const images = new WaitQueue<ImageArrival>();
  const requests = session.requestQueue();
  session.deliver((job) => (job.kind === 'image' ? images.push(job) : requests.push(job)));

  let expiry: AbortController | null = null;
  let unloading: Promise<boolean> | null = null;
  const cancelExpiry = () => {
    expiry?.abort();
    expiry = null;
  };
  const armExpiry = () => {
    cancelExpiry();
    const timer = new AbortController();
    expiry = timer;
    world.clock.sleep(keepAliveMs, timer.signal).then(
      async () => {
        if (expiry !== timer) return;
        expiry = null;
        unloading = moveLlm(llm, 'stopped');
        await unloading;
        unloading = null;
      },
      () => undefined,
    );
  };
  armExpiry();

  void (async () => {
    for (;;) await runAutoFit(session, sd, await images.take());
  })();
  void (async () => {
    for (;;) {
      const job = await requests.take();
      cancelExpiry();
      // A request during the unload waits for it, then loads afresh.
      if (unloading) await unloading;
      if (llm.state() !== 'hot') {
        if (llm.state() === 'stopped' || llm.state() === 'cold') llm.configure(layersFor(Math.max(0, world.reportedFree() - OLLAMA_DEVICE_RESERVE)));
        if (!(await moveLlm(llm, 'hot'))) {
          session.end(job.id, 'failed', 'the LLM runner aborted while loading: out of memory');
          armExpiry();
          continue;
        }
      }
      await serve(session, llm, job);
      armExpiry();
    }
  })();
  return session.finish('keepAlive', { llmReloads: () => llm.weightLoads });
}
