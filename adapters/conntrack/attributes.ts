/**
 * Attributes: the ctnetlink attribute numbers (CTA_*) and the netlink
 * attribute (nlattr) framing they travel in, as the kernel's
 * include/uapi/linux/netfilter/nfnetlink_conntrack.h defines them.
 *
 * This is the lowest layer of adapters/conntrack (attributes → messages →
 * flows). Everything here works on integer offsets into a Buffer so the hot
 * paths never allocate: an attribute is "the 4-byte header at `off`", its
 * payload starts at `off + 4`.
 */

/** Bytes of an nlattr header (u16 length, u16 type, host order). */
export const NLA_HDRLEN = 4;
/** Type bit the kernel sets on nested attributes; masked off before comparing types. */
export const NLA_F_NESTED = 0x8000;
/** Type bit for payloads in network order; masked off before comparing types. */
export const NLA_F_NET_BYTEORDER = 0x4000;
/** Mask that leaves the attribute number. */
export const NLA_TYPE_MASK = 0x3fff;

/** Round up to the 4-byte netlink alignment. */
export function nlaAlign(n: number): number {
  return (n + 3) & ~3;
}

/** Top-level attributes of one conntrack entry (enum ctattr_type). */
export const enum Cta {
  TupleOrig = 1,
  TupleReply = 2,
  /** be32 IPS_* bits. On create it must carry CONFIRMED and not EXPECTED/DYING. */
  Status = 3,
  ProtoInfo = 4,
  Help = 5,
  /** Nested NAT range for source NAT; accepted only on create. */
  NatSrc = 6,
  /** be32 seconds. Mandatory on create (EINVAL without it). */
  Timeout = 7,
  Mark = 8,
  CountersOrig = 9,
  CountersReply = 10,
  /** Reference count: read-only. */
  Use = 11,
  /** The kernel's entry id: read-only (on delete it must match, else ENOENT). */
  Id = 12,
  NatDst = 13,
  TupleMaster = 14,
  SeqAdjOrig = 15,
  SeqAdjReply = 16,
  /** Obsolete secmark number; modern kernels dump CTA_SECCTX instead. */
  Secmark = 17,
  /** be16 entry zone. */
  Zone = 18,
  Secctx = 19,
  Timestamp = 20,
  MarkMask = 21,
  /** 16 bytes of label bits; on create the kernel drops them silently without a label extension. */
  Labels = 22,
  LabelsMask = 23,
  Synproxy = 24,
  /** Dump filter by tuple fields (5.8+). */
  Filter = 25,
  /** Dump filter: status mask (5.15+). */
  StatusMask = 26,
  /** Rejected on input. */
  TimestampEvent = 27,
}

/** Inside CTA_TUPLE_ORIG / REPLY / MASTER. */
export const enum CtaTuple {
  Ip = 1,
  Proto = 2,
  /** be16 zone of this direction only (the entry then has no CTA_ZONE). */
  Zone = 3,
}

/** Inside CTA_TUPLE_IP. */
export const enum CtaIp {
  V4Src = 1,
  V4Dst = 2,
  V6Src = 3,
  V6Dst = 4,
}

/** Inside CTA_TUPLE_PROTO. */
export const enum CtaProto {
  Num = 1,
  /** be16; also the GRE key. */
  SrcPort = 2,
  DstPort = 3,
  IcmpId = 4,
  IcmpType = 5,
  IcmpCode = 6,
  Icmpv6Id = 7,
  Icmpv6Type = 8,
  Icmpv6Code = 9,
}

/** Inside CTA_PROTOINFO. */
export const enum CtaProtoInfo {
  Tcp = 1,
  Dccp = 2,
  Sctp = 3,
}

/** Inside CTA_PROTOINFO_TCP. */
export const enum CtaProtoInfoTcp {
  State = 1,
  WscaleOriginal = 2,
  WscaleReply = 3,
  /** struct nf_ct_tcp_flags { u8 flags; u8 mask; } — dumps carry mask 0. */
  FlagsOriginal = 4,
  FlagsReply = 5,
}

/** Inside CTA_PROTOINFO_DCCP. */
export const enum CtaProtoInfoDccp {
  State = 1,
  Role = 2,
  HandshakeSeq = 3,
}

/** Inside CTA_PROTOINFO_SCTP. */
export const enum CtaProtoInfoSctp {
  State = 1,
  VtagOriginal = 2,
  VtagReply = 3,
}

/** Inside CTA_COUNTERS_ORIG / REPLY. */
export const enum CtaCounters {
  /** be64 */
  Packets = 1,
  Bytes = 2,
  /** be32, old kernels */
  Packets32 = 3,
  Bytes32 = 4,
}

/** Inside CTA_TIMESTAMP. */
export const enum CtaTimestamp {
  Start = 1,
  Stop = 2,
}

/** Inside CTA_NAT_SRC / CTA_NAT_DST. */
export const enum CtaNat {
  V4MinIp = 1,
  V4MaxIp = 2,
  Proto = 3,
  V6MinIp = 4,
  V6MaxIp = 5,
}

/** Inside CTA_NAT_PROTO. */
export const enum CtaProtoNat {
  PortMin = 1,
  PortMax = 2,
}

/** Inside CTA_SEQ_ADJ_ORIG / REPLY. */
export const enum CtaSeqAdj {
  CorrectionPos = 1,
  OffsetBefore = 2,
  OffsetAfter = 3,
}

/** Inside CTA_HELP. */
export const enum CtaHelp {
  /** NUL-terminated, at most 15 characters. */
  Name = 1,
  Info = 2,
}

/** Inside CTA_SECCTX. */
export const enum CtaSecctx {
  Name = 1,
}

/** Inside CTA_SYNPROXY. */
export const enum CtaSynproxy {
  Isn = 1,
  Its = 2,
  Tsoff = 3,
}

/** Inside CTA_FILTER: which tuple fields the dump must match (u32, host order). */
export const enum CtaFilter {
  OrigFlags = 1,
  ReplyFlags = 2,
}

/** Bits of CTA_FILTER_ORIG_FLAGS / REPLY_FLAGS. */
export const enum FilterFlag {
  IpSrc = 1 << 0,
  IpDst = 1 << 1,
  TupleZone = 1 << 2,
  ProtoNum = 1 << 3,
  ProtoSrcPort = 1 << 4,
  ProtoDstPort = 1 << 5,
}

/** TCP flag bits of nf_ct_tcp_flags. */
export const enum TcpFlag {
  WindowScale = 0x01,
  SackPerm = 0x02,
  CloseInit = 0x04,
  /**
   * Skip window tracking. Set on every imported TCP entry: the kernel's
   * window positions (td_end/td_maxend) cannot be carried over netlink, and
   * without this the first packets after a migration fall "out of window".
   */
  BeLiberal = 0x08,
}

/** A netlink message or attribute that does not hold together; nothing was taken from it. */
export class NetlinkFormatError extends Error {
  constructor(
    readonly what: string,
    readonly offset: number,
  ) {
    super(`malformed netlink data at byte ${offset}: ${what}; the message was ignored`);
    this.name = 'NetlinkFormatError';
  }
}

/**
 * End offset of the attribute at `off` (its header's length), checked
 * against `end`. Throws NetlinkFormatError for a length below the header or
 * past the enclosing end, so a walker never reads outside its parent.
 */
export function attrEnd(buf: Uint8Array, off: number, end: number): number {
  if (off + NLA_HDRLEN > end) throw new NetlinkFormatError('attribute header truncated', off);
  const len = buf[off] | (buf[off + 1] << 8);
  if (len < NLA_HDRLEN || off + len > end) throw new NetlinkFormatError(`attribute length ${len} out of bounds`, off);
  return off + len;
}

/** Attribute number (flags masked off) of the attribute at `off`. */
export function attrType(buf: Uint8Array, off: number): number {
  return (buf[off + 2] | (buf[off + 3] << 8)) & NLA_TYPE_MASK;
}

/** Offset of the next attribute after one ending at `end` (4-byte aligned). */
export function nextAttr(end: number): number {
  return (end + 3) & ~3;
}

/** Require an attribute payload of exactly `n` bytes (the kernel's policy lengths). */
export function needLen(off: number, end: number, n: number): void {
  if (end - off - NLA_HDRLEN < n) throw new NetlinkFormatError(`attribute payload shorter than ${n} bytes`, off);
}
