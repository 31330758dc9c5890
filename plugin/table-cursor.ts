import { R_EXT, R_FLAGS, R_SEQ, R_VERSION_HI, R_VERSION_LO, RecordFlag } from './flow';
import { FlowView } from './flow-view';
import type { ConnectionTable } from './connection-table';
import { Scan } from './connection-table';
import { H_HIGH_WATER } from './table-header';

const enum RingState {
  /** Walk every slot. */
  Off = 0,
  /** A Delta the change ring covers; its slots are not collected yet. */
  Pending = 1,
  /** The Delta's slots are collected and sorted; yield them. */
  Ready = 2,
}

/**
 * Walks the table's slots in slot order. After next() returns true, `view`
 * points at the slot; a reader that copies fields out should call stable()
 * afterwards and, if it returns false (a concurrent write landed meanwhile),
 * retry() to re-read the same slot.
 *
 * A Snapshot walks every slot up to the high-water mark. A Delta whose range
 * the table's change ring still covers (the ring holds the slot of each of
 * the last ringSize versions) reads only the ring entries of the versions in
 * (from, to], keeps the slots whose last change is that version, sorts them
 * and yields those: O(changes) rather than O(table), with the same entries in
 * the same order as a walk. Otherwise a Delta walks every slot too. Allocates
 * only a scratch array for the ring's slots, kept for the next reset.
 */
export class Cursor {
  readonly view: FlowView;
  /** Slot of the current entry (after next() returned true). */
  slot = -1;
  private seq = 0;
  private from = 0;
  private to = 0;
  private mode: Scan = Scan.Snapshot;
  private ring: RingState = RingState.Off;
  /** Ring mode: the Delta's slots, sorted, in [0, count). */
  private picked = new Uint32Array(0);
  private count = 0;
  /** Ring mode: index in picked of the next slot to try. */
  private pickedAt = 0;

  constructor(private readonly table: ConnectionTable) {
    this.view = new FlowView(table.u8, table.u16, table.u32);
  }

  reset(mode: Scan, from: number, to: number): this {
    this.mode = mode;
    this.from = from;
    this.to = to;
    this.slot = -1;
    this.ring = mode === Scan.Delta && this.table.ringCovers(from, to) ? RingState.Pending : RingState.Off;
    this.count = 0;
    this.pickedAt = 0;
    return this;
  }

  /** True if this Delta is served from the change ring rather than by walking every slot. */
  get usesRing(): boolean {
    return this.ring !== RingState.Off;
  }

  next(): boolean {
    if (this.ring === RingState.Pending) this.ring = this.collect() ? RingState.Ready : RingState.Off;
    if (this.ring === RingState.Ready) return this.nextPicked();
    return this.nextFromSlots();
  }

  /** True if the slot has not changed since next() (or retry()) stopped on it. */
  stable(): boolean {
    return Atomics.load(this.table.u32, (this.view.rec + R_SEQ) >> 2) === this.seq;
  }

  /**
   * Re-read the current slot after stable() said it changed: true if it still
   * qualifies (view and stable() now refer to the fresh read), false if it
   * no longer does; either way the next next() carries on after it.
   */
  retry(): boolean {
    if (this.slot < 0 || this.slot >= Atomics.load(this.table.header, H_HIGH_WATER)) return false;
    return this.read(this.slot);
  }

  private nextFromSlots(): boolean {
    const high = Atomics.load(this.table.header, H_HIGH_WATER);
    for (let s = this.slot + 1; s < high; s++) {
      if (this.read(s)) return true;
    }
    this.slot = high;
    return false;
  }

  private nextPicked(): boolean {
    const picked = this.picked;
    while (this.pickedAt < this.count) {
      const s = picked[this.pickedAt++];
      if (this.pickedAt > 1 && picked[this.pickedAt - 2] === s) continue;
      // Re-read: a slot written since it was picked has left the range.
      if (this.read(s)) return true;
    }
    this.slot = Atomics.load(this.table.header, H_HIGH_WATER);
    return false;
  }

  /**
   * Pick the slots whose last change is a version in (from, to], from the
   * ring, and sort them. False if the writer lapped the ring meanwhile
   * (practically impossible: ringSize versions during one Delta); nothing
   * has been yielded yet, so the Delta simply walks every slot instead.
   *
   * No slot is picked twice: `to` is at most the version at reset, so a slot
   * whose last change was v when it was read cannot change again to another
   * version in the range. None is missed: a slot still in the range at the
   * end had its version v all along, and ring[v] was read before it was lapped.
   */
  private collect(): boolean {
    const t = this.table;
    const ring = t.ring;
    const mask = t.ringMask;
    const size = mask + 1;
    const u8 = t.u8;
    const u16 = t.u16;
    const u32 = t.u32;
    const high = Atomics.load(t.header, H_HIGH_WATER);
    const end = Math.floor(this.to);
    let picked = this.picked;
    let n = 0;
    for (let v = Math.floor(this.from) + 1; v <= end; v++) {
      // An atomic read, so that the version read below cannot come first.
      const s = Atomics.load(ring, v & mask);
      // The writer fills the ring entry of version w before it publishes w,
      // having published w - 1: ring[v & mask] still holds v's slot unless
      // the writer has got as far as filling v + size's.
      if (t.version + 1 >= v + size) return false;
      if (s >= high) continue;
      const rec = t.recordOffset(s);
      const seqI = (rec + R_SEQ) >> 2;
      let seq: number;
      let flags: number;
      let ver: number;
      do {
        seq = t.waitStable(rec);
        flags = u8[rec + R_FLAGS];
        ver = u32[(rec + R_VERSION_LO) >> 2] + u16[(rec + R_VERSION_HI) >> 1] * 0x1_0000_0000;
      } while (Atomics.load(u32, seqI) !== seq);
      if (ver !== v || (flags & (RecordFlag.Live | RecordFlag.Tombstone)) === 0) continue;
      if (n === picked.length) {
        const grown = new Uint32Array(Math.max(64, n * 2));
        grown.set(picked);
        picked = this.picked = grown;
      }
      picked[n++] = s;
    }
    picked.subarray(0, n).sort();
    this.count = n;
    this.pickedAt = 0;
    return true;
  }

  /** Read slot s; if it qualifies, stand on it and return true. */
  private read(s: number): boolean {
    const t = this.table;
    const u32 = t.u32;
    const rec = t.recordOffset(s);
    const seq = t.waitStable(rec);
    const flags = t.u8[rec + R_FLAGS];
    const v = u32[(rec + R_VERSION_LO) >> 2] + t.u16[(rec + R_VERSION_HI) >> 1] * 0x1_0000_0000;
    let take: boolean;
    if (this.mode === Scan.Snapshot) take = (flags & RecordFlag.Live) !== 0 && v <= this.to;
    else take = (flags & (RecordFlag.Live | RecordFlag.Tombstone)) !== 0 && v > this.from && v <= this.to;
    if (!take) return false;
    const ext = u32[(rec + R_EXT) >> 2];
    this.slot = s;
    this.seq = seq;
    this.view.at(rec, ext === 0 ? -1 : t.extOffset(ext - 1));
    return true;
  }
}

