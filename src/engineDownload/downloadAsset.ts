/**
 * Downloads one release file to a new file, hashing it on the way, and checks it against the published sha256.
 * A download that fails for any reason (network, cancel, stall, wrong size, wrong digest, disk) leaves no file.
 */

import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { digestMatches, digestMismatchMessage, noDigestMessage, parseAssetDigest } from './assetDigest';
import { EngineInstallError, fileSystemFailure } from './installError';
import type { ReleaseAsset } from './releaseAssets';
import { networkFailure, USER_AGENT, type ReleaseSource } from './releaseSource';

export interface DownloadOptions {
  source: ReleaseSource;
  /** The release's page, named in messages. */
  releasePage: string;
  signal?: AbortSignal;
  fetchImpl?: typeof fetch;
  /** Bytes received so far for this file. */
  onBytes?: (received: number) => void;
  /** A connection that delivers nothing for this long is given up (default 60 s). */
  stallMs?: number;
}

const cancelledError = () => new EngineInstallError('cancelled', 'The download was cancelled; the partial files were deleted and nothing was installed.');

/** Downloads `asset` to `file` (which must not exist) and verifies it; returns the sha256 hex. */
export async function downloadAsset(asset: ReleaseAsset, file: string, options: DownloadOptions): Promise<string> {
  const expected = parseAssetDigest(asset.digest);
  if (!expected) throw new EngineInstallError('noDigest', noDigestMessage(asset.name, options.releasePage));
  if (!asset.url.startsWith(options.source.downloadPrefix)) {
    throw new EngineInstallError(
      'source',
      `${asset.name} is not served from the official release downloads (${options.source.downloadPrefix}); nothing was downloaded. Download it by hand from ${options.releasePage}.`,
    );
  }

  const stall = new AbortController();
  const signal = options.signal ? AbortSignal.any([options.signal, stall.signal]) : stall.signal;
  const stallMs = options.stallMs ?? 60_000;
  let stallTimer = setTimeout(() => stall.abort(), stallMs);
  const alive = () => {
    clearTimeout(stallTimer);
    stallTimer = setTimeout(() => stall.abort(), stallMs);
  };
  const host = new URL(asset.url).host;
  const failed = (error: unknown): EngineInstallError => {
    if (error instanceof EngineInstallError) return error;
    if (options.signal?.aborted) return cancelledError();
    const code = (error as NodeJS.ErrnoException | undefined)?.code;
    if (code && /^E[A-Z]+$/.test(code) && !code.startsWith('ECONN') && code !== 'ETIMEDOUT' && code !== 'EPIPE' && code !== 'ECANCELED') {
      return fileSystemFailure(error, `saving ${asset.name}`, options.releasePage);
    }
    return networkFailure(error, host, options.source, stall.signal.aborted, `finish downloading ${asset.name} from`);
  };

  const hash = createHash('sha256');
  let received = 0;
  try {
    const response = await (options.fetchImpl ?? fetch)(asset.url, {
      signal,
      redirect: 'follow',
      headers: { Accept: 'application/octet-stream', 'User-Agent': USER_AGENT },
    });
    if (!response.ok || !response.body) {
      await response.body?.cancel().catch(() => undefined);
      throw new EngineInstallError(
        'http',
        `Downloading ${asset.name} failed: ${host} answered ${response.status} ${response.statusText}. Try again later, or download it by hand from ${options.releasePage}.`,
      );
    }
    const counter = new Transform({
      transform(chunk: Buffer, _encoding, done) {
        received += chunk.length;
        if (received > asset.size) {
          done(sizeError(asset, received, options.releasePage));
          return;
        }
        hash.update(chunk);
        alive();
        options.onBytes?.(received);
        done(null, chunk);
      },
    });
    await pipeline(Readable.fromWeb(response.body as WebReadableStream<Uint8Array>), counter, createWriteStream(file, { flags: 'wx' }), { signal });
    if (received !== asset.size) throw sizeError(asset, received, options.releasePage);
  } catch (error) {
    await rm(file, { force: true });
    throw failed(error);
  } finally {
    clearTimeout(stallTimer);
  }

  const actual = hash.digest('hex');
  if (!digestMatches(expected, actual)) {
    await rm(file, { force: true });
    throw new EngineInstallError('digest', digestMismatchMessage(asset.name, expected, actual, options.releasePage));
  }
  return actual;
}

function sizeError(asset: ReleaseAsset, received: number, releasePage: string): EngineInstallError {
  return new EngineInstallError(
    'digest',
    `${asset.name} arrived with ${received} bytes where GitHub lists ${asset.size}; it was deleted and nothing was installed. ` +
      `Try again, or download it by hand from ${releasePage}.`,
  );
}
