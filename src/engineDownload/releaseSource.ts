/**
 * Where official stable-diffusion.cpp releases come from, and reading the latest one from the GitHub releases API.
 * The API base is a parameter so that tests point it at a local server.
 */

import { EngineInstallError } from './installError';
import { parseRelease, ReleaseFormatError, type EngineRelease } from './releaseAssets';

export interface ReleaseSource {
  /** `https://api.github.com`, or a local server in tests. */
  apiBase: string;
  /** `owner/name`. */
  repo: string;
  /** Every download URL must start with this (official release files only). */
  downloadPrefix: string;
  /** The releases page, for downloading by hand. */
  releasesPage: string;
}

export const SD_RELEASE_SOURCE: ReleaseSource = {
  apiBase: 'https://api.github.com',
  repo: 'leejet/stable-diffusion.cpp',
  downloadPrefix: 'https://github.com/leejet/stable-diffusion.cpp/releases/download/',
  releasesPage: 'https://github.com/leejet/stable-diffusion.cpp/releases',
};

export const USER_AGENT = 'vram-relay-engine-download';

export interface FetchOptions {
  signal?: AbortSignal;
  fetchImpl?: typeof fetch;
  /** Limit for the API answer (default 30 s). */
  timeoutMs?: number;
}

/** `GET /repos/{repo}/releases/latest`, parsed. Throws EngineInstallError with what to do. */
export async function fetchLatestRelease(source: ReleaseSource, options: FetchOptions = {}): Promise<EngineRelease> {
  const url = `${source.apiBase.replace(/\/+$/, '')}/repos/${source.repo}/releases/latest`;
  const fetchImpl = options.fetchImpl ?? fetch;
  const timeout = AbortSignal.timeout(options.timeoutMs ?? 30_000);
  const signal = options.signal ? AbortSignal.any([options.signal, timeout]) : timeout;
  let response: Response;
  try {
    response = await fetchImpl(url, {
      signal,
      headers: { Accept: 'application/vnd.github+json', 'X-GitHub-Api-Version': '2022-11-28', 'User-Agent': USER_AGENT },
    });
  } catch (error) {
    if (options.signal?.aborted) throw new EngineInstallError('cancelled', 'The download was cancelled; nothing was installed.');
    throw networkFailure(error, new URL(url).host, source, timeout.aborted);
  }
  if (!response.ok) {
    await response.body?.cancel().catch(() => undefined);
    throw httpFailure(response, source);
  }
  let json: unknown;
  try {
    json = await response.json();
  } catch (error) {
    if (options.signal?.aborted) throw new EngineInstallError('cancelled', 'The download was cancelled; nothing was installed.');
    throw new EngineInstallError(
      'http',
      `The GitHub releases API did not answer with JSON (${(error as Error).message}): try again, or download sd-cli by hand from ${source.releasesPage}.`,
    );
  }
  try {
    return parseRelease(json, source.releasesPage);
  } catch (error) {
    if (error instanceof ReleaseFormatError) throw new EngineInstallError('http', error.message);
    throw error;
  }
}

/** A failed request as a message: the host, the cause, and the way around it. */
export function networkFailure(error: unknown, host: string, source: ReleaseSource, timedOut: boolean, doing = 'reach'): EngineInstallError {
  const cause = (error as { cause?: { code?: string; message?: string } } | undefined)?.cause;
  const why = timedOut ? 'no answer in time' : (cause?.code ?? cause?.message ?? (error as Error | undefined)?.message ?? String(error));
  return new EngineInstallError(
    'network',
    `Could not ${doing} ${host} (${why}); nothing was installed. Check the network connection and VS Code's proxy settings (http.proxy), ` +
      `or download sd-cli by hand from ${source.releasesPage} and set vramRelay.image.binaryPath.`,
  );
}

function httpFailure(response: Response, source: ReleaseSource): EngineInstallError {
  const byHand = `download sd-cli by hand from ${source.releasesPage} and set vramRelay.image.binaryPath`;
  if ((response.status === 403 || response.status === 429) && response.headers.get('x-ratelimit-remaining') === '0') {
    const reset = Number(response.headers.get('x-ratelimit-reset'));
    const when = Number.isFinite(reset) && reset > 0 ? ` after ${new Date(reset * 1000).toLocaleTimeString()}` : ' in an hour';
    return new EngineInstallError('http', `GitHub's limit on requests without an account is used up for now: try again${when}, or ${byHand}.`);
  }
  if (response.status === 404) return new EngineInstallError('http', `GitHub lists no published release of ${source.repo}: ${byHand}.`);
  return new EngineInstallError('http', `GitHub answered ${response.status} ${response.statusText}: try again later, or ${byHand}.`);
}
