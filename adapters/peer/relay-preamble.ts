import { isIP } from 'node:net';
import { formatPeerAddress, PeerAddress } from '../../plugin/ports/peer-port';

/**
 * The only plaintext a relay reads: one line naming where to forward,
 * "CTMRELAY1 198.51.100.2:7471\n" (IPv6 in brackets). Everything after the
 * line is the end-to-end TLS stream, which the relay forwards unread.
 */
export const RELAY_MAGIC = 'CTMRELAY1 ';
/** Longest preamble line; a relay stops reading at this many bytes. */
export const MAX_PREAMBLE_BYTES = 128;

/** A relay preamble that is not one. */
export class RelayPreambleError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RelayPreambleError';
  }
}

/** The line a dialer writes to a relay before its TLS ClientHello. */
export function encodeRelayPreamble(target: PeerAddress): Buffer {
  return Buffer.from(`${RELAY_MAGIC}${formatPeerAddress(target)}\n`, 'latin1');
}

/** Parse "host:port" / "[v6]:port" where host must be an IP literal (a relay resolves no names). */
function parseTarget(text: string): PeerAddress {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([0-9.]+)):(\d{1,5})$/.exec(text);
  const host = m ? (m[1] ?? m[2]) : '';
  const port = m ? Number(m[3]) : 0;
  if (!m || isIP(host) === 0 || port < 1 || port > 65535) throw new RelayPreambleError(`relay target ${JSON.stringify(text)} is not IP:PORT`);
  return { host, port };
}

/**
 * Accumulates the first bytes of a relayed connection until the preamble
 * line is complete. Returns the target and any bytes after the line (the
 * start of the TLS stream), or null while the line is incomplete.
 */
export class RelayPreambleReader {
  private buf = Buffer.alloc(0);

  push(chunk: Buffer): { target: PeerAddress; rest: Buffer } | null {
    this.buf = Buffer.concat([this.buf, chunk]);
    const nl = this.buf.indexOf(0x0a);
    if (nl < 0) {
      if (this.buf.length >= MAX_PREAMBLE_BYTES) throw new RelayPreambleError(`no relay preamble in the first ${MAX_PREAMBLE_BYTES} bytes`);
      this.checkMagic(this.buf.length);
      return null;
    }
    if (nl >= MAX_PREAMBLE_BYTES) throw new RelayPreambleError(`relay preamble longer than ${MAX_PREAMBLE_BYTES} bytes`);
    this.checkMagic(nl);
    const line = this.buf.subarray(0, nl).toString('latin1');
    if (!line.startsWith(RELAY_MAGIC)) throw new RelayPreambleError('not a relay preamble');
    return { target: parseTarget(line.slice(RELAY_MAGIC.length)), rest: this.buf.subarray(nl + 1) };
  }

  /** Refuse early (a TLS ClientHello, garbage) rather than waiting for a newline that never comes. */
  private checkMagic(n: number): void {
    const k = Math.min(n, RELAY_MAGIC.length);
    if (this.buf.subarray(0, k).toString('latin1') !== RELAY_MAGIC.slice(0, k)) throw new RelayPreambleError('not a relay preamble');
  }
}
