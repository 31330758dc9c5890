import {
  AF_INET,
  EXT_BYTES,
  ExtFlag,
  R_EXT,
  R_FAMILY,
  R_FLAGS,
  R_ID,
  R_L4PROTO,
  R_MARK,
  R_ORIG_DPORT,
  R_ORIG_SPORT,
  R_PROTO_STATE,
  R_REPLY_DPORT,
  R_REPLY_SPORT,
  R_STATUS,
  R_TIMEOUT,
  R_VERSION_HI,
  R_VERSION_LO,
  R_ZONE,
  R_ZONE_DIR,
  RECORD_BYTES,
  X_PRESENT,
} from './flow';

/**
 * A movable window onto one flow record (and its extension) inside some
 * buffer: a table slot, a staging record, a decoded file. Moving it costs
 * nothing, so one view serves a whole iteration without allocating.
 */
export class FlowView {
  u8: Uint8Array;
  u16: Uint16Array;
  u32: Uint32Array;
  /** Byte offset of the record. */
  rec = 0;
  /** Byte offset of the extension, or -1 when the record has none. */
  ext = -1;

  constructor(u8: Uint8Array, u16: Uint16Array, u32: Uint32Array) {
    this.u8 = u8;
    this.u16 = u16;
    this.u32 = u32;
  }

  /** Point the view at another record (same buffer). */
  at(rec: number, ext: number): this {
    this.rec = rec;
    this.ext = ext;
    return this;
  }

  get flags(): number {
    return this.u8[this.rec + R_FLAGS];
  }
  get family(): number {
    return this.u8[this.rec + R_FAMILY];
  }
  get l4proto(): number {
    return this.u8[this.rec + R_L4PROTO];
  }
  get protoState(): number {
    return this.u8[this.rec + R_PROTO_STATE];
  }
  get zoneDir(): number {
    return this.u8[this.rec + R_ZONE_DIR];
  }
  get status(): number {
    return this.u32[(this.rec + R_STATUS) >> 2];
  }
  get timeout(): number {
    return this.u32[(this.rec + R_TIMEOUT) >> 2];
  }
  get mark(): number {
    return this.u32[(this.rec + R_MARK) >> 2];
  }
  get zone(): number {
    return this.u16[(this.rec + R_ZONE) >> 1];
  }
  get id(): number {
    return this.u32[(this.rec + R_ID) >> 2];
  }
  get version(): number {
    return this.u32[(this.rec + R_VERSION_LO) >> 2] + this.u16[(this.rec + R_VERSION_HI) >> 1] * 0x1_0000_0000;
  }
  get origSport(): number {
    return this.u16[(this.rec + R_ORIG_SPORT) >> 1];
  }
  get origDport(): number {
    return this.u16[(this.rec + R_ORIG_DPORT) >> 1];
  }
  get replySport(): number {
    return this.u16[(this.rec + R_REPLY_SPORT) >> 1];
  }
  get replyDport(): number {
    return this.u16[(this.rec + R_REPLY_DPORT) >> 1];
  }
  /** Extension parts present (ExtFlag bits); 0 without an extension. */
  get extPresent(): number {
    return this.ext < 0 ? 0 : this.u32[(this.ext + X_PRESENT) >> 2];
  }
  /** Byte length of an address in this record's family. */
  get addressLength(): number {
    return this.family === AF_INET ? 4 : 16;
  }
  hasFlag(flag: number): boolean {
    return (this.u8[this.rec + R_FLAGS] & flag) !== 0;
  }
  hasExt(part: ExtFlag): boolean {
    return (this.extPresent & part) !== 0;
  }
  u32At(byteOffset: number): number {
    return this.u32[(this.rec + byteOffset) >> 2];
  }
  u16At(byteOffset: number): number {
    return this.u16[(this.rec + byteOffset) >> 1];
  }
  u8At(byteOffset: number): number {
    return this.u8[this.rec + byteOffset];
  }
  extU32(byteOffset: number): number {
    return this.u32[(this.ext + byteOffset) >> 2];
  }
  extU16(byteOffset: number): number {
    return this.u16[(this.ext + byteOffset) >> 1];
  }
  extU8(byteOffset: number): number {
    return this.u8[this.ext + byteOffset];
  }
}

/**
 * A record with its own storage: where decoders put one entry before it goes
 * into a table, and where tests and JSON build entries. The extension always
 * follows the record; its X_PRESENT word says whether it is in use.
 */
export class FlowRecord extends FlowView {
  static readonly BYTES = RECORD_BYTES + EXT_BYTES;

  constructor() {
    const buf = new ArrayBuffer(FlowRecord.BYTES);
    super(new Uint8Array(buf), new Uint16Array(buf), new Uint32Array(buf));
    this.ext = RECORD_BYTES;
  }

  /** Zero everything: a blank record with no extension parts. */
  clear(): this {
    this.u32.fill(0);
    return this;
  }

  /** Copy another view's record and extension into this one. */
  copyFrom(src: FlowView): this {
    const s = src.rec >> 2;
    for (let i = 0; i < RECORD_BYTES >> 2; i++) this.u32[i] = src.u32[s + i];
    if (src.ext >= 0) {
      const x = src.ext >> 2;
      for (let i = 0; i < EXT_BYTES >> 2; i++) this.u32[(RECORD_BYTES >> 2) + i] = src.u32[x + i];
    } else {
      for (let i = 0; i < EXT_BYTES >> 2; i++) this.u32[(RECORD_BYTES >> 2) + i] = 0;
    }
    this.u32[R_EXT >> 2] = 0;
    return this;
  }

  setFlag(flag: number): void {
    this.u8[R_FLAGS] |= flag;
  }
  setU8(byteOffset: number, v: number): void {
    this.u8[byteOffset] = v;
  }
  setU16(byteOffset: number, v: number): void {
    this.u16[byteOffset >> 1] = v;
  }
  setU32(byteOffset: number, v: number): void {
    this.u32[byteOffset >> 2] = v >>> 0;
  }
  setExtU8(byteOffset: number, v: number): void {
    this.u8[RECORD_BYTES + byteOffset] = v;
  }
  setExtU16(byteOffset: number, v: number): void {
    this.u16[(RECORD_BYTES + byteOffset) >> 1] = v;
  }
  setExtU32(byteOffset: number, v: number): void {
    this.u32[(RECORD_BYTES + byteOffset) >> 2] = v >>> 0;
  }
  /** Mark an extension part present. */
  addExt(part: ExtFlag): void {
    this.u32[(RECORD_BYTES + X_PRESENT) >> 2] |= part;
  }
}
