/** Why an engine download or install stopped, with a message that says what to do. */

export type InstallFailure =
  /** GitHub could not be reached, or the connection broke or stalled. */
  | 'network'
  /** GitHub answered with an error status (rate limit, no release, server error). */
  | 'http'
  /** The user cancelled. */
  | 'cancelled'
  /** No sha256 digest is published for a file, so it cannot be verified. */
  | 'noDigest'
  /** The download is not the published file (digest or size). */
  | 'digest'
  /** A download URL is not where official releases are published. */
  | 'source'
  /** Not enough free disk space, or the disk filled up. */
  | 'disk'
  /** The archive is damaged or not a zip. */
  | 'archive'
  /** The archive tries to write outside its folder. */
  | 'unsafeArchive'
  /** The archive holds no sd-cli / sd / sd-server. */
  | 'noBinary'
  /** The unpacked binary does not run here or is not sd.cpp. */
  | 'check'
  /** Files could not be written or moved (permissions, a file in use). */
  | 'filesystem';

export class EngineInstallError extends Error {
  constructor(
    readonly reason: InstallFailure,
    message: string,
  ) {
    super(message);
    this.name = 'EngineInstallError';
  }
}

const DISK_FULL = new Set(['ENOSPC', 'EDQUOT']);

/** A file-system error as an EngineInstallError: a full disk says so; anything else names the code and the path. */
export function fileSystemFailure(error: unknown, doing: string, releasePage: string): EngineInstallError {
  if (error instanceof EngineInstallError) return error;
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  if (code && DISK_FULL.has(code)) {
    return new EngineInstallError(
      'disk',
      `The disk filled up while ${doing}; the partial files were deleted and nothing was installed. Free some space and run Find Engines again.`,
    );
  }
  const detail = code ? `${code}: ${(error as Error).message}` : String((error as Error | undefined)?.message ?? error);
  return new EngineInstallError(
    'filesystem',
    `Could not finish ${doing} (${detail}); nothing was installed. Check that VS Code may write to its storage folder, ` +
      `or download sd-cli by hand from ${releasePage} and set vramRelay.image.binaryPath.`,
  );
}
