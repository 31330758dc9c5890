import { crc32 } from 'node:zlib';
import { ConnectionTable, Scan, TableFullError } from './connection-table';
import { SnapshotFormatError } from './codec-error';
import {
  AF_INET,
  AF_INET6,
  RECORD_BYTES,
  RECORD_WORDS,
  R_FLAGS,
  R_ORIG_SPORT,
  R_ORIG_SRC,
  R_VERSION_LO,
  R_ZONE,
  RecordFlag,
  X_PRESENT,
  EXT_WORDS,
  EXT_PARTS,
  ExtFlag,
} from './flow';
import { FlowRecord, FlowView } from './flow-view';
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
  HD_FAMILY,
  HD_FLAGS,
  HD_PAD,
  HD_ZONE_DIR,
  HEAD_BYTES,
  MAGIC,
  MAX_ENTRY_BYTES,
  SnapshotKind,
  TAIL_BYTES,
  TRAILER_BYTES,
  extPartsBytes,
  helperNameProblem,
  kindName,
  liveBaseBytes,
  tombstoneBytes,
} from './snapshot-format';

/** Limits a decoder enforces before it does any work. */
export interface DecodeLimits {
  /** Most entries accepted; pass the target table's capacity. */
  maxEntries: number;
  /**
   * A table to stage into, cleared first (a session decoding many deltas
   * reuses one). Default: a new table sized by the header's count, or by
   * maxEntries when the count is not known upfront.
   */
  staging?: ConnectionTable;
  /** Refuse a stream whose header says another kind (a session's snapshot phase takes no delta). */
  kind?: SnapshotKind;
}

/**
 * A fully validated input, held in a private staging table. Nothing has
 * touched any other table: apply it with applyStaged(), or read
 * `table` with a Cursor (Scan.Delta from 0 to table.version gives live
 * entries and tombstones).
 */
export interface DecodedSnapshot {
  format: 'binary' | 'json';
  kind: SnapshotKind;
  /** Version range of the source table the input covers (0, 0 for JSON lines). */
  from: number;
  to: number;
  /** Entries in the input (a key that appears twice counts twice). */
  entries: number;
  live: number;
  tombstones: number;
  /** Bytes of input consumed. */
  bytes: number;
  /** The staging table: live entries, and tombstones for deleted keys. */
  table: ConnectionTable;
}

const enum State {
  Header,
  Entries,
  Done,
}

/**
 * Streaming, validating reader of the binary snapshot format (see
 * snapshot-format.ts). Feed it chunks split anywhere; it parses entries in
 * place (only an entry that straddles two chunks is copied, into a small
 * carry buffer), checks every field, and stores each entry into a private
 * staging table through one reused FlowRecord. The result is only handed
 * out by end(), after the trailer's count and CRC matched and the input
 * ended exactly at the trailer. Every failure is a SnapshotFormatError; the
 * decoder is dead after one.
 */
export class SnapshotDecoder {
  private state = State.Header;
  /** Absolute offset of the next item (header, entry, END+trailer). */
  private pos = 0;
  /** Absolute bytes received. */
  private received = 0;
  private carry = new Uint8Array(MAX_ENTRY_BYTES + TRAILER_BYTES + 1);
  private carryLen = 0;
  private crc = 0;
  /** Absolute offset of the trailer's CRC field, once known. */
  private crcAt = -1;
  private trailerCrc = 0;
  private verified = false;
  private failure: SnapshotFormatError | null = null;
  private kind = SnapshotKind.Snapshot;
  private from = 0;
  private to = 0;
  private declared = COUNT_UNKNOWN;
  private count = 0;
  private tombs = 0;
  private staging: ConnectionTable | null = null;
  private readonly rec = new FlowRecord();
  private readonly maxEntries: number;
  private readonly reuse: ConnectionTable | null;
  private readonly expectKind: SnapshotKind | undefined;

  constructor(limits: DecodeLimits) {
    if (!(Number.isInteger(limits.maxEntries) && limits.maxEntries > 0)) throw new RangeError(`maxEntries ${limits.maxEntries} must be a positive integer`);
    this.reuse = limits.staging ?? null;
    this.expectKind = limits.kind;
    this.maxEntries = Math.min(limits.maxEntries, COUNT_UNKNOWN - 1, this.reuse ? this.reuse.capacity : Infinity);
  }

  /** Feed the next bytes. Throws SnapshotFormatError as soon as something is wrong. */
  write(chunk: Uint8Array): void {
    if (this.failure) throw this.failure;
    try {
      this.consume(chunk);
    } catch (err) {
      this.fail(err);
    }
  }

  /** The input has ended: returns the staged result, or throws if it was incomplete. */
  end(): DecodedSnapshot {
    if (this.failure) throw this.failure;
    if (this.state !== State.Done) {
      try {
        this.truncated();
      } catch (err) {
        this.fail(err);
      }
    }
    return {
      format: 'binary',
      kind: this.kind,
      from: this.from,
      to: this.to,
      entries: this.count,
      live: this.count - this.tombs,
      tombstones: this.tombs,
      bytes: this.received,
      table: this.staging ?? ConnectionTable.create({ capacity: 1 }),
    };
  }

  private fail(err: unknown): never {
    this.staging = null;
    this.failure =
      err instanceof SnapshotFormatError
        ? err
        : new SnapshotFormatError('malformed', `snapshot could not be decoded: ${err instanceof Error ? err.message : String(err)}`);
    throw this.failure;
  }

  private consume(chunk: Uint8Array): void {
    this.received += chunk.length;
    let off = 0;
    const n = chunk.length;
    if (this.carryLen > 0) {
      for (;;) {
        const len = this.itemLength(this.carry, 0, this.carryLen);
        const want = len < 0 ? -len : len;
        const take = Math.min(want - this.carryLen, n - off);
        this.carry.set(chunk.subarray(off, off + take), this.carryLen);
        this.carryLen += take;
        off += take;
        if (this.carryLen < want) break;
        if (len > 0) {
          this.parseItem(this.carry, 0, len);
          this.sum(this.carry, 0, this.state === State.Done ? 1 + 4 : len);
          this.carryLen = 0;
          break;
        }
      }
    }
    if (this.carryLen === 0) {
      // Items wholly inside the chunk are parsed in place and summed in one go.
      const runStart = off;
      let runEnd = off;
      while (off < n) {
        const len = this.itemLength(chunk, off, n - off);
        if (len < 0 || len > n - off) {
          this.carry.set(chunk.subarray(off, n), 0);
          this.carryLen = n - off;
          break;
        }
        this.parseItem(chunk, off, len);
        runEnd = this.state === State.Done ? off + 1 + 4 : off + len;
        off += len;
      }
      this.sum(chunk, runStart, runEnd);
    }
    if (this.state === State.Done && !this.verified) this.verify();
  }

  /** CRC over parsed bytes; the trailer's CRC field itself is never summed. */
  private sum(b: Uint8Array, from: number, to: number): void {
    if (to > from) this.crc = crc32(b.subarray(from, to), this.crc) >>> 0;
  }

  /**
   * Length of the item starting at `off` if it can be told from the `avail`
   * bytes there, else minus the bytes needed to tell. Rejects what can be
   * rejected from the first bytes alone.
   */
  private itemLength(b: Uint8Array, off: number, avail: number): number {
    if (this.state === State.Header) return HEADER_BYTES;
    if (this.state === State.Done)
      throw new SnapshotFormatError('trailing', `snapshot has trailing data after its trailer (byte ${this.pos})`, this.pos);
    const tag = b[off];
    if (tag === EntryTag.End) return 1 + TRAILER_BYTES;
    if (tag !== EntryTag.Live && tag !== EntryTag.LiveExt && tag !== EntryTag.Tombstone)
      throw this.entryError('malformed', `has an unknown tag 0x${tag.toString(16).padStart(2, '0')}`);
    if (avail < 1 + HD_FAMILY + 1) return -(1 + HD_FAMILY + 1);
    const family = b[off + 1 + HD_FAMILY];
    if (family !== AF_INET && family !== AF_INET6) throw this.entryError('malformed', `has address family ${family} (expected 2 or 10)`);
    if (tag === EntryTag.Tombstone) return tombstoneBytes(family);
    const base = liveBaseBytes(family);
    if (tag === EntryTag.Live) return base;
    if (avail < base + 2) return -(base + 2);
    const present = b[off + base] | (b[off + base + 1] << 8);
    if (present === 0) throw this.entryError('malformed', 'is tagged with extension but has no extension parts');
    if (present & ~EXT_KNOWN) throw this.entryError('malformed', `has unknown extension parts 0x${present.toString(16)}`);
    return base + 2 + extPartsBytes(present);
  }

  private parseItem(b: Uint8Array, off: number, len: number): void {
    if (this.state === State.Header) this.parseHeader(b, off);
    else if (b[off] === EntryTag.End) this.parseTrailer(b, off);
    else this.parseEntry(b, off);
    this.pos += len;
  }

  private parseHeader(b: Uint8Array, off: number): void {
    for (let i = 0; i < MAGIC.length; i++)
      if (b[off + i] !== MAGIC[i]) throw new SnapshotFormatError('magic', 'not a ctmigrate snapshot (bad magic at byte 0)', 0);
    const version = get16(b, off + H_VERSION);
    if (version !== FORMAT_VERSION)
      throw new SnapshotFormatError('version', `unsupported snapshot format version ${version} (this ctmigrate reads version ${FORMAT_VERSION})`, H_VERSION);
    const flags = get16(b, off + H_FLAGS);
    if (flags !== 0) throw new SnapshotFormatError('malformed', `snapshot header has unknown flags 0x${flags.toString(16)} (byte ${H_FLAGS})`, H_FLAGS);
    const kind = b[off + H_KIND];
    if (kind !== SnapshotKind.Snapshot && kind !== SnapshotKind.Delta)
      throw new SnapshotFormatError('malformed', `snapshot header has unknown kind ${kind} (byte ${H_KIND})`, H_KIND);
    if (this.expectKind !== undefined && kind !== this.expectKind)
      throw new SnapshotFormatError('malformed', `expected a ${kindName(this.expectKind)}, the header says ${kindName(kind)} (byte ${H_KIND})`, H_KIND);
    if (b[off + H_KIND + 1] | b[off + H_KIND + 2] | b[off + H_KIND + 3])
      throw new SnapshotFormatError('malformed', `snapshot header has non-zero reserved bytes (byte ${H_KIND + 1})`, H_KIND + 1);
    const from = get48(b, off + H_FROM);
    const to = get48(b, off + H_TO);
    if (from > to) throw new SnapshotFormatError('malformed', `snapshot header has an empty version range: from ${from} > to ${to} (byte ${H_FROM})`, H_FROM);
    const count = get32(b, off + H_COUNT);
    if (count !== COUNT_UNKNOWN && count > this.maxEntries)
      throw new SnapshotFormatError(
        'limit',
        `snapshot declares ${count} entries, more than the ${this.maxEntries} the table holds; nothing imported`,
        H_COUNT,
      );
    this.kind = kind;
    this.from = from;
    this.to = to;
    this.declared = count;
    if (this.reuse) {
      this.reuse.clear();
      this.staging = this.reuse;
    } else {
      const capacity = count === COUNT_UNKNOWN ? this.maxEntries : Math.max(1, count);
      this.staging = ConnectionTable.create({ capacity, extCapacity: capacity });
    }
    this.state = State.Entries;
  }

  private parseEntry(b: Uint8Array, off: number): void {
    if (this.count >= this.maxEntries) throw this.entryError('limit', `is past the limit of ${this.maxEntries} entries; nothing imported`);
    if (this.declared !== COUNT_UNKNOWN && this.count >= this.declared)
      throw this.entryError('malformed', `is more than the ${this.declared} entries the header declared`);
    const tag = b[off];
    const h = off + 1;
    const flags = b[h + HD_FLAGS];
    if (flags & ~ENTRY_FLAGS) throw this.entryError('malformed', `has unknown record flags 0x${flags.toString(16)}`);
    if (b[h + HD_ZONE_DIR] & ~3) throw this.entryError('malformed', `has unknown zone direction bits 0x${b[h + HD_ZONE_DIR].toString(16)}`);
    if (b[h + HD_PAD] !== 0) throw this.entryError('malformed', 'has a non-zero pad byte');
    const version = get48(b, h);
    if (this.kind === SnapshotKind.Snapshot) {
      if (tag === EntryTag.Tombstone) throw this.entryError('malformed', 'is a tombstone, which a snapshot cannot hold');
      if (version > this.to) throw this.entryError('malformed', `has version ${version}, past the snapshot's version ${this.to}`);
    } else if (version <= this.from || version > this.to) {
      throw this.entryError('malformed', `has version ${version}, outside the delta's range (${this.from}, ${this.to}]`);
    }
    const family = b[h + HD_FAMILY];
    const alen = family === AF_INET ? 4 : 16;
    const r = this.rec;
    const d = r.u8;
    const w = r.u32;
    const table = this.staging as ConnectionTable;
    let p = h + HEAD_BYTES;
    if (tag === EntryTag.Tombstone) {
      for (let i = 1; i < RECORD_WORDS; i++) w[i] = 0;
      w[(RECORD_BYTES + X_PRESENT) >> 2] = 0;
      for (let i = 0; i < HEAD_BYTES; i++) d[R_VERSION_LO + i] = b[h + i];
      d[R_ZONE] = b[p];
      d[R_ZONE + 1] = b[p + 1];
      p += 2;
      for (let i = 0; i < alen; i++) d[R_ORIG_SRC + i] = b[p + i];
      p += alen;
      for (let i = 0; i < alen; i++) d[R_ORIG_SRC + 16 + i] = b[p + i];
      p += alen;
      for (let i = 0; i < 4; i++) d[R_ORIG_SPORT + i] = b[p + i];
      this.store(table, r, true);
      this.tombs++;
    } else {
      for (let i = 0; i < HEAD_BYTES; i++) d[R_VERSION_LO + i] = b[h + i];
      if (alen === 4) {
        for (let a = R_ORIG_SRC; a < R_ORIG_SPORT; a += 16) {
          d[a] = b[p];
          d[a + 1] = b[p + 1];
          d[a + 2] = b[p + 2];
          d[a + 3] = b[p + 3];
          w[(a + 4) >> 2] = 0;
          w[(a + 8) >> 2] = 0;
          w[(a + 12) >> 2] = 0;
          p += 4;
        }
      } else {
        for (let i = 0; i < 64; i++) d[R_ORIG_SRC + i] = b[p + i];
        p += 64;
      }
      for (let i = 0; i < TAIL_BYTES; i++) d[R_ORIG_SPORT + i] = b[p + i];
      p += TAIL_BYTES;
      if (tag === EntryTag.LiveExt) this.parseExt(b, p);
      else w[(RECORD_BYTES + X_PRESENT) >> 2] = 0;
      this.store(table, r, false);
    }
    this.count++;
  }

  private parseExt(b: Uint8Array, p: number): void {
    const r = this.rec;
    const w = r.u32;
    const x = RECORD_BYTES;
    for (let i = 0; i < EXT_WORDS; i++) w[(x >> 2) + i] = 0;
    const present = b[p] | (b[p + 1] << 8);
    w[(x + X_PRESENT) >> 2] = present;
    p += 2;
    const d = r.u8;
    for (let i = 0; i < EXT_PARTS.length; i++) {
      const part = EXT_PARTS[i];
      if ((present & part.flag) === 0) continue;
      if (part.flag === ExtFlag.Helper) {
        const why = helperNameProblem(b, p);
        if (why) throw this.entryError('malformed', `has a bad helper: ${why}`);
      } else if (part.flag === ExtFlag.Master) {
        const mf = b[p];
        if (mf !== AF_INET && mf !== AF_INET6) throw this.entryError('malformed', `has a master tuple of address family ${mf}`);
        if (mf === AF_INET) {
          for (let k = 4; k < 16; k++)
            if (b[p + 2 + k] | b[p + 18 + k]) throw this.entryError('malformed', 'has an IPv4 master tuple with bytes past its addresses');
        }
      }
      const w = part.wire;
      for (let j = 0; j < w.length; j += 2) p = copyIn(d, x + w[j], b, p, w[j + 1]);
    }
  }

  private store(table: ConnectionTable, r: FlowView, tombstone: boolean): void {
    try {
      if (!tombstone) table.upsert(r);
      else if (table.remove(r) < 0) {
        // A deletion of a key this input has not seen: keep it as a tombstone.
        table.upsert(r);
        table.remove(r);
      }
    } catch (err) {
      if (err instanceof TableFullError) throw this.entryError('limit', `does not fit: ${err.message}`);
      throw err;
    }
  }

  private parseTrailer(b: Uint8Array, off: number): void {
    const count = get32(b, off + 1);
    this.crcAt = this.pos + 5;
    this.trailerCrc = get32(b, off + 5);
    this.state = State.Done;
    // The count is checked after the CRC (in verify), since corruption explains both.
    this.trailerCount = count;
  }

  private trailerCount = 0;

  private verify(): void {
    this.verified = true;
    if (this.crc !== this.trailerCrc)
      throw new SnapshotFormatError(
        'checksum',
        `checksum mismatch: snapshot is corrupt (CRC-32 0x${hex32(this.crc)}, trailer says 0x${hex32(this.trailerCrc)})`,
        this.crcAt,
      );
    if (this.trailerCount !== this.count)
      throw new SnapshotFormatError('malformed', `snapshot trailer counts ${this.trailerCount} entries but ${this.count} were read (byte ${this.crcAt - 4})`, this.crcAt - 4);
    if (this.declared !== COUNT_UNKNOWN && this.declared !== this.count)
      throw new SnapshotFormatError('truncated', `snapshot ends after ${this.count} of the ${this.declared} entries its header declared`, this.crcAt - 4);
  }

  private truncated(): never {
    const at = this.received;
    if (this.state === State.Header) {
      if (at === 0) throw new SnapshotFormatError('truncated', 'snapshot is empty (0 bytes)', 0);
      let isMagic = true;
      for (let i = 0; i < Math.min(at, MAGIC.length); i++) if (this.carry[i] !== MAGIC[i]) isMagic = false;
      if (!isMagic) throw new SnapshotFormatError('magic', 'not a ctmigrate snapshot (bad magic at byte 0)', 0);
      throw new SnapshotFormatError('truncated', `snapshot is truncated: the ${HEADER_BYTES}-byte header ends past the end of input (byte ${at})`, at);
    }
    if (this.carryLen > 0) {
      if (this.carry[0] === EntryTag.End)
        throw new SnapshotFormatError('truncated', `snapshot is truncated: the trailer at byte ${this.pos} ends past the end of input (byte ${at})`, at);
      throw new SnapshotFormatError(
        'truncated',
        `snapshot is truncated: entry ${this.count + 1}${this.ofCount()} (byte ${this.pos}) ends past the end of input (byte ${at})`,
        at,
        this.count + 1,
      );
    }
    throw new SnapshotFormatError(
      'truncated',
      `snapshot is truncated: input ends at byte ${at} after entry ${this.count}${this.ofCount()}, before the trailer`,
      at,
      this.count,
    );
  }

  private ofCount(): string {
    return this.declared === COUNT_UNKNOWN ? '' : ` of ${this.declared}`;
  }

  private entryError(problem: 'malformed' | 'limit', what: string): SnapshotFormatError {
    const n = this.count + 1;
    return new SnapshotFormatError(problem, `snapshot entry ${n}${this.ofCount()} (byte ${this.pos}) ${what}`, this.pos, n);
  }
}

/** Decode one whole binary snapshot held in memory (a vmstate blob, a frame). */
export function decodeSnapshot(bytes: Uint8Array, limits: DecodeLimits): DecodedSnapshot {
  const d = new SnapshotDecoder(limits);
  d.write(bytes);
  return d.end();
}

/** What applyStaged did. */
export interface ApplySummary {
  /** Live entries stored (inserted or replaced). */
  upserted: number;
  /** Tombstones applied to entries the target held. */
  removed: number;
  /** Tombstones for keys the target did not hold. */
  absent: number;
}

/**
 * Copy a decoded input into `target`: live entries are upserted, tombstones
 * remove. Run it only on a DecodedSnapshot that end() returned. The target
 * may still throw TableFullError if it is fuller than the input's limit
 * assumed.
 */
export function applyStaged(staged: ConnectionTable, target: ConnectionTable): ApplySummary {
  const sum: ApplySummary = { upserted: 0, removed: 0, absent: 0 };
  const cur = staged.cursor().reset(Scan.Delta, 0, staged.version);
  const v = cur.view;
  while (cur.next()) {
    if ((v.u8[v.rec + R_FLAGS] & RecordFlag.Live) !== 0) {
      target.upsert(v);
      sum.upserted++;
    } else if (target.remove(v) >= 0) sum.removed++;
    else sum.absent++;
  }
  return sum;
}

function copyIn(d: Uint8Array, at: number, b: Uint8Array, p: number, n: number): number {
  for (let i = 0; i < n; i++) d[at + i] = b[p + i];
  return p + n;
}
function get16(b: Uint8Array, o: number): number {
  return b[o] | (b[o + 1] << 8);
}
function get32(b: Uint8Array, o: number): number {
  return (b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24)) >>> 0;
}
function get48(b: Uint8Array, o: number): number {
  return get32(b, o) + get16(b, o + 4) * 0x1_0000_0000;
}
function hex32(v: number): string {
  return v.toString(16).padStart(8, '0');
}

