/**
 * Both resident, no arbitration: llama-server keeps the LLM loaded (every layer on the GPU) all session, and each
 * image job runs sd-cli --auto-fit with whatever the driver says is free. An image that does not fit fails (or
 * comes out gray on an older build); nothing ever waits for anything.
 */

import { LLM_META } from '../catalog';
import { Session, WaitQueue, type PolicyRun } from '../session';
import type { ImageArrival, Trace } from '../trace';
import type { SdBuild } from '../truth';
import { TrueLlm, TrueSdCli } from '../workers';
import { moveLlm, runAutoFit, serve } from './common';

export async function runBothResident(trace: Trace, sdBuild: SdBuild = 'current'): Promise<PolicyRun> {
  const session = new Session(trace, sdBuild);
  const llm = new TrueLlm(session.world, LLM_META.blockCount + 1);
  llm.prime('hot');
  const sd = new TrueSdCli(session.world);
  const images = new WaitQueue<ImageArrival>();
  const requests = session.requestQueue();
  session.deliver((job) => (job.kind === 'image' ? images.push(job) : requests.push(job)));

  void (async () => {
    for (;;) await runAutoFit(session, sd, await images.take());
  })();
  void (async () => {
    for (;;) {
      const job = await requests.take();
      // The server is restarted by hand after a crash; here, at the next request.
      if (llm.state() !== 'hot' && !(await moveLlm(llm, 'hot'))) {
        session.end(job.id, 'failed', 'llama-server could not load the model: out of memory');
        continue;
      }
      await serve(session, llm, job);
    }
  })();
  return session.finish('bothResident', { llmReloads: () => llm.weightLoads });
}
