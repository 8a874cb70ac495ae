/**
 * Checking a downloaded archive against the digest GitHub publishes for it (pure).
 *
 * The releases API lists `"digest": "sha256:<64 hex>"` for every asset uploaded since June 2025, computed by
 * GitHub at upload. Without a digest there is nothing to check a download against, so nothing is installed.
 */

export interface Sha256Digest {
  algorithm: 'sha256';
  /** Lower-case hex, 64 characters. */
  hex: string;
}

/** The sha256 in an API `digest` field; undefined when there is none or it is another algorithm. */
export function parseAssetDigest(digest: string | null | undefined): Sha256Digest | undefined {
  if (typeof digest !== 'string') return undefined;
  const match = /^sha256:([0-9a-f]{64})$/i.exec(digest.trim());
  return match ? { algorithm: 'sha256', hex: match[1].toLowerCase() } : undefined;
}

/** True when the computed hex digest is the published one. */
export function digestMatches(expected: Sha256Digest, actualHex: string): boolean {
  return expected.hex === actualHex.trim().toLowerCase();
}

/** Why an asset cannot be verified, worded for the user with what to do instead. */
export function noDigestMessage(assetName: string, releasePage: string): string {
  return (
    `GitHub publishes no sha256 digest for ${assetName}, so the download cannot be verified and was not installed. ` +
    `Download it by hand from ${releasePage}, check it, unpack it, and set vramRelay.image.binaryPath to its sd-cli.`
  );
}

/** The download is not the published file. */
export function digestMismatchMessage(assetName: string, expected: Sha256Digest, actualHex: string, releasePage: string): string {
  return (
    `${assetName} does not match the sha256 digest GitHub publishes for it (expected ${expected.hex}, got ${actualHex}); ` +
    `the file was deleted and nothing was installed. Try again later, or download it by hand from ${releasePage} and set vramRelay.image.binaryPath.`
  );
}
