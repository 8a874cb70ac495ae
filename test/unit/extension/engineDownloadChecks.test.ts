import assert from 'node:assert/strict';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { SdBinaryError } from '../../../sidecar/workers/sd/sdHelp';
import { checkFailureWords } from '../../../src/engineDownload/binaryCheck';
import { digestMatches, digestMismatchMessage, noDigestMessage, parseAssetDigest } from '../../../src/engineDownload/assetDigest';
import { EngineInstallError, fileSystemFailure } from '../../../src/engineDownload/installError';
import { isSymlinkMode, linkTargetInside, resolveEntryPath, unixMode } from '../../../src/engineDownload/zipEntryPath';

const HEX = '1d8dc3ecd046a666957b5775712a6f81fded1a5bc57a981e4c0c401a04fca28c';
const PAGE = 'https://github.com/leejet/stable-diffusion.cpp/releases/tag/master-889-c678dfe';

describe('asset digests', () => {
  it('reads the API digest field, case-insensitively', () => {
    assert.deepEqual(parseAssetDigest(`sha256:${HEX}`), { algorithm: 'sha256', hex: HEX });
    assert.deepEqual(parseAssetDigest(`SHA256:${HEX.toUpperCase()}`), { algorithm: 'sha256', hex: HEX });
  });

  it('has nothing to check against without a sha256 digest', () => {
    for (const digest of [null, undefined, '', 'sha256:', `sha512:${HEX}${HEX}`, `sha256:${HEX.slice(1)}`, `md5:${HEX}`, `sha256:${HEX}z`]) {
      assert.equal(parseAssetDigest(digest), undefined, String(digest));
    }
  });

  it('matches only the same digest', () => {
    const expected = parseAssetDigest(`sha256:${HEX}`)!;
    assert.equal(digestMatches(expected, HEX.toUpperCase()), true);
    assert.equal(digestMatches(expected, HEX.replace(/^1/, '2')), false);
  });

  it('tells the user what to do when a file cannot be verified or does not match', () => {
    const missing = noDigestMessage('sd.zip', PAGE);
    assert.match(missing, /cannot be verified/);
    assert.ok(missing.includes(PAGE) && missing.includes('vramRelay.image.binaryPath'));
    const mismatch = digestMismatchMessage('sd.zip', parseAssetDigest(`sha256:${HEX}`)!, 'ab'.repeat(32), PAGE);
    assert.ok(mismatch.includes(HEX) && mismatch.includes('ab'.repeat(32)) && mismatch.includes('deleted'));
  });
});

describe('zip entry paths', () => {
  const dest = path.resolve('/tmp/engines/.partial-x/engine');

  it('places ordinary entries below the folder, with either separator', () => {
    assert.deepEqual(resolveEntryPath(dest, 'sd-cli'), { ok: true, path: path.join(dest, 'sd-cli'), relative: 'sd-cli' });
    const nested = resolveEntryPath(dest, 'build/bin/libggml.so');
    assert.ok(nested.ok && nested.path === path.join(dest, 'build', 'bin', 'libggml.so'));
    const backslashed = resolveEntryPath(dest, 'build\\bin\\sd-cli.exe');
    assert.ok(backslashed.ok && backslashed.path === path.join(dest, 'build', 'bin', 'sd-cli.exe'));
    assert.ok(resolveEntryPath(dest, './sd-cli').ok);
    assert.ok(resolveEntryPath(dest, '..sd-cli').ok, 'a name that merely starts with two dots stays inside');
  });

  it('refuses entries that leave the folder or name nothing', () => {
    for (const name of ['../evil', 'a/../../evil', '..\\evil', '/etc/passwd', '\\\\server\\share\\x', 'C:\\Windows\\x.dll', 'c:evil', '', 'a\0b', './', 'a/..']) {
      const result = resolveEntryPath(dest, name);
      assert.equal(result.ok, false, JSON.stringify(name));
    }
  });

  it('checks Windows paths with the Windows rules', () => {
    const winDest = 'C:\\Users\\me\\AppData\\engines\\x';
    const ok = resolveEntryPath(winDest, 'bin/sd-cli.exe', path.win32);
    assert.ok(ok.ok && ok.path === 'C:\\Users\\me\\AppData\\engines\\x\\bin\\sd-cli.exe');
    assert.equal(resolveEntryPath(winDest, 'bin/D:evil.dll', path.win32).ok, false);
    assert.equal(resolveEntryPath(winDest, '..\\..\\evil.dll', path.win32).ok, false);
  });

  it('lets a symbolic link point only below the folder', () => {
    const link = path.join(dest, 'lib', 'libggml.so');
    assert.equal(linkTargetInside(dest, link, 'libggml.so.0'), true);
    assert.equal(linkTargetInside(dest, link, 'sub/libggml.so.0'), true);
    assert.equal(linkTargetInside(dest, link, '../../outside'), false);
    assert.equal(linkTargetInside(dest, link, '/usr/lib/libc.so'), false);
    assert.equal(linkTargetInside(dest, link, 'C:\\x'), false);
    assert.equal(linkTargetInside(dest, link, '..'), false);
  });

  it('reads Unix modes and symbolic links from the external attributes', () => {
    assert.equal(unixMode((0o100755 << 16) >>> 0), 0o100755);
    assert.equal(isSymlinkMode(unixMode((0o120777 << 16) >>> 0)), true);
    assert.equal(isSymlinkMode(unixMode((0o100644 << 16) >>> 0)), false);
    assert.equal(unixMode(0x20), 0, 'a zip made on Windows stores no Unix mode');
  });
});

describe('file-system failures', () => {
  it('says the disk is full, and names the code otherwise', () => {
    const full = fileSystemFailure(Object.assign(new Error('no space left on device'), { code: 'ENOSPC' }), 'unpacking sd.zip', PAGE);
    assert.equal(full.reason, 'disk');
    assert.match(full.message, /disk filled up while unpacking sd\.zip/);
    const denied = fileSystemFailure(Object.assign(new Error('permission denied'), { code: 'EACCES' }), 'unpacking sd.zip', PAGE);
    assert.equal(denied.reason, 'filesystem');
    assert.ok(denied.message.includes('EACCES') && denied.message.includes(PAGE));
    const kept = new EngineInstallError('digest', 'x');
    assert.equal(fileSystemFailure(kept, 'y', PAGE), kept);
  });
});

describe('downloaded binary check words', () => {
  const staged = '/s/engines/.partial-ab12/engine/sd-cli';
  it('quotes what a binary that is not sd.cpp printed (an old C library shows here)', () => {
    const error = new SdBinaryError(
      `${staged} does not look like stable-diffusion.cpp (sd-cli): its --help output lists none of the usual sd.cpp options (--sampling-method, --cfg-scale, --diffusion-model) and begins with "sd-cli: /lib/libc.so.6: version \`GLIBC_2.38' not found". Check the path and set vramRelay.image.binaryPath to the sd-cli.`,
      'not-sdcpp',
    );
    assert.equal(checkFailureWords(error, staged), "its --help printed \"sd-cli: /lib/libc.so.6: version `GLIBC_2.38' not found\" instead of sd.cpp's usage.");
  });

  it('names the file, not the staging folder, and drops the advice about the setting', () => {
    const error = new SdBinaryError(`${staged} cannot be run (ENOEXEC): make it executable (chmod +x) or set vramRelay.image.binaryPath to x.`, 'not-executable');
    assert.equal(checkFailureWords(error, staged), 'sd-cli cannot be run (ENOEXEC).');
  });
});
