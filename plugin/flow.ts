/**
 * Flow: the fixed-size binary record of one conntrack entry.
 *
 * Every part of ctmigrate that touches entries (the shared connection table,
 * the netlink codec, the snapshot codec) reads and writes this one layout, so
 * an entry is decoded once from the kernel and never turned into objects on a
 * hot path. A record is RECORD_BYTES long; everything rare (labels, helper,
 * sequence adjustment, synproxy, master tuple, counters, timestamps) lives in
 * an extension of EXT_BYTES that the record points at.
 *
 * Multi-byte integers are in host order (little-endian on every host we run
 * on), except addresses, which keep network order as raw bytes: an IPv4
 * address fills the first 4 bytes of its 16-byte slot, the rest are zero.
 */

/** Bytes of one record (a multiple of 4 so Uint32Array views line up). */
export const RECORD_BYTES = 124;
export const RECORD_WORDS = RECORD_BYTES / 4;

// Byte offsets inside a record.
/** Seqlock word, owned by the connection table: odd while a write is in progress. */
export const R_SEQ = 0;
/** Version of the record's last change: low 32 bits. */
export const R_VERSION_LO = 4;
/** Version: high 16 bits (versions are 48-bit). */
export const R_VERSION_HI = 8;
/** RecordFlag bits. */
export const R_FLAGS = 10;
/** Address family: 2 (AF_INET) or 10 (AF_INET6). */
export const R_FAMILY = 11;
/** IP protocol number (6 TCP, 17 UDP, 136 UDP-Lite, 1 ICMP, 58 ICMPv6, 132 SCTP, 47 GRE, ...). */
export const R_L4PROTO = 12;
/** TCP / SCTP / DCCP state as the kernel numbers it (valid with HAS_PROTOINFO). */
export const R_PROTO_STATE = 13;
/** ZoneDir bits: which tuples carried CTA_TUPLE_ZONE. */
export const R_ZONE_DIR = 14;
/** Reserved, zero. */
export const R_PAD = 15;
export const R_ORIG_SRC = 16;
export const R_ORIG_DST = 32;
export const R_REPLY_SRC = 48;
export const R_REPLY_DST = 64;
/**
 * Ports, u16 host order. TCP/UDP/UDP-Lite/SCTP/DCCP: ports. GRE: keys.
 * ICMP/ICMPv6: src = id, dst = (type << 8) | code.
 */
export const R_ORIG_SPORT = 80;
export const R_ORIG_DPORT = 82;
export const R_REPLY_SPORT = 84;
export const R_REPLY_DPORT = 86;
/** IPS_* status bits (u32). */
export const R_STATUS = 88;
/** Seconds left (u32), as dumped; on create the timeout to set. */
export const R_TIMEOUT = 92;
/** ct mark (u32). */
export const R_MARK = 96;
/** ct zone id (u16). */
export const R_ZONE = 100;
/** TCP window scale, original direction (u8). */
export const R_TCP_WSCALE_ORIG = 102;
/** TCP window scale, reply direction (u8). */
export const R_TCP_WSCALE_REPLY = 103;
/** TCP: flags original (u8) at +0, flags reply (u8) at +1. SCTP: vtag original (u32). */
export const R_PROTO_A = 104;
/** SCTP: vtag reply (u32). */
export const R_PROTO_B = 108;
/** The kernel's entry id (u32, read-only: shown, never sent). */
export const R_ID = 112;
/** 1-based index of the record's extension; 0 = none. Owned by the table. */
export const R_EXT = 116;
/** Hash-chain link, owned by the table. */
export const R_NEXT = 120;

/** Bits of R_FLAGS. */
export const enum RecordFlag {
  /** The entry exists. */
  Live = 1,
  /** The entry was destroyed; kept until every session has shipped it. */
  Tombstone = 2,
  /** R_PROTO_STATE and the TCP/SCTP fields are valid. */
  HasProtoInfo = 4,
  /** The entry carries a zone (CTA_ZONE). */
  HasZone = 8,
  /** The entry carries a mark (CTA_MARK). */
  HasMark = 16,
  /** R_TIMEOUT is valid. */
  HasTimeout = 32,
  /** R_ID is valid. */
  HasId = 64,
}

/** Bits of R_ZONE_DIR: tuples that carried their own zone (CTA_TUPLE_ZONE). */
export const enum ZoneDir {
  Orig = 1,
  Reply = 2,
}

/** Bytes of one extension. */
export const EXT_BYTES = 192;
export const EXT_WORDS = EXT_BYTES / 4;

// Byte offsets inside an extension.
/** ExtFlag bits: which parts are present. */
export const X_PRESENT = 0;
/** Reference count (u32, read-only). */
export const X_USE = 4;
/** Connection labels: 16 bytes, bit i = label i (CTA_LABELS layout). */
export const X_LABELS = 8;
/** Helper name, NUL-padded, at most 15 characters (NF_CT_HELPER_NAME_LEN 16). */
export const X_HELPER = 24;
export const HELPER_NAME_MAX = 15;
/** Sequence adjustment, original direction: correction position, offset before, offset after (u32 each). */
export const X_SEQADJ_ORIG = 40;
/** Sequence adjustment, reply direction (u32 x3). */
export const X_SEQADJ_REPLY = 52;
/** Synproxy: isn, its, tsoff (u32 each). */
export const X_SYNPROXY = 64;
/** Master tuple: family (u8), l4proto (u8), 2 pad bytes. */
export const X_MASTER_FAMILY = 76;
export const X_MASTER_L4PROTO = 77;
export const X_MASTER_SRC = 80;
export const X_MASTER_DST = 96;
export const X_MASTER_SPORT = 112;
export const X_MASTER_DPORT = 114;
/** Counters (read-only): orig packets, orig bytes, reply packets, reply bytes, each u64 as lo/hi u32. */
export const X_COUNTERS = 120;
/** Timestamps (read-only): start, stop, in ns, each u64 as lo/hi u32. */
export const X_TIMESTAMP = 152;
/** Secmark (u32, read-only). */
export const X_SECMARK = 168;
/** Reserved up to EXT_BYTES. */
export const X_RESERVED = 172;

/** Bits of X_PRESENT. */
export const enum ExtFlag {
  Labels = 1,
  Helper = 2,
  SeqAdjOrig = 4,
  SeqAdjReply = 8,
  Synproxy = 16,
  Master = 32,
  Counters = 64,
  Timestamp = 128,
  Use = 256,
  Secmark = 512,
}

/**
 * The extension parts, in bit order (which is the snapshot's wire order):
 * the one description of where the record keeps each part (`offset`,
 * `bytes`: its whole region, padding included) and which spans of it a
 * snapshot carries (`wire`: offset, length pairs; the master tuple skips
 * its padding). The snapshot encoder and decoder, their sizes, and the
 * event merge all read this table; adding a part means adding a row.
 */
export interface ExtPart {
  readonly flag: ExtFlag;
  readonly offset: number;
  readonly bytes: number;
  /** Flat [offset, length, offset, length...] of what is encoded, in order. */
  readonly wire: readonly number[];
}

export const EXT_PARTS: readonly ExtPart[] = [
  { flag: ExtFlag.Labels, offset: X_LABELS, bytes: 16, wire: [X_LABELS, 16] },
  { flag: ExtFlag.Helper, offset: X_HELPER, bytes: 16, wire: [X_HELPER, 16] },
  { flag: ExtFlag.SeqAdjOrig, offset: X_SEQADJ_ORIG, bytes: 12, wire: [X_SEQADJ_ORIG, 12] },
  { flag: ExtFlag.SeqAdjReply, offset: X_SEQADJ_REPLY, bytes: 12, wire: [X_SEQADJ_REPLY, 12] },
  { flag: ExtFlag.Synproxy, offset: X_SYNPROXY, bytes: 12, wire: [X_SYNPROXY, 12] },
  { flag: ExtFlag.Master, offset: X_MASTER_FAMILY, bytes: X_COUNTERS - X_MASTER_FAMILY, wire: [X_MASTER_FAMILY, 2, X_MASTER_SRC, X_MASTER_DPORT + 2 - X_MASTER_SRC] },
  { flag: ExtFlag.Counters, offset: X_COUNTERS, bytes: 32, wire: [X_COUNTERS, 32] },
  { flag: ExtFlag.Timestamp, offset: X_TIMESTAMP, bytes: 16, wire: [X_TIMESTAMP, 16] },
  { flag: ExtFlag.Use, offset: X_USE, bytes: 4, wire: [X_USE, 4] },
  { flag: ExtFlag.Secmark, offset: X_SECMARK, bytes: 4, wire: [X_SECMARK, 4] },
];

/** Encoded bytes of a part (the sum of its wire spans). */
export function extWireBytes(part: ExtPart): number {
  let n = 0;
  for (let i = 1; i < part.wire.length; i += 2) n += part.wire[i];
  return n;
}

/** IP protocol numbers the record gives meaning to. */
export const enum L4 {
  ICMP = 1,
  TCP = 6,
  UDP = 17,
  GRE = 47,
  ICMPV6 = 58,
  SCTP = 132,
  UDPLITE = 136,
  DCCP = 33,
}

export const AF_INET = 2;
export const AF_INET6 = 10;

/** Conntrack status bits (IPS_*), as in the kernel's nf_conntrack_common.h. */
export const enum Status {
  Expected = 1 << 0,
  SeenReply = 1 << 1,
  Assured = 1 << 2,
  Confirmed = 1 << 3,
  SrcNat = 1 << 4,
  DstNat = 1 << 5,
  SeqAdjust = 1 << 6,
  SrcNatDone = 1 << 7,
  DstNatDone = 1 << 8,
  Dying = 1 << 9,
  FixedTimeout = 1 << 10,
  Template = 1 << 11,
  NatClash = 1 << 12,
  Helper = 1 << 13,
  Offload = 1 << 14,
  HwOffload = 1 << 15,
}

/** True when the protocol's tuple carries 16-bit ports (or GRE keys). */
export function hasPorts(l4proto: number): boolean {
  return (
    l4proto === L4.TCP ||
    l4proto === L4.UDP ||
    l4proto === L4.UDPLITE ||
    l4proto === L4.SCTP ||
    l4proto === L4.DCCP ||
    l4proto === L4.GRE
  );
}

/** True for ICMP and ICMPv6, whose tuple is id/type/code. */
export function isIcmp(l4proto: number): boolean {
  return l4proto === L4.ICMP || l4proto === L4.ICMPV6;
}
