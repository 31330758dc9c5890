import { NftResult } from './nft-runner';

/**
 * nft failed or refused a command. The message names what the blocker was
 * doing, nft's own words, and what that means for the kernel's state:
 * "nft refused to install the drop for VM X: <nft's message>; nothing changed".
 */
export class NftError extends Error {
  constructor(
    /** What the blocker was doing, e.g. "install the drop for VM X". */
    readonly action: string,
    /** nft's message (or why nft did not answer). */
    readonly detail: string,
    /** What state the kernel is in after the failure. */
    readonly kept: string,
    readonly result?: NftResult,
  ) {
    super(NftError.compose(action, detail, kept, result));
    this.name = 'NftError';
  }

  /** An error for a finished nft call that did not succeed. */
  static from(action: string, result: NftResult, kept: string, timeoutKept: string): NftError {
    if (result.failure === 'timeout') return new NftError(action, 'nft did not answer in time and was killed', timeoutKept, result);
    return new NftError(action, nftMessage(result), kept, result);
  }

  private static compose(action: string, detail: string, kept: string, result: NftResult | undefined): string {
    if (result?.failure === 'spawn') return `could not run nft to ${action}: ${detail}; ${kept}`;
    if (result?.failure === 'timeout') return `nft timed out trying to ${action}; ${kept}`;
    return `nft refused to ${action}: ${detail}; ${kept}`;
  }
}

/**
 * nft's stderr on one line, without the "internal:0:0-0: Error: " location
 * prefix it gives every JSON error (there is no source text to point into).
 */
export function nftMessage(result: NftResult): string {
  const lines = result.stderr
    .split('\n')
    .map((l) => l.replace(/^internal:\S*\s*/, '').replace(/^Error:\s*/, '').trim())
    .filter((l) => l !== '' && !/^\^+$/.test(l));
  if (lines.length > 0) return lines.join(' / ');
  return `exit status ${result.code ?? 'unknown'} without a message`;
}
