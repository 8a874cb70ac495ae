/**
 * A static reservation for the image model (the KoboldCpp way): the LLM is loaded once with as many GPU layers as
 * fit in what the card has free minus a fixed reservation for the image model (KoboldCpp: SDXL 9 GB, SD1.5 4.25 GB;
 * for Flux, not published, its weights + 2 GB by the same rule), and stays so all session; the rest of its layers
 * run on the CPU. Image jobs run sd-cli --auto-fit in what is left and fail when they do not fit in it. The
 * reservation is the largest one among the user's image models, since it is fixed for the session.
 */

import { KOBOLDCPP_STATIC_RESERVATION } from '../../../sidecar/core/estimators/figures';
import { GiB, MiB, type Bytes } from '../../../sidecar/core/types';
import type { ImageModel } from '../catalog';
import { Session, WaitQueue, type PolicyRun } from '../session';
import type { ImageArrival, Trace } from '../trace';
import type { SdBuild } from '../truth';
import { TrueLlm, TrueSdCli } from '../workers';
import { layersFor, moveLlm, runAutoFit, serve } from './common';

/** Headroom the LLM's layer count leaves beside the reservation. */
const LLM_HEADROOM = 512 * MiB;

export function reservationFor(model: ImageModel): Bytes {
  if (model.kind === 'sd15') return KOBOLDCPP_STATIC_RESERVATION.sd15;
  if (model.kind === 'sdxl') return KOBOLDCPP_STATIC_RESERVATION.sdxl;
  return model.weights.textEncoder + model.weights.diffusion + model.weights.vae + 2 * GiB;
}

export async function runStaticReservation(trace: Trace, sdBuild: SdBuild = 'current'): Promise<PolicyRun> {
  const session = new Session(trace, sdBuild);
  const world = session.world;
  const reservation = Math.max(...Object.values(trace.models).map(reservationFor));
  const layers = layersFor(Math.max(0, world.reportedFree() - reservation - LLM_HEADROOM));
  session.notes.push(`reservation ${(reservation / GiB).toFixed(2)} GB; LLM on ${layers}/${world.llm.meta.blockCount + 1} GPU layers`);
  const llm = new TrueLlm(world, layers);
  llm.prime('hot');
  const sd = new TrueSdCli(world);
  const images = new WaitQueue<ImageArrival>();
  const requests = session.requestQueue();
  session.deliver((job) => (job.kind === 'image' ? images.push(job) : requests.push(job)));

  void (async () => {
    for (;;) await runAutoFit(session, sd, await images.take());
  })();
  void (async () => {
    for (;;) {
      const job = await requests.take();
      if (llm.state() !== 'hot' && !(await moveLlm(llm, 'hot'))) {
        session.end(job.id, 'failed', 'the LLM could not load: out of memory');
        continue;
      }
      await serve(session, llm, job);
    }
  })();
  return session.finish('staticReservation', { llmReloads: () => llm.weightLoads });
}
