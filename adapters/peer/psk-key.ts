import { closeSync, fstatSync, openSync, readFileSync } from 'node:fs';

/** Fewest key bytes accepted: 256 bits, as the --psk-file contract says. */
export const MIN_PSK_BYTES = 32;
/** Most key bytes OpenSSL accepts for a PSK. */
export const MAX_PSK_BYTES = 512;

/** The pre-shared key file is missing, unreadable or not a usable key. Nothing was started. */
export class PskKeyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PskKeyError';
  }
}

/**
 * Parse the cluster key from its hex text. Whitespace anywhere (line
 * breaks, grouping spaces) is ignored so `openssl rand -hex 32` output and
 * hand-formatted files both work; anything else must be hex digits.
 */
export function parsePskHex(text: string, source = 'pre-shared key'): Buffer {
  const hex = text.replace(/\s+/g, '');
  if (hex === '') throw new PskKeyError(`${source} is empty; expected at least ${MIN_PSK_BYTES} bytes of key as hex (e.g. from "openssl rand -hex 32")`);
  const bad = hex.search(/[^0-9a-fA-F]/);
  if (bad >= 0)
    throw new PskKeyError(`${source} is not hex: character ${JSON.stringify(hex[bad])} at position ${bad + 1} (whitespace aside)`);
  if (hex.length % 2 !== 0) throw new PskKeyError(`${source} has an odd number of hex digits (${hex.length}); each byte takes two`);
  const bytes = hex.length / 2;
  if (bytes < MIN_PSK_BYTES)
    throw new PskKeyError(`${source} holds ${bytes} bytes of key; at least ${MIN_PSK_BYTES} are required (e.g. "openssl rand -hex 32")`);
  if (bytes > MAX_PSK_BYTES) throw new PskKeyError(`${source} holds ${bytes} bytes of key; TLS accepts at most ${MAX_PSK_BYTES}`);
  return Buffer.from(hex, 'hex');
}

/**
 * Read and parse a --psk-file. The key opens every peer's state to whoever
 * holds it: a file that group or others can read, or that someone else
 * than root (or the user the daemon runs as) owns and could rewrite, is
 * refused, with the command that fixes it.
 */
export function readPskFile(path: string): Buffer {
  let text: string;
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? String(err);
    throw new PskKeyError(`cannot read the pre-shared key file ${path}: ${code}`);
  }
  try {
    const st = fstatSync(fd);
    const self = process.getuid?.() ?? 0;
    if (st.uid !== 0 && st.uid !== self) {
      throw new PskKeyError(`the pre-shared key file ${path} is owned by uid ${st.uid}, not root: chown root:root ${path}`);
    }
    if ((st.mode & 0o077) !== 0) {
      const mode = (st.mode & 0o777).toString(8).padStart(4, '0');
      throw new PskKeyError(`the pre-shared key file ${path} is readable or writable by group or others (mode ${mode}): chmod 600 ${path}`);
    }
    text = readFileSync(fd, 'latin1');
  } finally {
    closeSync(fd);
  }
  return parsePskHex(text, `pre-shared key file ${path}`);
}
