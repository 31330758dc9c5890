import { FRAME_HEADER_BYTES, oversizeError } from '../../plugin/peer-protocol';

/** One frame as it came off the wire, payload not yet decoded. */
export interface RawFrame {
  kind: number;
  /** A view into a received chunk or a buffer of exactly the payload's size. */
  payload: Uint8Array;
}

/**
 * Cuts a byte stream into frames. The limit is checked from the five header
 * bytes, before anything is allocated for the payload, so a peer announcing
 * a 4 GiB frame costs nothing. A frame that lies within one received chunk
 * is returned as a view of it (no copy); one that spans chunks is assembled
 * in a buffer allocated once at its announced size.
 */
export class FrameReader {
  private readonly header = new Uint8Array(FRAME_HEADER_BYTES);
  private headerFill = 0;
  private partial: Uint8Array | null = null;
  private partialFill = 0;
  private partialKind = 0;
  private failed = false;

  constructor(private readonly maxFrameBytes: number) {}

  /** Bytes held for an unfinished frame (header included). */
  get buffered(): number {
    return this.headerFill + (this.partial !== null ? FRAME_HEADER_BYTES + this.partialFill : 0);
  }

  /** Whether the stream stopped between frames (a clean end). */
  get atBoundary(): boolean {
    return this.headerFill === 0 && this.partial === null;
  }

  /**
   * Feed received bytes; returns every frame they complete. Throws a
   * PeerProtocolError ('oversize') on a header over the limit; after a
   * throw the reader refuses further input, as the stream is out of sync.
   */
  push(chunk: Uint8Array): RawFrame[] {
    if (this.failed) throw new Error('FrameReader used after a framing error');
    const out: RawFrame[] = [];
    let i = 0;
    const n = chunk.length;
    while (i < n) {
      if (this.partial !== null) {
        const take = Math.min(this.partial.length - this.partialFill, n - i);
        this.partial.set(chunk.subarray(i, i + take), this.partialFill);
        this.partialFill += take;
        i += take;
        if (this.partialFill === this.partial.length) {
          out.push({ kind: this.partialKind, payload: this.partial });
          this.partial = null;
          this.partialFill = 0;
        }
        continue;
      }
      let len: number;
      let kind: number;
      if (this.headerFill === 0 && n - i >= FRAME_HEADER_BYTES) {
        len = chunk[i] * 0x100_0000 + ((chunk[i + 1] << 16) | (chunk[i + 2] << 8) | chunk[i + 3]);
        kind = chunk[i + 4];
        i += FRAME_HEADER_BYTES;
      } else {
        const take = Math.min(FRAME_HEADER_BYTES - this.headerFill, n - i);
        this.header.set(chunk.subarray(i, i + take), this.headerFill);
        this.headerFill += take;
        i += take;
        if (this.headerFill < FRAME_HEADER_BYTES) break;
        const h = this.header;
        len = h[0] * 0x100_0000 + ((h[1] << 16) | (h[2] << 8) | h[3]);
        kind = h[4];
        this.headerFill = 0;
      }
      if (len > this.maxFrameBytes) {
        this.failed = true;
        throw oversizeError(len, this.maxFrameBytes, kind);
      }
      if (n - i >= len) {
        out.push({ kind, payload: chunk.subarray(i, i + len) });
        i += len;
      } else {
        this.partial = Buffer.allocUnsafe(len);
        this.partialKind = kind;
        this.partialFill = 0;
      }
    }
    return out;
  }
}
