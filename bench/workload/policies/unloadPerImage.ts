/**
 * Unload the LLM before every image (the common fix): one GPU user at a time. Before each image job the LLM server
 * is stopped; the next LLM request waits for the image job, then starts it again and reloads the model (every
 * layer on the GPU). LLM requests go before queued image jobs. Images run sd-cli --auto-fit on the emptied GPU.
 */

import { LLM_META } from '../catalog';
import { GpuLock, Session, WaitQueue, type PolicyRun } from '../session';
import type { ImageArrival, LlmArrival, Trace } from '../trace';
import type { SdBuild } from '../truth';
import { TrueLlm, TrueSdCli } from '../workers';
import { moveLlm, runAutoFit, serve } from './common';

export async function runUnloadPerImage(trace: Trace, sdBuild: SdBuild = 'current'): Promise<PolicyRun> {
  const session = new Session(trace, sdBuild);
  const llm = new TrueLlm(session.world, LLM_META.blockCount + 1);
  llm.prime('hot');
  const sd = new TrueSdCli(session.world);
  const lock = new GpuLock();
  const images = new WaitQueue<ImageArrival>();
  const requests = session.requestQueue();
  session.deliver((job) => (job.kind === 'image' ? images.push(job) : requests.push(job)));

  void (async () => {
    for (;;) {
      const job = await images.take();
      const release = await lock.acquire(false);
      if (llm.state() !== 'stopped') await moveLlm(llm, 'stopped');
      await runAutoFit(session, sd, job);
      release();
    }
  })();
  void (async () => {
    for (;;) {
      const first = await requests.take();
      const release = await lock.acquire(true);
      // Every request queued by then goes before the next image job.
      for (let job: LlmArrival | undefined = first; job; job = requests.length > 0 ? await requests.take() : undefined) {
        // The first request may have been cancelled while it waited for the GPU: not served, nor the LLM loaded for it.
        if (!session.isOpen(job.id)) continue;
        if (llm.state() !== 'hot' && !(await moveLlm(llm, 'hot'))) session.end(job.id, 'failed', 'llama-server could not load the model: out of memory');
        else await serve(session, llm, job);
      }
      release();
    }
  })();
  return session.finish('unloadPerImage', { llmReloads: () => llm.weightLoads });
}
