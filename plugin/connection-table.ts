import {
  AF_INET,
  EXT_BYTES,
  EXT_WORDS,
  R_EXT,
  R_FAMILY,
  R_FLAGS,
  R_L4PROTO,
  R_NEXT,
  R_ORIG_SPORT,
  R_ORIG_SRC,
  R_SEQ,
  R_VERSION_HI,
  R_VERSION_LO,
  R_ZONE,
  R_ZONE_DIR,
  RECORD_BYTES,
  RECORD_WORDS,
  RecordFlag,
  X_PRESENT,
} from './flow';
import { FlowView } from './flow-view';
import { Cursor } from './table-cursor';
import {
  H_BUCKETS,
  H_CAPACITY,
  H_EXT_CAPACITY,
  H_EXT_FREE_HEAD,
  H_EXT_HIGH_WATER,
  H_FREE_HEAD,
  H_HIGH_WATER,
  H_LIVE,
  H_MAGIC,
  H_RING_MASK,
  H_RING_SIZE,
  H_TOMBSTONES,
  H_VERSION_HI,
  H_VERSION_LO,
  H_WORDS,
  HEADER_BYTES,
  MAGIC,
} from './table-header';

/** The table has no free slot (or extension) left for a new entry. */
export class TableFullError extends Error {
  constructor(
    readonly what: 'records' | 'extensions',
    readonly capacity: number,
  ) {
    super(
      `connection table is full (${capacity} ${what === 'records' ? 'entries' : 'extensions'}); ` +
        'raise the table capacity; the entry was not stored',
    );
    this.name = 'TableFullError';
  }
}

/** How big a table to make. */
export interface TableSize {
  /** Most entries (live plus tombstones) the table holds. */
  capacity: number;
  /** Most entries with an extension (labels, helper, NAT seqadj, master ...); default capacity / 4. */
  extCapacity?: number;
}


const NIL = 0xffffffff;

/** One murmur3 round: fold a key word into the hash. */
function mix(h: number, k: number): number {
  k = Math.imul(k, 0xcc9e2d51);
  k = (k << 15) | (k >>> 17);
  k = Math.imul(k, 0x1b873593);
  h ^= k;
  h = (h << 13) | (h >>> 19);
  return (Math.imul(h, 5) + 0xe6546b64) | 0;
}
const VERSION_LIMIT = 2 ** 48;
const RING_MIN = 1024;
const RING_MAX = 1 << 20;
/**
 * A Delta over more than high-water / RING_SCAN_DIVISOR (+ RING_MIN) versions
 * walks the slots instead: visiting a version costs a random record read, a
 * slot a sequential one (measured at 1M entries: ~0.22 us a version against
 * ~20 ns a slot, even at ~1/12).
 */
const RING_SCAN_DIVISOR = 16;

/**
 * Slots of the change ring for a table of `capacity` entries: the largest
 * power of two <= capacity / 4 (so the ring costs at most 1 byte per entry
 * once capacity >= 4096), between RING_MIN and RING_MAX.
 */
function ringSizeFor(capacity: number): number {
  let r = RING_MIN;
  while (r < RING_MAX && r * 2 <= capacity / 4) r <<= 1;
  return r;
}

/** Iteration modes of a Cursor. */
export const enum Scan {
  /** Live records with version <= to: the pre-copy snapshot at version `to`. */
  Snapshot = 0,
  /** Live records and tombstones with from < version <= to: what changed. */
  Delta = 1,
}

/**
 * The shared connection table: fixed-size flow records in one
 * SharedArrayBuffer. Exactly one thread writes (the conntrack worker, or the
 * importer on a destination); any thread may read through a Cursor, without
 * copying and without locks: each record has a seqlock word.
 *
 * Every change stamps the record with the next table version (48 bits), so
 * "what changed since version V" is a scan, and a destroyed entry stays as a
 * tombstone until reclaim() says every session has shipped it.
 *
 * Layout: header | hash buckets | records | extensions | change ring. Free
 * slots and free extensions are chained through themselves. The change ring
 * holds, for each of the last ringSize versions v, the slot stamped with v
 * (at ring[v & ringMask]), so a Delta over recent versions visits only the
 * slots that changed. Resident memory is RECORD_BYTES + ~1 byte of index +
 * at most 1 byte of ring per entry, plus EXT_BYTES for each entry that has an
 * extension; reserved but untouched capacity costs nothing.
 */
export class ConnectionTable {
  readonly sab: SharedArrayBuffer;
  readonly header: Int32Array;
  readonly u8: Uint8Array;
  readonly u16: Uint16Array;
  readonly u32: Uint32Array;
  readonly capacity: number;
  readonly extCapacity: number;
  private readonly buckets: Uint32Array;
  private readonly bucketMask: number;
  private readonly recordsBase: number;
  private readonly extBase: number;
  /** Change ring: ring[v & ringMask] is the slot stamped with version v (for the last ringSize versions). Internal to Cursor. */
  readonly ring: Uint32Array;
  readonly ringMask: number;
  /** Scratch view for lookups (writer side). */
  private readonly probe: FlowView;

  /** Make a new, empty table. */
  static create(size: TableSize): ConnectionTable {
    const capacity = Math.max(1, Math.floor(size.capacity));
    const extCapacity = Math.max(1, Math.floor(size.extCapacity ?? Math.ceil(capacity / 4)));
    if (capacity >= NIL || extCapacity >= NIL) throw new RangeError('table capacity too large');
    let buckets = 1;
    while (buckets < capacity / 4) buckets <<= 1;
    // One fixed buffer: the kernel commits its pages only when they are first
    // written, so unused capacity and unused extensions cost address space,
    // not memory. (A growable SharedArrayBuffer would keep the reservation
    // smaller, but V8 reads and writes length-tracking views ~6x slower.)
    const ringSize = ringSizeFor(capacity);
    const sab = new SharedArrayBuffer(HEADER_BYTES + buckets * 4 + capacity * RECORD_BYTES + extCapacity * EXT_BYTES + ringSize * 4);
    const header = new Int32Array(sab, 0, H_WORDS);
    header[H_MAGIC] = MAGIC;
    header[H_CAPACITY] = capacity;
    header[H_EXT_CAPACITY] = extCapacity;
    header[H_BUCKETS] = buckets;
    header[H_RING_SIZE] = ringSize;
    header[H_RING_MASK] = ringSize - 1;
    header[H_FREE_HEAD] = -1;
    header[H_EXT_FREE_HEAD] = -1;
    const t = new ConnectionTable(sab);
    t.buckets.fill(NIL);
    return t;
  }

  /** Attach to a table another thread made (the SharedArrayBuffer was posted over). */
  static attach(sab: SharedArrayBuffer): ConnectionTable {
    return new ConnectionTable(sab);
  }

  private constructor(sab: SharedArrayBuffer) {
    this.sab = sab;
    this.header = new Int32Array(sab, 0, H_WORDS);
    if (this.header[H_MAGIC] !== MAGIC) throw new Error('not a connection table');
    this.capacity = this.header[H_CAPACITY];
    this.extCapacity = this.header[H_EXT_CAPACITY];
    const buckets = this.header[H_BUCKETS];
    this.bucketMask = buckets - 1;
    const bucketsBase = HEADER_BYTES;
    this.recordsBase = bucketsBase + buckets * 4;
    this.extBase = this.recordsBase + this.capacity * RECORD_BYTES;
    this.u8 = new Uint8Array(sab);
    this.u16 = new Uint16Array(sab);
    this.u32 = new Uint32Array(sab);
    this.buckets = new Uint32Array(sab, bucketsBase, buckets);
    this.ring = new Uint32Array(sab, this.extBase + this.extCapacity * EXT_BYTES, this.header[H_RING_SIZE]);
    this.ringMask = this.header[H_RING_MASK];
    this.probe = new FlowView(this.u8, this.u16, this.u32);
  }

  /** Bytes of address space the table reserves (resident only where written). */
  get byteLength(): number {
    return this.sab.byteLength;
  }
  /**
   * Bytes the table's entries occupy: records and index up to the high-water
   * mark, extensions in use, and the part of the change ring written so far.
   */
  get usedBytes(): number {
    const slots = Atomics.load(this.header, H_HIGH_WATER);
    const ring = Math.min(this.version, this.ring.length) * 4;
    return HEADER_BYTES + slots * RECORD_BYTES + Math.ceil((slots * (this.bucketMask + 1) * 4) / this.capacity) + this.header[H_EXT_HIGH_WATER] * EXT_BYTES + ring;
  }
  /** Versions the change ring holds: a Delta from a version at least this far back walks every slot. */
  get ringSize(): number {
    return this.ring.length;
  }
  /** Version of the last committed change. */
  get version(): number {
    return (Atomics.load(this.header, H_VERSION_LO) >>> 0) + (Atomics.load(this.header, H_VERSION_HI) >>> 0) * 0x1_0000_0000;
  }
  /** Live entries. */
  get size(): number {
    return Atomics.load(this.header, H_LIVE);
  }
  /** Tombstones waiting to be reclaimed. */
  get tombstones(): number {
    return Atomics.load(this.header, H_TOMBSTONES);
  }

  /**
   * Writer side: the version the entry had before the last upsert(), or -1
   * when that upsert inserted a new key. Lets a dump count entries it saw
   * first without a second hash lookup per entry.
   */
  previousVersion = -1;

  private versionAt(rec: number): number {
    return this.u32[(rec + R_VERSION_LO) >> 2] + this.u16[(rec + R_VERSION_HI) >> 1] * 0x1_0000_0000;
  }

  /** Writer side: the version of the last change to `slot` (live or tombstone). */
  versionOf(slot: number): number {
    return this.versionAt(this.recordOffset(slot));
  }

  recordOffset(slot: number): number {
    return this.recordsBase + slot * RECORD_BYTES;
  }
  extOffset(index: number): number {
    return this.extBase + index * EXT_BYTES;
  }

  cursor(): Cursor {
    return new Cursor(this);
  }

  /**
   * True if the change ring still holds the slot of every version in
   * (from, to] and serving a Delta from it beats walking the slots: `to` is
   * no later than the current version (so no slot can be stamped again
   * inside the range while the Delta runs), the ring has not wrapped past
   * from + 1, and the range is small next to the slots in use.
   */
  ringCovers(from: number, to: number): boolean {
    const size = this.ring.length;
    const now = this.version;
    if (size === 0 || !(from >= 0) || !(to <= now)) return false;
    // The writer may already be overwriting the entry of now + 1 - size with
    // now + 1's, so from + 1 is still there only while now + 1 < from + 1 + size.
    if (now - size >= from) return false;
    return to - from <= Atomics.load(this.header, H_HIGH_WATER) / RING_SCAN_DIVISOR + RING_MIN;
  }

  /**
   * The writer's side of a record's seqlock: the sequence goes odd while the
   * record changes (a reader that sees odd, or a different value after
   * copying, copies again) and even when it is whole. beginWrite returns the
   * even value endWrite closes from. The table has one writer thread.
   */
  private beginWrite(rec: number): number {
    const i = (rec + R_SEQ) >> 2;
    const seq = this.u32[i];
    Atomics.store(this.u32, i, (seq + 1) >>> 0);
    return seq;
  }

  private endWrite(rec: number, seq: number): void {
    Atomics.store(this.u32, (rec + R_SEQ) >> 2, (seq + 2) >>> 0);
  }

  /** Spin until the record's seqlock is even; returns that sequence. */
  waitStable(rec: number): number {
    const i = (rec + R_SEQ) >> 2;
    let seq = Atomics.load(this.u32, i);
    while (seq & 1) seq = Atomics.load(this.u32, i);
    return seq;
  }

  // ---- writer side -------------------------------------------------------

  /**
   * Store an entry (insert, or overwrite the entry with the same original
   * tuple and zone) and stamp it with a new version. `src` is a record in any
   * buffer (a FlowRecord, a decoded frame); its extension is copied when it
   * has parts. Returns the slot.
   */
  upsert(src: FlowView): number {
    let slot = this.find(src);
    if (slot < 0) {
      slot = this.allocate(src);
      this.previousVersion = -1;
    } else this.previousVersion = this.versionAt(this.recordOffset(slot));
    const rec = this.recordOffset(slot);
    const wasLive = (this.u8[rec + R_FLAGS] & RecordFlag.Live) !== 0;
    const wasTomb = (this.u8[rec + R_FLAGS] & RecordFlag.Tombstone) !== 0;
    const needExt = src.extPresent !== 0;
    let ext = this.u32[(rec + R_EXT) >> 2];
    if (needExt && ext === 0) ext = this.allocateExt() + 1;
    const version = this.nextVersion();
    const w = rec >> 2;
    const seq = this.beginWrite(rec);
    const next = this.u32[w + (R_NEXT >> 2)];
    const s = src.rec >> 2;
    // Words 1.. are the entry; 0 is the seqlock, and EXT/NEXT are ours.
    for (let i = 1; i < RECORD_WORDS; i++) this.u32[w + i] = src.u32[s + i];
    this.u32[w + (R_NEXT >> 2)] = next;
    if (needExt) {
      const xw = this.extOffset(ext - 1) >> 2;
      const sx = src.ext >> 2;
      for (let i = 0; i < EXT_WORDS; i++) this.u32[xw + i] = src.u32[sx + i];
    } else if (ext !== 0) {
      this.freeExt(ext - 1);
      ext = 0;
    }
    this.u32[w + (R_EXT >> 2)] = ext;
    this.u8[rec + R_FLAGS] = (this.u8[rec + R_FLAGS] & ~RecordFlag.Tombstone) | RecordFlag.Live;
    this.ring[version & this.ringMask] = slot;
    this.stamp(rec, version);
    this.endWrite(rec, seq);
    if (!wasLive) Atomics.add(this.header, H_LIVE, 1);
    if (wasTomb) Atomics.sub(this.header, H_TOMBSTONES, 1);
    this.publish(version);
    return slot;
  }

  /**
   * Mark the entry with the same original tuple and zone as destroyed (a
   * tombstone with a new version). Returns its slot, or -1 if the table never
   * held it or it is already a tombstone.
   */
  remove(src: FlowView): number {
    const slot = this.find(src);
    if (slot < 0) return -1;
    const rec = this.recordOffset(slot);
    if ((this.u8[rec + R_FLAGS] & RecordFlag.Live) === 0) return -1;
    const version = this.nextVersion();
    const seq = this.beginWrite(rec);
    this.u8[rec + R_FLAGS] = (this.u8[rec + R_FLAGS] & ~RecordFlag.Live) | RecordFlag.Tombstone;
    this.ring[version & this.ringMask] = slot;
    this.stamp(rec, version);
    this.endWrite(rec, seq);
    Atomics.sub(this.header, H_LIVE, 1);
    Atomics.add(this.header, H_TOMBSTONES, 1);
    this.publish(version);
    return slot;
  }

  /** Slot of the entry with src's original tuple and zone (live or tombstone), or -1. */
  find(src: FlowView): number {
    const h = this.hashKey(src.u8, src.u32, src.rec) & this.bucketMask;
    let slot = this.buckets[h];
    while (slot !== NIL) {
      const rec = this.recordOffset(slot);
      if (this.sameKey(src.u8, src.u32, src.rec, rec)) return slot;
      slot = this.u32[(rec + R_NEXT) >> 2];
    }
    return -1;
  }

  /**
   * Free every tombstone whose version is <= `upTo` (all sessions that
   * needed it have shipped it). Returns how many were freed.
   */
  reclaim(upTo: number): number {
    const high = this.header[H_HIGH_WATER];
    let freed = 0;
    for (let s = 0; s < high; s++) {
      const rec = this.recordOffset(s);
      if ((this.u8[rec + R_FLAGS] & RecordFlag.Tombstone) === 0) continue;
      this.probe.at(rec, -1);
      if (this.probe.version > upTo) continue;
      this.unlink(s);
      const seq = this.beginWrite(rec);
      const ext = this.u32[(rec + R_EXT) >> 2];
      if (ext !== 0) this.freeExt(ext - 1);
      this.u32[(rec + R_EXT) >> 2] = 0;
      this.u8[rec + R_FLAGS] = 0;
      this.u32[(rec + R_NEXT) >> 2] = this.header[H_FREE_HEAD] >>> 0;
      this.endWrite(rec, seq);
      this.header[H_FREE_HEAD] = s;
      Atomics.sub(this.header, H_TOMBSTONES, 1);
      freed++;
    }
    return freed;
  }

  /** Forget everything (every reader must be done with the table). */
  clear(): void {
    this.buckets.fill(NIL);
    const end = this.recordOffset(this.header[H_HIGH_WATER]);
    this.u32.fill(0, this.recordsBase >> 2, end >> 2);
    Atomics.store(this.header, H_HIGH_WATER, 0);
    this.header[H_EXT_HIGH_WATER] = 0;
    this.header[H_FREE_HEAD] = -1;
    this.header[H_EXT_FREE_HEAD] = -1;
    Atomics.store(this.header, H_LIVE, 0);
    Atomics.store(this.header, H_TOMBSTONES, 0);
  }

  private nextVersion(): number {
    const v = this.version + 1;
    if (v >= VERSION_LIMIT) throw new RangeError('connection table version space exhausted');
    return v;
  }

  private stamp(rec: number, version: number): void {
    this.u32[(rec + R_VERSION_LO) >> 2] = version >>> 0;
    this.u16[(rec + R_VERSION_HI) >> 1] = Math.floor(version / 0x1_0000_0000);
  }

  private publish(version: number): void {
    Atomics.store(this.header, H_VERSION_HI, Math.floor(version / 0x1_0000_0000));
    Atomics.store(this.header, H_VERSION_LO, version | 0);
  }

  private allocate(src: FlowView): number {
    let slot = this.header[H_FREE_HEAD];
    if (slot >= 0) {
      const rec = this.recordOffset(slot);
      const next = this.u32[(rec + R_NEXT) >> 2];
      this.header[H_FREE_HEAD] = next === NIL ? -1 : next;
    } else {
      slot = this.header[H_HIGH_WATER];
      if (slot >= this.capacity) throw new TableFullError('records', this.capacity);
    }
    const rec = this.recordOffset(slot);
    // The key fields must be in place before the slot joins its chain.
    const w = rec >> 2;
    const s = src.rec >> 2;
    const seq = this.beginWrite(rec);
    for (let i = 1; i < RECORD_WORDS; i++) this.u32[w + i] = src.u32[s + i];
    this.u8[rec + R_FLAGS] = 0;
    this.u32[w + (R_EXT >> 2)] = 0;
    const h = this.hashKey(this.u8, this.u32, rec) & this.bucketMask;
    this.u32[w + (R_NEXT >> 2)] = this.buckets[h];
    this.endWrite(rec, seq);
    this.buckets[h] = slot;
    if (slot === this.header[H_HIGH_WATER]) Atomics.store(this.header, H_HIGH_WATER, slot + 1);
    return slot;
  }

  private unlink(slot: number): void {
    const rec = this.recordOffset(slot);
    const h = this.hashKey(this.u8, this.u32, rec) & this.bucketMask;
    let cur = this.buckets[h];
    let prev = -1;
    while (cur !== NIL) {
      const crec = this.recordOffset(cur);
      const next = this.u32[(crec + R_NEXT) >> 2];
      if (cur === slot) {
        if (prev < 0) this.buckets[h] = next;
        else this.u32[(this.recordOffset(prev) + R_NEXT) >> 2] = next;
        return;
      }
      prev = cur;
      cur = next;
    }
  }

  private allocateExt(): number {
    let x = this.header[H_EXT_FREE_HEAD];
    if (x >= 0) {
      const next = this.u32[(this.extOffset(x) + X_PRESENT) >> 2];
      this.header[H_EXT_FREE_HEAD] = next === NIL ? -1 : next;
      return x;
    }
    x = this.header[H_EXT_HIGH_WATER];
    if (x >= this.extCapacity) throw new TableFullError('extensions', this.extCapacity);
    this.header[H_EXT_HIGH_WATER] = x + 1;
    return x;
  }

  private freeExt(x: number): void {
    const off = this.extOffset(x);
    this.u32.fill(0, off >> 2, (off + EXT_BYTES) >> 2);
    this.u32[(off + X_PRESENT) >> 2] = this.header[H_EXT_FREE_HEAD] >>> 0;
    this.header[H_EXT_FREE_HEAD] = x;
  }

  /**
   * Hash of family, protocol, original tuple and zone (the kernel's identity
   * of an entry): murmur3 over the key words. Lab and NAT addresses are
   * sequential, so every bit of every word must reach the bucket index.
   */
  private hashKey(u8: Uint8Array, u32: Uint32Array, rec: number): number {
    let h = mix(0x9747b28c, (u8[rec + R_FAMILY] << 8) | u8[rec + R_L4PROTO] | (u32[(rec + R_ZONE) >> 2] << 16));
    const src = (rec + R_ORIG_SRC) >> 2;
    if (u8[rec + R_FAMILY] === AF_INET) {
      h = mix(h, u32[src]);
      h = mix(h, u32[src + 4]);
    } else {
      for (let i = 0; i < 8; i++) h = mix(h, u32[src + i]);
    }
    h = mix(h, u32[(rec + R_ORIG_SPORT) >> 2]);
    h ^= h >>> 16;
    h = Math.imul(h, 0x85ebca6b);
    h ^= h >>> 13;
    h = Math.imul(h, 0xc2b2ae35);
    h ^= h >>> 16;
    return h >>> 0;
  }

  private sameKey(a8: Uint8Array, a32: Uint32Array, a: number, b: number): boolean {
    const b8 = this.u8;
    if (a8[a + R_FAMILY] !== b8[b + R_FAMILY] || a8[a + R_L4PROTO] !== b8[b + R_L4PROTO]) return false;
    if (a8[a + R_ZONE] !== b8[b + R_ZONE] || a8[a + R_ZONE + 1] !== b8[b + R_ZONE + 1]) return false;
    if (a8[a + R_ZONE_DIR] !== b8[b + R_ZONE_DIR]) return false;
    // Original src and dst (8 words) and the two original ports (1 word).
    const aw = (a + R_ORIG_SRC) >> 2;
    const bw = (b + R_ORIG_SRC) >> 2;
    const b32 = this.u32;
    for (let i = 0; i < 8; i++) if (a32[aw + i] !== b32[bw + i]) return false;
    return a32[(a + R_ORIG_SPORT) >> 2] === b32[(b + R_ORIG_SPORT) >> 2];
  }
}
