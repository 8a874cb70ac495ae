/**
 * Downloading an sd.cpp release against a local HTTP server that plays GitHub: the releases API, the download URL
 * that redirects to the file host, and zips built here. The real probe (`sd-cli --help`) runs on the unpacked
 * binary, a shell script printing the stand-in's usage text, so this suite runs on POSIX only.
 */

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, beforeEach, describe, it } from 'node:test';
import JSZip from 'jszip';
import { checkDownloadedSd } from '../../../src/engineDownload/binaryCheck';
import { EngineInstallError, type InstallFailure } from '../../../src/engineDownload/installError';
import { installEngine, type InstallProgress } from '../../../src/engineDownload/installEngine';
import { downloadChoices, type EngineRelease } from '../../../src/engineDownload/releaseAssets';
import { fetchLatestRelease, type ReleaseSource } from '../../../src/engineDownload/releaseSource';
import { probeSdBinary } from '../../../sidecar/workers/sd/sdHelp';
import { newReleaseHelp } from '../../standins/sdcppStandinHelp';

const TAG = 'master-900-abc1234';
const CPU_ASSET = 'sd-master-abc1234-bin-Linux-Ubuntu-24.04-x86_64.zip';
const VULKAN_ASSET = 'sd-master-abc1234-bin-Linux-Ubuntu-24.04-x86_64-vulkan.zip';
const LINUX = { platform: 'linux' as const, arch: 'x64' };
const TIMEOUT = { timeout: 30_000 };

interface Served {
  body: Buffer;
  /** What the API says about the file (default: the body's sha256). */
  digest?: string | null;
  /** Serve only this many bytes, then: drop the connection, or keep it open and send nothing more. */
  cutAt?: number;
  afterCut?: 'drop' | 'stall';
}

let server: Server;
let base = '';
let root: string;
let enginesDir: string;
let files = new Map<string, Served>();
let requests: string[] = [];
let apiAnswer: ((res: ServerResponse) => void) | undefined;

function source(): ReleaseSource {
  return { apiBase: base, repo: 'leejet/stable-diffusion.cpp', downloadPrefix: `${base}/download/`, releasesPage: `${base}/releases` };
}

function releaseJson(): unknown {
  return {
    tag_name: TAG,
    name: TAG,
    html_url: `${base}/releases/tag/${TAG}`,
    assets: [...files.entries()].map(([name, served]) => ({
      name,
      state: 'uploaded',
      size: served.body.length,
      digest: served.digest === undefined ? `sha256:${sha256(served.body)}` : served.digest,
      browser_download_url: `${base}/download/${TAG}/${name}`,
    })),
  };
}

function handle(req: IncomingMessage, res: ServerResponse): void {
  const url = req.url ?? '';
  requests.push(url);
  if (url === '/repos/leejet/stable-diffusion.cpp/releases/latest') {
    if (apiAnswer) return apiAnswer(res);
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(releaseJson()));
    return;
  }
  // GitHub answers release downloads with a redirect to its file host.
  const download = /^\/download\/[^/]+\/(.+)$/.exec(url);
  if (download) {
    res.writeHead(302, { location: `/objects/${download[1]}` });
    res.end();
    return;
  }
  const object = /^\/objects\/(.+)$/.exec(url);
  const served = object ? files.get(decodeURIComponent(object[1])) : undefined;
  if (!served) {
    res.writeHead(404);
    res.end();
    return;
  }
  res.writeHead(200, { 'content-type': 'application/zip', 'content-length': served.body.length });
  if (served.cutAt === undefined) {
    res.end(served.body);
    return;
  }
  res.write(served.body.subarray(0, served.cutAt));
  if (served.afterCut === 'drop') setTimeout(() => res.socket?.destroy(), 50);
}

function sha256(bytes: Buffer): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** A release zip: `sd-cli` and `sd-server` scripts printing the usage text (stored without the x bit), a library and its link. */
async function releaseZip(options: { help?: string; extra?: (zip: JSZip) => void; binary?: boolean; prefix?: string } = {}): Promise<Buffer> {
  const zip = new JSZip();
  const prefix = options.prefix ?? '';
  const script = (text: string) => `#!/bin/sh\ncat <<'USAGE'\n${text}\nUSAGE\n`;
  if (options.binary !== false) {
    zip.file(`${prefix}sd-cli`, script(options.help ?? newReleaseHelp('sd-cli')), { unixPermissions: 0o100644 });
    zip.file(`${prefix}sd-server`, script('usage: sd-server [options]'), { unixPermissions: 0o100755 });
  }
  zip.file(`${prefix}libggml.so.0`, Buffer.alloc(64 * 1024, 7), { unixPermissions: 0o100644 });
  zip.file(`${prefix}libggml.so`, 'libggml.so.0', { unixPermissions: 0o120777 });
  zip.file(`${prefix}stable-diffusion.cpp.txt`, 'MIT License', { unixPermissions: 0o100644 });
  options.extra?.(zip);
  return zip.generateAsync({ type: 'nodebuffer', platform: 'UNIX', compression: 'DEFLATE' });
}

async function latest(): Promise<EngineRelease> {
  return fetchLatestRelease(source(), { timeoutMs: 10_000 });
}

async function install(assetName: string, extra: Partial<Parameters<typeof installEngine>[0]> = {}) {
  const release = await latest();
  const choice = downloadChoices(release, LINUX).find((c) => c.asset.name === assetName);
  assert.ok(choice, `no choice for ${assetName}`);
  return installEngine({ release, choice, enginesDir, source: source(), checkBinary: checkDownloadedSd, ...extra });
}

async function rejectsWith(promise: Promise<unknown>, reason: InstallFailure, message?: RegExp): Promise<EngineInstallError> {
  const error = await promise.then(
    () => assert.fail(`expected a ${reason} failure`),
    (e: unknown) => e,
  );
  assert.ok(error instanceof EngineInstallError, `not an EngineInstallError: ${String(error)}`);
  assert.equal(error.reason, reason, error.message);
  if (message) assert.match(error.message, message);
  return error;
}

/** The engines folder holds exactly these names (no staging or retired folders). */
function assertEnginesHold(names: string[]): void {
  const held = existsSync(enginesDir) ? readdirSync(enginesDir).sort() : [];
  assert.deepEqual(held, names.sort());
}

describe('sd.cpp release download', { skip: process.platform === 'win32' ? 'the fake sd-cli is a shell script' : false }, () => {
  before(async () => {
    root = mkdtempSync(join(tmpdir(), 'vrelay-download-'));
    server = createServer(handle);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  after(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    rmSync(root, { recursive: true, force: true });
  });

  beforeEach(() => {
    enginesDir = join(mkdtempSync(join(root, 'case-')), 'engines');
    files = new Map();
    requests = [];
    apiAnswer = undefined;
  });

  it('downloads through the redirect, verifies, unpacks, makes the binaries executable and checks sd-cli', TIMEOUT, async () => {
    files.set(CPU_ASSET, { body: await releaseZip() });
    files.set(VULKAN_ASSET, { body: await releaseZip() });
    const phases = new Set<string>();
    let lastReceived = 0;
    const installed = await install(CPU_ASSET, {
      onProgress: (p: InstallProgress) => {
        phases.add(p.phase);
        assert.ok(p.received >= lastReceived, 'progress never goes back');
        lastReceived = p.received;
      },
    });

    const folder = join(enginesDir, `sd-${TAG}-cpu`);
    assert.equal(installed.folder, folder);
    assert.equal(installed.binaryPath, join(folder, 'sd-cli'));
    assert.ok((statSync(installed.binaryPath).mode & 0o111) !== 0, 'sd-cli was stored without the x bit and must be executable');
    assert.ok((statSync(join(folder, 'sd-server')).mode & 0o111) !== 0);
    assert.equal(readlinkSync(join(folder, 'libggml.so')), 'libggml.so.0');
    assert.ok(lstatSync(join(folder, 'libggml.so')).isSymbolicLink());
    assert.equal(readFileSync(join(folder, 'libggml.so.0')).length, 64 * 1024);
    assert.deepEqual([...phases], ['download', 'unpack', 'check', 'finish']);
    assert.equal(lastReceived, files.get(CPU_ASSET)!.body.length);
    assert.ok(requests.includes(`/download/${TAG}/${CPU_ASSET}`) && requests.includes(`/objects/${CPU_ASSET}`), requests.join(' '));
    assert.ok(!requests.some((r) => r.includes(VULKAN_ASSET)), 'only the chosen build is downloaded');
    assertEnginesHold([`sd-${TAG}-cpu`]);

    const help = await probeSdBinary(installed.binaryPath);
    assert.equal(help.kind, 'sd-cli');
    assert.equal(help.capabilities.backend, 'cpu', 'the folder name tells the sidecar the build');
  });

  it('finds the binary in a nested folder (the ROCm archive keeps build/bin/)', TIMEOUT, async () => {
    files.set(CPU_ASSET, { body: await releaseZip({ prefix: 'build/bin/' }) });
    const installed = await install(CPU_ASSET);
    assert.equal(installed.binaryPath, join(enginesDir, `sd-${TAG}-cpu`, 'build', 'bin', 'sd-cli'));
    assertEnginesHold([`sd-${TAG}-cpu`]);
  });

  it('replaces an earlier install of the same build in one move', TIMEOUT, async () => {
    files.set(CPU_ASSET, { body: await releaseZip() });
    const first = await install(CPU_ASSET);
    writeFileSync(join(first.folder, 'left-from-before'), 'x');
    const second = await install(CPU_ASSET);
    assert.equal(second.folder, first.folder);
    assert.ok(!existsSync(join(second.folder, 'left-from-before')));
    assert.ok(existsSync(second.binaryPath));
    assertEnginesHold([`sd-${TAG}-cpu`]);
  });

  it('refuses a download whose sha256 is not the published one, and deletes it', TIMEOUT, async () => {
    files.set(CPU_ASSET, { body: await releaseZip(), digest: `sha256:${sha256(Buffer.from('something else'))}` });
    await rejectsWith(install(CPU_ASSET), 'digest', /does not match the sha256 digest.*deleted/);
    assertEnginesHold([]);
  });

  it('downloads nothing when no digest is published, and says what to do', TIMEOUT, async () => {
    files.set(CPU_ASSET, { body: await releaseZip(), digest: null });
    const error = await rejectsWith(install(CPU_ASSET), 'noDigest', /cannot be verified/);
    assert.match(error.message, /vramRelay\.image\.binaryPath/);
    assert.ok(!requests.some((r) => r.startsWith('/download/')), 'nothing was fetched');
    assertEnginesHold([]);
  });

  it('refuses download URLs outside the official release downloads', TIMEOUT, async () => {
    files.set(CPU_ASSET, { body: await releaseZip() });
    const release = await latest();
    const choice = downloadChoices(release, LINUX)[0];
    const elsewhere = { ...choice, asset: { ...choice.asset, url: `${base}/objects/${CPU_ASSET}` } };
    await rejectsWith(
      installEngine({ release, choice: elsewhere, enginesDir, source: source(), checkBinary: checkDownloadedSd }),
      'source',
    );
    assert.ok(!requests.some((r) => r.startsWith('/objects/')));
    assertEnginesHold([]);
  });

  it('refuses an archive with an entry outside the folder, writing nothing', TIMEOUT, async () => {
    files.set(CPU_ASSET, { body: await releaseZip({ extra: (zip) => zip.file('../../escaped.sh', 'echo owned', { unixPermissions: 0o100755 }) }) });
    await rejectsWith(install(CPU_ASSET), 'unsafeArchive', /refused/);
    assert.ok(!existsSync(join(enginesDir, '..', 'escaped.sh')) && !existsSync(join(enginesDir, 'escaped.sh')));
    assertEnginesHold([]);
  });

  it('refuses an archive with a link pointing outside the folder', TIMEOUT, async () => {
    files.set(CPU_ASSET, { body: await releaseZip({ extra: (zip) => zip.file('libevil.so', '../../../../etc/passwd', { unixPermissions: 0o120777 }) }) });
    await rejectsWith(install(CPU_ASSET), 'unsafeArchive', /libevil\.so/);
    assertEnginesHold([]);
  });

  it('installs nothing when the unpacked binary is not sd.cpp', TIMEOUT, async () => {
    files.set(CPU_ASSET, { body: await releaseZip({ help: 'hello from something else' }) });
    const error = await rejectsWith(install(CPU_ASSET), 'check', /does not run on this machine: its --help printed "hello from something else" instead of sd\.cpp's usage\. Nothing was installed/);
    assert.ok(!error.message.includes('.partial-'), 'the staging folder, deleted by now, is not named');
    assertEnginesHold([]);
  });

  it('installs nothing when the binary cannot be executed here (another architecture)', TIMEOUT, async () => {
    files.set(CPU_ASSET, {
      body: await releaseZip({ binary: false, extra: (zip) => zip.file('sd-cli', Buffer.from('\x7fELF\x02\x01\x01 not for this machine'), { unixPermissions: 0o100755 }) }),
    });
    await rejectsWith(install(CPU_ASSET), 'check', /sd-cli \(CPU\) does not run on this machine: .+ Nothing was installed/);
    assertEnginesHold([]);
  });

  it('installs nothing when the archive holds no sd.cpp binary', TIMEOUT, async () => {
    files.set(CPU_ASSET, { body: await releaseZip({ binary: false }) });
    await rejectsWith(install(CPU_ASSET), 'noBinary', /contains no sd-cli/);
    assertEnginesHold([]);
  });

  it('a connection dropped mid-download leaves nothing behind', TIMEOUT, async () => {
    const body = await releaseZip({ extra: (zip) => zip.file('big.bin', Buffer.alloc(512 * 1024, 1), { compression: 'STORE' }) });
    files.set(CPU_ASSET, { body, cutAt: 100 * 1024, afterCut: 'drop' });
    await rejectsWith(install(CPU_ASSET), 'network', /Could not finish downloading .* from 127\.0\.0\.1.*download sd-cli by hand/s);
    assertEnginesHold([]);
  });

  it('a stalled download is given up and leaves nothing behind', TIMEOUT, async () => {
    const body = await releaseZip({ extra: (zip) => zip.file('big.bin', Buffer.alloc(512 * 1024, 1), { compression: 'STORE' }) });
    files.set(CPU_ASSET, { body, cutAt: 100 * 1024, afterCut: 'stall' });
    await rejectsWith(install(CPU_ASSET, { stallMs: 300 }), 'network', /no answer in time/);
    assertEnginesHold([]);
  });

  it('cancelling mid-download stops it and leaves nothing behind', TIMEOUT, async () => {
    const body = await releaseZip({ extra: (zip) => zip.file('big.bin', Buffer.alloc(512 * 1024, 1), { compression: 'STORE' }) });
    files.set(CPU_ASSET, { body, cutAt: 100 * 1024, afterCut: 'stall' });
    const abort = new AbortController();
    const installing = install(CPU_ASSET, {
      signal: abort.signal,
      onProgress: (p) => {
        if (p.phase === 'download' && p.received > 0) abort.abort();
      },
    });
    await rejectsWith(installing, 'cancelled', /nothing was installed/);
    assertEnginesHold([]);
  });

  it('removes staging folders a crashed window left a day ago, and keeps recent ones', TIMEOUT, async () => {
    files.set(CPU_ASSET, { body: await releaseZip() });
    const { utimesSync } = await import('node:fs');
    mkdirSync(join(enginesDir, '.partial-old', 'engine'), { recursive: true });
    mkdirSync(join(enginesDir, '.partial-busy'), { recursive: true });
    const dayAgo = new Date(Date.now() - 25 * 60 * 60_000);
    utimesSync(join(enginesDir, '.partial-old'), dayAgo, dayAgo);
    await install(CPU_ASSET);
    assertEnginesHold(['.partial-busy', `sd-${TAG}-cpu`]);
  });
});

describe('GitHub releases API answers', { skip: process.platform === 'win32' ? 'shares the POSIX suite setup' : false }, () => {
  before(async () => {
    root = mkdtempSync(join(tmpdir(), 'vrelay-download-api-'));
    server = createServer(handle);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  after(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    rmSync(root, { recursive: true, force: true });
  });

  it('says when the rate limit is used up and when to try again', TIMEOUT, async () => {
    apiAnswer = (res) => {
      res.writeHead(403, { 'x-ratelimit-remaining': '0', 'x-ratelimit-reset': String(Math.floor(Date.now() / 1000) + 600) });
      res.end('{"message":"API rate limit exceeded"}');
    };
    await rejectsWith(latest(), 'http', /limit on requests without an account is used up for now: try again after/);
  });

  it('says when there is no release, or the answer is not one', TIMEOUT, async () => {
    apiAnswer = (res) => {
      res.writeHead(404);
      res.end('{"message":"Not Found"}');
    };
    await rejectsWith(latest(), 'http', /no published release/);
    apiAnswer = (res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"message":"hello"}');
    };
    await rejectsWith(latest(), 'http', /without a release tag/);
  });

  it('says when GitHub cannot be reached', TIMEOUT, async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const error = await rejectsWith(fetchLatestRelease({ ...source(), apiBase: `http://127.0.0.1:${port}` }, { timeoutMs: 5000 }), 'network');
    assert.match(error.message, /ECONNREFUSED/);
  });
});
