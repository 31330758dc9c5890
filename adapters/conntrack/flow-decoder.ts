/**
 * Flow decoder: one ctnetlink conntrack message (dump reply or event) into
 * the fixed FlowRecord layout of plugin/flow.ts.
 *
 * The top layer of adapters/conntrack for reading. It walks attributes with
 * integer offsets straight out of the received Buffer and writes into a
 * reused FlowRecord: no slices, no objects, no strings per entry (a dump of
 * 100k entries must parse at well over 500k entries/s on two cores).
 */
import {
  AF_INET,
  AF_INET6,
  ExtFlag,
  HELPER_NAME_MAX,
  R_FAMILY,
  R_FLAGS,
  R_ID,
  R_L4PROTO,
  R_MARK,
  R_ORIG_DPORT,
  R_ORIG_DST,
  R_ORIG_SPORT,
  R_ORIG_SRC,
  R_PROTO_A,
  R_PROTO_B,
  R_PROTO_STATE,
  R_REPLY_DPORT,
  R_REPLY_DST,
  R_REPLY_SPORT,
  R_REPLY_SRC,
  R_STATUS,
  R_TCP_WSCALE_ORIG,
  R_TCP_WSCALE_REPLY,
  R_TIMEOUT,
  R_ZONE,
  R_ZONE_DIR,
  RECORD_BYTES,
  RecordFlag,
  X_COUNTERS,
  X_HELPER,
  X_LABELS,
  X_MASTER_DPORT,
  X_MASTER_DST,
  X_MASTER_FAMILY,
  X_MASTER_L4PROTO,
  X_MASTER_SPORT,
  X_MASTER_SRC,
  X_PRESENT,
  X_SECMARK,
  X_SEQADJ_ORIG,
  X_SEQADJ_REPLY,
  X_SYNPROXY,
  X_TIMESTAMP,
  X_USE,
  ZoneDir,
} from '../../plugin/flow';
import { FlowRecord } from '../../plugin/flow-view';
import {
  attrEnd,
  attrType,
  Cta,
  CtaCounters,
  CtaHelp,
  CtaIp,
  CtaProto,
  CtaProtoInfo,
  CtaProtoInfoDccp,
  CtaProtoInfoSctp,
  CtaProtoInfoTcp,
  CtaSeqAdj,
  CtaSynproxy,
  CtaTimestamp,
  CtaTuple,
  needLen,
  NetlinkFormatError,
  nextAttr,
} from './attributes';
import { NFNL_ATTR_OFFSET, NLMSG_HDRLEN } from './netlink-message';

/** Bits of FlowDecoder.seen: which parts the last message carried (events carry only some). */
export const enum Seen {
  Status = 1,
  Timeout = 2,
  Mark = 4,
  ProtoInfo = 8,
  Help = 16,
  Labels = 32,
  SeqAdjOrig = 64,
  SeqAdjReply = 128,
  Synproxy = 256,
  Master = 512,
  Counters = 1024,
  Timestamp = 2048,
  Id = 4096,
  Use = 8192,
  Secmark = 16384,
  Zone = 32768,
}

const enum TupleKind {
  Orig = 0,
  Reply = 1,
  Master = 2,
}

const X = RECORD_BYTES; // extension base inside a FlowRecord

/** Big-endian u32 at `p`. */
function be32(b: Uint8Array, p: number): number {
  return ((b[p] << 24) | (b[p + 1] << 16) | (b[p + 2] << 8) | b[p + 3]) >>> 0;
}

/** Big-endian u16 at `p`. */
function be16(b: Uint8Array, p: number): number {
  return (b[p] << 8) | b[p + 1];
}

/**
 * Decodes conntrack messages into a FlowRecord it is handed. One decoder per
 * thread; `seen` describes the last message (callers merge partial update
 * events with it). Malformed input throws NetlinkFormatError and leaves the
 * record in an unspecified state (callers discard it).
 */
export class FlowDecoder {
  /** Seen bits of the last decoded message. */
  seen = 0;
  /**
   * Keep CTA_USE (the kernel's reference count) in the extension. Off by
   * default: every dumped entry carries it, so keeping it would give every
   * record an extension (table extension space is sized for the rare parts).
   */
  keepUse = false;

  private u8: Uint8Array = new Uint8Array(0);
  private u16: Uint16Array = new Uint16Array(0);
  private u32: Uint32Array = new Uint32Array(0);
  private family = 0;
  private icmpType = 0;
  private icmpCode = 0;

  /**
   * Decode the conntrack message that spans [msgOff, msgEnd) of `buf` (a
   * whole nlmsghdr + nfgenmsg + attributes) into `rec`, which is cleared
   * first. Throws NetlinkFormatError when the message does not hold together
   * or lacks either tuple.
   */
  decode(buf: Uint8Array, msgOff: number, msgEnd: number, rec: FlowRecord): void {
    if (msgEnd - msgOff < NFNL_ATTR_OFFSET) throw new NetlinkFormatError('conntrack message shorter than its headers', msgOff);
    rec.clear();
    this.u8 = rec.u8;
    this.u16 = rec.u16;
    this.u32 = rec.u32;
    const family = buf[msgOff + NLMSG_HDRLEN];
    if (family !== AF_INET && family !== AF_INET6) throw new NetlinkFormatError(`address family ${family} is not IPv4 or IPv6`, msgOff);
    this.family = family;
    this.u8[R_FAMILY] = family;
    let seen = 0;
    let tuples = 0;
    let flags = 0;
    const u8 = this.u8;
    const u32 = this.u32;
    for (let a = msgOff + NFNL_ATTR_OFFSET; a < msgEnd; ) {
      const e = attrEnd(buf, a, msgEnd);
      const p = a + 4;
      switch (attrType(buf, a)) {
        case Cta.TupleOrig:
          this.tuple(buf, p, e, TupleKind.Orig);
          tuples |= 1;
          break;
        case Cta.TupleReply:
          this.tuple(buf, p, e, TupleKind.Reply);
          tuples |= 2;
          break;
        case Cta.TupleMaster:
          this.tuple(buf, p, e, TupleKind.Master);
          u32[(X + X_PRESENT) >> 2] |= ExtFlag.Master;
          seen |= Seen.Master;
          break;
        case Cta.Status:
          needLen(a, e, 4);
          u32[R_STATUS >> 2] = be32(buf, p);
          seen |= Seen.Status;
          break;
        case Cta.Timeout:
          needLen(a, e, 4);
          u32[R_TIMEOUT >> 2] = be32(buf, p);
          flags |= RecordFlag.HasTimeout;
          seen |= Seen.Timeout;
          break;
        case Cta.Mark:
          needLen(a, e, 4);
          u32[R_MARK >> 2] = be32(buf, p);
          flags |= RecordFlag.HasMark;
          seen |= Seen.Mark;
          break;
        case Cta.Zone:
          needLen(a, e, 2);
          this.u16[R_ZONE >> 1] = be16(buf, p);
          flags |= RecordFlag.HasZone;
          seen |= Seen.Zone;
          break;
        case Cta.Id:
          needLen(a, e, 4);
          u32[R_ID >> 2] = be32(buf, p);
          flags |= RecordFlag.HasId;
          seen |= Seen.Id;
          break;
        case Cta.Use:
          needLen(a, e, 4);
          if (this.keepUse) {
            u32[(X + X_USE) >> 2] = be32(buf, p);
            u32[(X + X_PRESENT) >> 2] |= ExtFlag.Use;
          }
          seen |= Seen.Use;
          break;
        case Cta.ProtoInfo:
          if (this.protoInfo(buf, p, e)) flags |= RecordFlag.HasProtoInfo;
          seen |= Seen.ProtoInfo;
          break;
        case Cta.Help:
          this.help(buf, p, e);
          seen |= Seen.Help;
          break;
        case Cta.Labels: {
          const n = e - p;
          if (n > 16) throw new NetlinkFormatError('CTA_LABELS longer than 16 bytes', a);
          for (let i = 0; i < n; i++) u8[X + X_LABELS + i] = buf[p + i];
          u32[(X + X_PRESENT) >> 2] |= ExtFlag.Labels;
          seen |= Seen.Labels;
          break;
        }
        case Cta.SeqAdjOrig:
          this.seqAdj(buf, p, e, X + X_SEQADJ_ORIG);
          u32[(X + X_PRESENT) >> 2] |= ExtFlag.SeqAdjOrig;
          seen |= Seen.SeqAdjOrig;
          break;
        case Cta.SeqAdjReply:
          this.seqAdj(buf, p, e, X + X_SEQADJ_REPLY);
          u32[(X + X_PRESENT) >> 2] |= ExtFlag.SeqAdjReply;
          seen |= Seen.SeqAdjReply;
          break;
        case Cta.Synproxy:
          // ctnetlink gives every entry it creates a zeroed synproxy
          // extension and dumps it; all-zero is the same as none.
          if (this.synproxy(buf, p, e)) u32[(X + X_PRESENT) >> 2] |= ExtFlag.Synproxy;
          seen |= Seen.Synproxy;
          break;
        case Cta.CountersOrig:
          this.counters(buf, p, e, X + X_COUNTERS);
          u32[(X + X_PRESENT) >> 2] |= ExtFlag.Counters;
          seen |= Seen.Counters;
          break;
        case Cta.CountersReply:
          this.counters(buf, p, e, X + X_COUNTERS + 16);
          u32[(X + X_PRESENT) >> 2] |= ExtFlag.Counters;
          seen |= Seen.Counters;
          break;
        case Cta.Timestamp:
          this.timestamp(buf, p, e);
          u32[(X + X_PRESENT) >> 2] |= ExtFlag.Timestamp;
          seen |= Seen.Timestamp;
          break;
        case Cta.Secmark:
          needLen(a, e, 4);
          u32[(X + X_SECMARK) >> 2] = be32(buf, p);
          u32[(X + X_PRESENT) >> 2] |= ExtFlag.Secmark;
          seen |= Seen.Secmark;
          break;
        default:
          // CTA_SECCTX (a label string the record has no room for), NAT
          // ranges (never dumped) and attributes of newer kernels: skipped.
          break;
      }
      a = nextAttr(e);
    }
    if (tuples !== 3) throw new NetlinkFormatError('conntrack message without both tuples', msgOff);
    u8[R_FLAGS] = flags;
    this.seen = seen;
  }

  private tuple(buf: Uint8Array, off: number, end: number, kind: TupleKind): void {
    let srcAt: number;
    let dstAt: number;
    let sportAt: number;
    let dportAt: number;
    let protoAt: number;
    if (kind === TupleKind.Orig) {
      srcAt = R_ORIG_SRC;
      dstAt = R_ORIG_DST;
      sportAt = R_ORIG_SPORT;
      dportAt = R_ORIG_DPORT;
      protoAt = R_L4PROTO;
    } else if (kind === TupleKind.Reply) {
      srcAt = R_REPLY_SRC;
      dstAt = R_REPLY_DST;
      sportAt = R_REPLY_SPORT;
      dportAt = R_REPLY_DPORT;
      protoAt = -1;
    } else {
      srcAt = X + X_MASTER_SRC;
      dstAt = X + X_MASTER_DST;
      sportAt = X + X_MASTER_SPORT;
      dportAt = X + X_MASTER_DPORT;
      protoAt = X + X_MASTER_L4PROTO;
      this.u8[X + X_MASTER_FAMILY] = this.family;
    }
    let have = 0;
    for (let a = off; a < end; ) {
      const e = attrEnd(buf, a, end);
      const t = attrType(buf, a);
      if (t === CtaTuple.Ip) {
        this.addresses(buf, a + 4, e, srcAt, dstAt);
        have |= 1;
      } else if (t === CtaTuple.Proto) {
        const num = this.proto(buf, a + 4, e, sportAt, dportAt);
        if (protoAt >= 0) this.u8[protoAt] = num;
        have |= 2;
      } else if (t === CtaTuple.Zone) {
        needLen(a, e, 2);
        if (kind !== TupleKind.Master) {
          this.u16[R_ZONE >> 1] = be16(buf, a + 4);
          this.u8[R_ZONE_DIR] |= kind === TupleKind.Orig ? ZoneDir.Orig : ZoneDir.Reply;
        }
      }
      a = nextAttr(e);
    }
    if ((have & 3) !== 3) throw new NetlinkFormatError('tuple without addresses or protocol', off);
  }

  private addresses(buf: Uint8Array, off: number, end: number, srcAt: number, dstAt: number): void {
    const u8 = this.u8;
    const v4 = this.family === AF_INET;
    for (let a = off; a < end; ) {
      const e = attrEnd(buf, a, end);
      const t = attrType(buf, a);
      const p = a + 4;
      if (t === CtaIp.V4Src || t === CtaIp.V4Dst) {
        if (!v4) throw new NetlinkFormatError('IPv4 address in an IPv6 entry', a);
        needLen(a, e, 4);
        const at = t === CtaIp.V4Src ? srcAt : dstAt;
        u8[at] = buf[p];
        u8[at + 1] = buf[p + 1];
        u8[at + 2] = buf[p + 2];
        u8[at + 3] = buf[p + 3];
      } else if (t === CtaIp.V6Src || t === CtaIp.V6Dst) {
        if (v4) throw new NetlinkFormatError('IPv6 address in an IPv4 entry', a);
        needLen(a, e, 16);
        const at = t === CtaIp.V6Src ? srcAt : dstAt;
        for (let i = 0; i < 16; i++) u8[at + i] = buf[p + i];
      }
      a = nextAttr(e);
    }
  }

  /** Returns the protocol number. */
  private proto(buf: Uint8Array, off: number, end: number, sportAt: number, dportAt: number): number {
    const u16 = this.u16;
    let num = -1;
    let icmp = false;
    this.icmpType = 0;
    this.icmpCode = 0;
    for (let a = off; a < end; ) {
      const e = attrEnd(buf, a, end);
      const p = a + 4;
      switch (attrType(buf, a)) {
        case CtaProto.Num:
          needLen(a, e, 1);
          num = buf[p];
          break;
        case CtaProto.SrcPort:
          needLen(a, e, 2);
          u16[sportAt >> 1] = be16(buf, p);
          break;
        case CtaProto.DstPort:
          needLen(a, e, 2);
          u16[dportAt >> 1] = be16(buf, p);
          break;
        case CtaProto.IcmpId:
        case CtaProto.Icmpv6Id:
          needLen(a, e, 2);
          u16[sportAt >> 1] = be16(buf, p);
          icmp = true;
          break;
        case CtaProto.IcmpType:
        case CtaProto.Icmpv6Type:
          needLen(a, e, 1);
          this.icmpType = buf[p];
          icmp = true;
          break;
        case CtaProto.IcmpCode:
        case CtaProto.Icmpv6Code:
          needLen(a, e, 1);
          this.icmpCode = buf[p];
          icmp = true;
          break;
      }
      a = nextAttr(e);
    }
    if (num < 0) throw new NetlinkFormatError('tuple without CTA_PROTO_NUM', off);
    if (icmp) u16[dportAt >> 1] = (this.icmpType << 8) | this.icmpCode;
    return num;
  }

  /** Returns true when the protocol info filled the record's protocol fields. */
  private protoInfo(buf: Uint8Array, off: number, end: number): boolean {
    let filled = false;
    const u8 = this.u8;
    const u32 = this.u32;
    for (let a = off; a < end; ) {
      const e = attrEnd(buf, a, end);
      const t = attrType(buf, a);
      for (let b = a + 4; b < e; ) {
        const f = attrEnd(buf, b, e);
        const q = b + 4;
        const s = attrType(buf, b);
        if (t === CtaProtoInfo.Tcp) {
          if (s === CtaProtoInfoTcp.State) {
            needLen(b, f, 1);
            u8[R_PROTO_STATE] = buf[q];
            filled = true;
          } else if (s === CtaProtoInfoTcp.WscaleOriginal) {
            needLen(b, f, 1);
            u8[R_TCP_WSCALE_ORIG] = buf[q];
          } else if (s === CtaProtoInfoTcp.WscaleReply) {
            needLen(b, f, 1);
            u8[R_TCP_WSCALE_REPLY] = buf[q];
          } else if (s === CtaProtoInfoTcp.FlagsOriginal) {
            needLen(b, f, 2);
            u8[R_PROTO_A] = buf[q];
          } else if (s === CtaProtoInfoTcp.FlagsReply) {
            needLen(b, f, 2);
            u8[R_PROTO_A + 1] = buf[q];
          }
        } else if (t === CtaProtoInfo.Sctp) {
          if (s === CtaProtoInfoSctp.State) {
            needLen(b, f, 1);
            u8[R_PROTO_STATE] = buf[q];
            filled = true;
          } else if (s === CtaProtoInfoSctp.VtagOriginal) {
            needLen(b, f, 4);
            u32[R_PROTO_A >> 2] = be32(buf, q);
          } else if (s === CtaProtoInfoSctp.VtagReply) {
            needLen(b, f, 4);
            u32[R_PROTO_B >> 2] = be32(buf, q);
          }
        } else if (t === CtaProtoInfo.Dccp) {
          if (s === CtaProtoInfoDccp.State) {
            needLen(b, f, 1);
            u8[R_PROTO_STATE] = buf[q];
            filled = true;
          }
        }
        b = nextAttr(f);
      }
      a = nextAttr(e);
    }
    return filled;
  }

  private help(buf: Uint8Array, off: number, end: number): void {
    for (let a = off; a < end; ) {
      const e = attrEnd(buf, a, end);
      if (attrType(buf, a) === CtaHelp.Name) {
        let n = 0;
        const p = a + 4;
        while (p + n < e && buf[p + n] !== 0) n++;
        if (n > HELPER_NAME_MAX) throw new NetlinkFormatError(`helper name longer than ${HELPER_NAME_MAX} bytes`, a);
        if (n > 0) {
          for (let i = 0; i < n; i++) this.u8[X + X_HELPER + i] = buf[p + i];
          this.u32[(X + X_PRESENT) >> 2] |= ExtFlag.Helper;
        }
      }
      a = nextAttr(e);
    }
  }

  private seqAdj(buf: Uint8Array, off: number, end: number, at: number): void {
    for (let a = off; a < end; ) {
      const e = attrEnd(buf, a, end);
      const t = attrType(buf, a);
      if (t >= CtaSeqAdj.CorrectionPos && t <= CtaSeqAdj.OffsetAfter) {
        needLen(a, e, 4);
        this.u32[(at >> 2) + t - 1] = be32(buf, a + 4);
      }
      a = nextAttr(e);
    }
  }

  /** Returns true when any value is non-zero. */
  private synproxy(buf: Uint8Array, off: number, end: number): boolean {
    let any = 0;
    for (let a = off; a < end; ) {
      const e = attrEnd(buf, a, end);
      const t = attrType(buf, a);
      if (t >= CtaSynproxy.Isn && t <= CtaSynproxy.Tsoff) {
        needLen(a, e, 4);
        const v = be32(buf, a + 4);
        this.u32[((X + X_SYNPROXY) >> 2) + t - 1] = v;
        any |= v;
      }
      a = nextAttr(e);
    }
    return any !== 0;
  }

  /** packets at `at` (lo, hi), bytes at `at + 8`. */
  private counters(buf: Uint8Array, off: number, end: number, at: number): void {
    const u32 = this.u32;
    for (let a = off; a < end; ) {
      const e = attrEnd(buf, a, end);
      const t = attrType(buf, a);
      const p = a + 4;
      if (t === CtaCounters.Packets || t === CtaCounters.Bytes) {
        needLen(a, e, 8);
        const w = (at + (t === CtaCounters.Bytes ? 8 : 0)) >> 2;
        u32[w] = be32(buf, p + 4);
        u32[w + 1] = be32(buf, p);
      } else if (t === CtaCounters.Packets32 || t === CtaCounters.Bytes32) {
        needLen(a, e, 4);
        const w = (at + (t === CtaCounters.Bytes32 ? 8 : 0)) >> 2;
        u32[w] = be32(buf, p);
        u32[w + 1] = 0;
      }
      a = nextAttr(e);
    }
  }

  private timestamp(buf: Uint8Array, off: number, end: number): void {
    const u32 = this.u32;
    for (let a = off; a < end; ) {
      const e = attrEnd(buf, a, end);
      const t = attrType(buf, a);
      if (t === CtaTimestamp.Start || t === CtaTimestamp.Stop) {
        needLen(a, e, 8);
        const w = (X + X_TIMESTAMP + (t === CtaTimestamp.Stop ? 8 : 0)) >> 2;
        u32[w] = be32(buf, a + 8);
        u32[w + 1] = be32(buf, a + 4);
      }
      a = nextAttr(e);
    }
  }
}
