import { once } from 'node:events';
import { crc32 } from 'node:zlib';
import { ConnectionTable, Scan } from './connection-table';
import { Cursor } from './table-cursor';
import {
  AF_INET,
  AF_INET6,
  R_FAMILY,
  R_FLAGS,
  R_ORIG_SPORT,
  R_ORIG_SRC,
  R_VERSION_HI,
  R_VERSION_LO,
  R_ZONE,
  R_ZONE_DIR,
  RecordFlag,
  X_HELPER,
  X_MASTER_FAMILY,
  X_PRESENT,
  EXT_PARTS,
  ExtFlag,
} from './flow';
import { FlowView } from './flow-view';
import {
  COUNT_UNKNOWN,
  ENTRY_FLAGS,
  EXT_KNOWN,
  EntryTag,
  FORMAT_VERSION,
  HEADER_BYTES,
  H_COUNT,
  H_FLAGS,
  H_FROM,
  H_KIND,
  H_TO,
  H_VERSION,
  HD_FLAGS,
  HD_PAD,
  HD_ZONE_DIR,
  HEAD_BYTES,
  MAGIC,
  MAX_ENTRY_BYTES,
  SnapshotKind,
  TAIL_BYTES,
  TRAILER_BYTES,
  helperNameProblem,
} from './snapshot-format';

/**
 * Where encoded bytes go. The sink owns every chunk it is given (the encoder
 * never writes into it again), so it may queue it (a socket, a file stream)
 * without copying. Returning a promise tells the encoder to wait for it
 * before it counts the output as written (see drain()).
 */
export type ChunkSink = (chunk: Uint8Array) => void | Promise<void>;

/** What an encoder wrote. */
export interface EncodeSummary {
  kind: SnapshotKind;
  from: number;
  to: number;
  /** Entries written (live + tombstones). */
  entries: number;
  live: number;
  tombstones: number;
  /** Bytes of the whole stream, header to trailer. */
  bytes: number;
  /** The trailer's CRC-32. */
  crc: number;
}

/** Default chunk: big enough that per-chunk costs vanish, small enough for a socket write. */
export const DEFAULT_CHUNK_BYTES = 1 << 20;

const VERSION_LIMIT = 2 ** 48;

/**
 * Streaming writer of the binary snapshot format (see snapshot-format.ts).
 * Entries are copied byte by byte from any FlowView straight into a
 * preallocated chunk; full chunks go to the sink and the CRC is accumulated
 * per chunk, so memory stays at one chunk (plus what an async sink holds)
 * whatever the number of entries. Nothing is allocated per entry.
 */
export class SnapshotEncoder {
  private buf: Uint8Array;
  private pos = 0;
  private crc = 0;
  private flushedBytes = 0;
  private kind: SnapshotKind = SnapshotKind.Snapshot;
  private from = 0;
  private to = 0;
  private declared = COUNT_UNKNOWN;
  private count = 0;
  private tombs = 0;
  private state: 'idle' | 'entries' | 'ended' = 'idle';
  private pending: Promise<void> | null = null;
  private sinkError: unknown = null;

  /** Size of the next chunk: from `firstChunkBytes`, doubling up to `chunkBytes`. */
  private nextBytes: number;

  /**
   * `firstChunkBytes`: start with smaller chunks and double up to
   * `chunkBytes`, so that a reader waiting for the first entries (a
   * destination whose kernel writes wait for them) gets them sooner.
   */
  constructor(
    private readonly sink: ChunkSink,
    private readonly chunkBytes = DEFAULT_CHUNK_BYTES,
    firstChunkBytes = chunkBytes,
  ) {
    if (!(chunkBytes >= 512)) throw new RangeError(`snapshot chunk size ${chunkBytes} is below 512 bytes`);
    if (!(firstChunkBytes >= 512)) throw new RangeError(`first snapshot chunk size ${firstChunkBytes} is below 512 bytes`);
    this.nextBytes = Math.min(firstChunkBytes, chunkBytes);
    this.buf = Buffer.allocUnsafe(this.nextBytes);
  }

  /** Entries written so far. */
  get entries(): number {
    return this.count;
  }

  /**
   * Write the header. `count` is how many entries will follow when known
   * (vmstate blobs, small deltas); leave it out when streaming a live table.
   */
  begin(kind: SnapshotKind, from: number, to: number, count?: number): void {
    if (this.state !== 'idle') throw new Error('SnapshotEncoder.begin() called twice');
    if (kind !== SnapshotKind.Snapshot && kind !== SnapshotKind.Delta) throw new RangeError(`unknown snapshot kind ${kind}`);
    checkVersion('from', from);
    checkVersion('to', to);
    if (from > to) throw new RangeError(`snapshot range is empty: from ${from} > to ${to}`);
    if (count !== undefined && !(Number.isInteger(count) && count >= 0 && count < COUNT_UNKNOWN))
      throw new RangeError(`snapshot entry count ${count} is out of range`);
    this.kind = kind;
    this.from = from;
    this.to = to;
    this.declared = count ?? COUNT_UNKNOWN;
    const b = this.buf;
    b.set(MAGIC, 0);
    put16(b, H_VERSION, FORMAT_VERSION);
    put16(b, H_FLAGS, 0);
    b[H_KIND] = kind;
    b[H_KIND + 1] = b[H_KIND + 2] = b[H_KIND + 3] = 0;
    put48(b, H_FROM, from);
    put48(b, H_TO, to);
    put32(b, H_COUNT, this.declared);
    this.pos = HEADER_BYTES;
    this.state = 'entries';
  }

  /**
   * Append one entry read from `v` (a table slot, a FlowRecord). Tombstones
   * carry only the key and version. The entry's version must lie in the
   * stream's range, as a reader checks the same.
   */
  writeFlow(v: FlowView, tombstone: boolean): void {
    if (this.state !== 'entries') throw new Error('SnapshotEncoder.writeFlow() outside begin()/end()');
    if (this.pos + MAX_ENTRY_BYTES > this.buf.length) this.flush();
    const s = v.u8;
    const r = v.rec;
    const family = s[r + R_FAMILY];
    if (family !== AF_INET && family !== AF_INET6) throw new RangeError(`cannot encode an entry of address family ${family}`);
    const version = v.u32[(r + R_VERSION_LO) >> 2] + v.u16[(r + R_VERSION_HI) >> 1] * 0x1_0000_0000;
    if (this.kind === SnapshotKind.Snapshot) {
      if (tombstone) throw new RangeError('a snapshot cannot hold tombstones; encode a delta');
      if (version > this.to) throw new RangeError(`entry version ${version} is past the snapshot's version ${this.to}`);
    } else if (version <= this.from || version > this.to) {
      throw new RangeError(`entry version ${version} is outside the delta's range (${this.from}, ${this.to}]`);
    }
    if (this.count + 1 >= COUNT_UNKNOWN || (this.declared !== COUNT_UNKNOWN && this.count >= this.declared))
      throw new RangeError(`more entries than the ${this.declared} the header declared`);
    const b = this.buf;
    let p = this.pos;
    const present = tombstone || v.ext < 0 ? 0 : v.u32[(v.ext + X_PRESENT) >> 2] & EXT_KNOWN;
    b[p] = tombstone ? EntryTag.Tombstone : present !== 0 ? EntryTag.LiveExt : EntryTag.Live;
    // Word loads from the record (aligned), byte stores into the chunk.
    const w = v.u32;
    const rw = r >> 2;
    const h = p + 1;
    put32(b, h, w[rw + 1]);
    put32(b, h + 4, w[rw + 2]);
    b[h + HD_FLAGS] = s[r + R_FLAGS] & ENTRY_FLAGS;
    b[h + 8] = s[r + 12];
    b[h + 9] = s[r + 13];
    b[h + HD_ZONE_DIR] = s[r + R_ZONE_DIR] & 3;
    b[h + HD_PAD] = 0;
    p = h + HEAD_BYTES;
    const src = rw + (R_ORIG_SRC >> 2);
    if (tombstone) {
      b[p] = s[r + R_ZONE];
      b[p + 1] = s[r + R_ZONE + 1];
      p += 2;
      if (family === AF_INET) {
        put32(b, p, w[src]);
        put32(b, p + 4, w[src + 4]);
        p += 8;
      } else {
        for (let i = 0; i < 8; i++) put32(b, p + 4 * i, w[src + i]);
        p += 32;
      }
      put32(b, p, w[rw + (R_ORIG_SPORT >> 2)]);
      p += 4;
      this.tombs++;
    } else {
      if (family === AF_INET) {
        put32(b, p, w[src]);
        put32(b, p + 4, w[src + 4]);
        put32(b, p + 8, w[src + 8]);
        put32(b, p + 12, w[src + 12]);
        p += 16;
      } else {
        for (let i = 0; i < 16; i++) put32(b, p + 4 * i, w[src + i]);
        p += 64;
      }
      const tail = rw + (R_ORIG_SPORT >> 2);
      for (let i = 0; i < TAIL_BYTES >> 2; i++) put32(b, p + 4 * i, w[tail + i]);
      p += TAIL_BYTES;
      if (present !== 0) p = this.writeExt(v, present, p);
    }
    this.pos = p;
    this.count++;
  }

  private writeExt(v: FlowView, present: number, p: number): number {
    const b = this.buf;
    const s = v.u8;
    const x = v.ext;
    b[p] = present & 0xff;
    b[p + 1] = present >> 8;
    p += 2;
    for (let i = 0; i < EXT_PARTS.length; i++) {
      const part = EXT_PARTS[i];
      if ((present & part.flag) === 0) continue;
      if (part.flag === ExtFlag.Helper) {
        const why = helperNameProblem(s, x + X_HELPER);
        if (why) throw new RangeError(`cannot encode entry: ${why}`);
      } else if (part.flag === ExtFlag.Master) {
        const mf = s[x + X_MASTER_FAMILY];
        if (mf !== AF_INET && mf !== AF_INET6) throw new RangeError(`cannot encode entry: master tuple of address family ${mf}`);
      }
      const w = part.wire;
      for (let j = 0; j < w.length; j += 2) p = copyBytes(b, p, s, x + w[j], w[j + 1]);
    }
    return p;
  }

  /**
   * Write the END tag and trailer and hand the last chunk to the sink,
   * without waiting for an async sink (see end()).
   */
  finish(): EncodeSummary {
    if (this.state !== 'entries') throw new Error('SnapshotEncoder.finish() without begin(), or twice');
    if (this.declared !== COUNT_UNKNOWN && this.count !== this.declared)
      throw new RangeError(`wrote ${this.count} entries but the header declared ${this.declared}`);
    if (this.pos + 1 + TRAILER_BYTES > this.buf.length) this.flush();
    const b = this.buf;
    b[this.pos] = EntryTag.End;
    put32(b, this.pos + 1, this.count);
    this.pos += 5;
    const crc = crc32(b.subarray(0, this.pos), this.crc) >>> 0;
    put32(b, this.pos, crc);
    this.pos += 4;
    this.crc = crc;
    const bytes = this.flushedBytes + this.pos;
    this.hand(b.subarray(0, this.pos));
    this.pos = 0;
    this.state = 'ended';
    return {
      kind: this.kind,
      from: this.from,
      to: this.to,
      entries: this.count,
      live: this.count - this.tombs,
      tombstones: this.tombs,
      bytes,
      crc,
    };
  }

  /** finish(), then wait until the sink has taken every chunk. */
  async end(): Promise<EncodeSummary> {
    const summary = this.finish();
    await this.drain();
    return summary;
  }

  /** The promise of the last async sink call, while it is unsettled; null otherwise. */
  get backlog(): Promise<void> | null {
    return this.pending;
  }

  /** Wait for the sink; rethrows the first error an async sink reported. */
  async drain(): Promise<void> {
    while (this.pending) await this.pending;
    if (this.sinkError) throw this.sinkError;
  }

  /**
   * End the current chunk here: what is written so far goes to the sink now
   * (a chunk holds whole entries), and what follows starts a new chunk. A
   * writer that must send something else between two entries of the stream
   * cuts, drains, and sends it.
   */
  cut(): void {
    if (this.state !== 'entries') throw new Error('SnapshotEncoder.cut() outside begin()/end()');
    if (this.pos > 0) this.flush();
  }

  /** @internal Byte position in the current chunk (for encodeTable's torn-read retry). */
  get position(): number {
    return this.pos;
  }

  /** @internal Make room for one more entry now, so a rewind point stays valid. */
  reserve(): void {
    if (this.pos + MAX_ENTRY_BYTES > this.buf.length) this.flush();
  }

  /** @internal Forget the entry written since `position` was read (after reserve()). */
  rewind(position: number, entries: number, tombstones: number): void {
    this.pos = position;
    this.count = entries;
    this.tombs = tombstones;
  }

  /** @internal */
  get tombstoneCount(): number {
    return this.tombs;
  }

  private flush(): void {
    if (this.sinkError) throw this.sinkError;
    const chunk = this.buf.subarray(0, this.pos);
    this.crc = crc32(chunk, this.crc) >>> 0;
    this.flushedBytes += this.pos;
    this.nextBytes = Math.min(this.chunkBytes, this.nextBytes * 2);
    this.buf = Buffer.allocUnsafe(this.nextBytes);
    this.pos = 0;
    this.hand(chunk);
  }

  private hand(chunk: Uint8Array): void {
    const r = this.sink(chunk);
    if (r && typeof (r as Promise<void>).then === 'function') {
      const prev = this.pending;
      const p: Promise<void> = Promise.all([prev, r]).then(
        () => {
          if (this.pending === p) this.pending = null;
        },
        (err: unknown) => {
          if (this.sinkError === null) this.sinkError = err;
          if (this.pending === p) this.pending = null;
        },
      );
      this.pending = p;
    }
  }
}

/** Which entries of a table to encode. */
export interface TableSelection {
  /** Scan.Snapshot: live entries with version <= to. Scan.Delta: changes in (from, to]. */
  scan: Scan;
  /** Lower bound (exclusive) for a delta; recorded in the header of a snapshot (usually 0). */
  from: number;
  /** Upper bound (inclusive); usually table.version taken just before. */
  to: number;
  /** Keep only entries this accepts (e.g. flowMatches for a VM); called on the live slot, must not keep the view. */
  filter?: (v: FlowView) => boolean;
}

/**
 * Stream the selected entries of a live table into `sink`. Reads slots in
 * place; when a concurrent write lands on a slot while it is being copied,
 * the entry is rewound and re-read (or skipped if it left the range). The
 * header says "count unknown"; the trailer has the count. Waits for an
 * async sink after every chunk, so memory stays at about two chunks.
 */
export async function encodeTable(
  table: ConnectionTable,
  sel: TableSelection,
  sink: ChunkSink,
  chunkBytes = DEFAULT_CHUNK_BYTES,
  firstChunkBytes = chunkBytes,
): Promise<EncodeSummary> {
  const enc = new SnapshotEncoder(sink, chunkBytes, firstChunkBytes);
  enc.begin(sel.scan === Scan.Delta ? SnapshotKind.Delta : SnapshotKind.Snapshot, sel.from, sel.to);
  const cur = table.cursor().reset(sel.scan, sel.from, sel.to);
  while (cur.next()) {
    encodeSlot(enc, cur, sel.filter);
    if (enc.backlog) await enc.drain();
  }
  return enc.end();
}

/**
 * encodeTable into a single Buffer, synchronously: for small deltas and
 * vmstate blobs. Memory is the size of the result.
 */
export function encodeTableToBuffer(table: ConnectionTable, sel: TableSelection): { bytes: Buffer; summary: EncodeSummary } {
  const chunks: Uint8Array[] = [];
  const enc = new SnapshotEncoder((c) => {
    chunks.push(c);
  }, 64 * 1024);
  enc.begin(sel.scan === Scan.Delta ? SnapshotKind.Delta : SnapshotKind.Snapshot, sel.from, sel.to);
  const cur = table.cursor().reset(sel.scan, sel.from, sel.to);
  while (cur.next()) encodeSlot(enc, cur, sel.filter);
  const summary = enc.finish();
  const bytes = Buffer.concat(chunks, summary.bytes);
  // The whole stream is at hand: put the count in the header too, so a
  // reader can size its staging table exactly, and re-seal the CRC.
  put32(bytes, H_COUNT, summary.entries);
  summary.crc = crc32(bytes.subarray(0, bytes.length - 4)) >>> 0;
  put32(bytes, bytes.length - 4, summary.crc);
  return { bytes, summary };
}

/** Encode the cursor's slot (if `filter` keeps it); rewind and re-read it if a writer touched it meanwhile. */
export function encodeSlot(enc: SnapshotEncoder, cur: Cursor, filter: ((v: FlowView) => boolean) | undefined): void {
  const v = cur.view;
  for (;;) {
    enc.reserve();
    const at = enc.position;
    const n = enc.entries;
    const t = enc.tombstoneCount;
    let torn = false;
    try {
      if (!filter || filter(v)) enc.writeFlow(v, (v.u8[v.rec + R_FLAGS] & RecordFlag.Tombstone) !== 0);
    } catch (err) {
      // A torn read can look invalid; only a stable slot's error is real.
      if (cur.stable()) throw err;
      torn = true;
    }
    if (!torn && cur.stable()) return;
    enc.rewind(at, n, t);
    if (!cur.retry()) return;
  }
}

/**
 * A sink for a Node writable stream (file, socket, stdout): waits for
 * 'drain' when the stream's buffer is full; rejects if the stream fails.
 */
export function writableSink(w: NodeJS.WritableStream): ChunkSink {
  return (chunk) => {
    if (w.write(chunk)) return undefined;
    return once(w as unknown as NodeJS.EventEmitter, 'drain').then(() => undefined);
  };
}

function copyBytes(dst: Uint8Array, at: number, src: Uint8Array, from: number, n: number): number {
  for (let i = 0; i < n; i++) dst[at + i] = src[from + i];
  return at + n;
}

function checkVersion(name: string, v: number): void {
  if (!(Number.isInteger(v) && v >= 0 && v < VERSION_LIMIT)) throw new RangeError(`snapshot ${name} version ${v} is not a 48-bit version`);
}

function put16(b: Uint8Array, o: number, v: number): void {
  b[o] = v & 0xff;
  b[o + 1] = (v >>> 8) & 0xff;
}
function put32(b: Uint8Array, o: number, v: number): void {
  b[o] = v & 0xff;
  b[o + 1] = (v >>> 8) & 0xff;
  b[o + 2] = (v >>> 16) & 0xff;
  b[o + 3] = (v >>> 24) & 0xff;
}
function put48(b: Uint8Array, o: number, v: number): void {
  put32(b, o, v >>> 0);
  put16(b, o + 4, Math.floor(v / 0x1_0000_0000));
}
