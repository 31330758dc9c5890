/**
 * Flow encoder: a FlowRecord (any FlowView) into the ctnetlink messages that
 * recreate or delete it — CT_NEW for create, CT_DELETE, and a CT_NEW update
 * that carries only the labels.
 *
 * The top layer of adapters/conntrack for writing. It writes into a caller's
 * preallocated Buffer at an offset and returns the new end, so a bulk writer
 * packs a thousand messages into one send() without allocating.
 *
 * What the kernel accepts on create (net/netfilter/nf_conntrack_netlink.c,
 * ctnetlink_create_conntrack) decides what goes out:
 * - CTA_TIMEOUT is mandatory.
 * - CTA_STATUS: the kernel sets CONFIRMED itself before applying ours and
 *   answers EBUSY if ours differs in CONFIRMED, EXPECTED or DYING, so we send
 *   CONFIRMED and never EXPECTED/DYING (EXPECTED comes from CTA_TUPLE_MASTER).
 *   NAT, NAT_DONE, SEQ_ADJUST, TEMPLATE, NAT_CLASH (=UNTRACKED), OFFLOAD and
 *   HW_OFFLOAD are IPS_UNCHANGEABLE_MASK: ignored, so we strip them. What is
 *   left to carry: SEEN_REPLY, ASSURED, FIXED_TIMEOUT, HELPER.
 * - NAT status bits come only from CTA_NAT_DST/SRC, which nf_nat_setup_info
 *   applies to the reply tuple we send: it sets IPS_SRC_NAT/DST_NAT only if
 *   the mapping changes that tuple. So we send the un-NATed reply (the
 *   inverse of the original) and exact one-address/one-port ranges rebuilt
 *   from the dumped reply tuple; the kernel then arrives at the same reply
 *   tuple and the same NAT bits as the source host.
 * - Read-only attributes (CTA_ID, CTA_USE, counters, timestamps, secmark,
 *   secctx) are never sent.
 */
import {
  AF_INET,
  ExtFlag,
  hasPorts,
  isIcmp,
  L4,
  R_FAMILY,
  R_FLAGS,
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
  RecordFlag,
  Status,
  X_HELPER,
  X_LABELS,
  X_MASTER_DPORT,
  X_MASTER_DST,
  X_MASTER_L4PROTO,
  X_MASTER_SPORT,
  X_MASTER_SRC,
  X_SEQADJ_ORIG,
  X_SEQADJ_REPLY,
  X_SYNPROXY,
  ZoneDir,
} from '../../plugin/flow';
import { FlowView } from '../../plugin/flow-view';
import {
  Cta,
  CtaHelp,
  CtaIp,
  CtaNat,
  CtaProto,
  CtaProtoInfo,
  CtaProtoInfoSctp,
  CtaProtoInfoTcp,
  CtaProtoNat,
  CtaSeqAdj,
  CtaSynproxy,
  CtaTuple,
  NLA_F_NESTED,
  TcpFlag,
} from './attributes';
import { beginMessage, CtMsg, ctMsgType, finishMessage } from './netlink-message';

/** Status bits a create may carry (everything else is the kernel's own or ignored). */
export const SETTABLE_STATUS = Status.SeenReply | Status.Assured | Status.FixedTimeout | Status.Helper;

/** Room one encoded message may need at most; writers flush before less is left. */
export const MAX_MESSAGE_BYTES = 1024;

/** Timeout (seconds) sent for an entry that was dumped without one (offloaded entries). */
export const FALLBACK_TIMEOUT = 120;

const TCP_STATE_MAX = 10; // TCP_CONNTRACK_MAX: states beyond are refused (EINVAL)

// ---- attribute writers (offset in, offset out) ------------------------------

function hdr(buf: Buffer, off: number, len: number, type: number): void {
  buf[off] = len & 0xff;
  buf[off + 1] = len >>> 8;
  buf[off + 2] = type & 0xff;
  buf[off + 3] = type >>> 8;
}

function putU8(buf: Buffer, off: number, type: number, v: number): number {
  hdr(buf, off, 5, type);
  buf[off + 4] = v;
  buf[off + 5] = 0;
  buf[off + 6] = 0;
  buf[off + 7] = 0;
  return off + 8;
}

function putBe16(buf: Buffer, off: number, type: number, v: number): number {
  hdr(buf, off, 6, type);
  buf[off + 4] = v >>> 8;
  buf[off + 5] = v & 0xff;
  buf[off + 6] = 0;
  buf[off + 7] = 0;
  return off + 8;
}

function putBe32(buf: Buffer, off: number, type: number, v: number): number {
  hdr(buf, off, 8, type);
  buf[off + 4] = v >>> 24;
  buf[off + 5] = (v >>> 16) & 0xff;
  buf[off + 6] = (v >>> 8) & 0xff;
  buf[off + 7] = v & 0xff;
  return off + 8;
}

function putBytes(buf: Buffer, off: number, type: number, src: Uint8Array, at: number, n: number): number {
  hdr(buf, off, 4 + n, type);
  for (let i = 0; i < n; i++) buf[off + 4 + i] = src[at + i];
  const end = off + 4 + n;
  const aligned = (end + 3) & ~3;
  for (let i = end; i < aligned; i++) buf[i] = 0;
  return aligned;
}

/** Open a nested attribute; close it with endNest(buf, start, end). */
function nest(buf: Buffer, off: number, type: number): number {
  hdr(buf, off, 0, type | NLA_F_NESTED);
  return off + 4;
}

function endNest(buf: Buffer, start: number, end: number): number {
  const len = end - start;
  buf[start] = len & 0xff;
  buf[start + 1] = len >>> 8;
  return end;
}

function sameBytes(u8: Uint8Array, a: number, b: number, n: number): boolean {
  for (let i = 0; i < n; i++) if (u8[a + i] !== u8[b + i]) return false;
  return true;
}

/**
 * Encodes FlowViews into ctnetlink requests. Stateless apart from its
 * settings; one per thread.
 */
export class FlowEncoder {
  /**
   * Write a CT_NEW that creates the entry (flags: NLM_F_REQUEST|CREATE|EXCL
   * plus ACK if wanted) at `off`; returns the end offset. Labels ride along
   * (the kernel silently drops them without label storage — see
   * encodeLabels for the check).
   */
  encodeCreate(v: FlowView, buf: Buffer, off: number, seq: number, flags: number): number {
    const u8 = v.u8;
    const r = v.rec;
    const family = u8[r + R_FAMILY];
    const l4 = u8[r + R_L4PROTO];
    const alen = family === AF_INET ? 4 : 16;
    const ports = hasPorts(l4);
    const icmp = isIcmp(l4);
    const zoneDir = u8[r + R_ZONE_DIR];
    const zone = v.u16[(r + R_ZONE) >> 1];
    const rflags = u8[r + R_FLAGS];

    // NAT as the kernel would have to rebuild it from the un-NATed reply.
    const oSport = v.u16[(r + R_ORIG_SPORT) >> 1];
    const oDport = v.u16[(r + R_ORIG_DPORT) >> 1];
    const rSport = v.u16[(r + R_REPLY_SPORT) >> 1];
    const rDport = v.u16[(r + R_REPLY_DPORT) >> 1];
    // A reply tuple that differs without the NAT status bits was given
    // explicitly (conntrack -I -r/-q): it is sent as it is, not as NAT.
    const status = v.u32[(r + R_STATUS) >> 2];
    const snat =
      (status & Status.SrcNat) !== 0 &&
      (!sameBytes(u8, r + R_REPLY_DST, r + R_ORIG_SRC, alen) || (ports && rDport !== oSport) || (icmp && rSport !== oSport));
    const dnat = (status & Status.DstNat) !== 0 && (!sameBytes(u8, r + R_REPLY_SRC, r + R_ORIG_DST, alen) || (ports && rSport !== oDport));

    const start = off;
    let p = beginMessage(buf, off, ctMsgType(CtMsg.New), flags, seq, family);
    p = this.tuple(buf, p, Cta.TupleOrig, family, l4, u8, r + R_ORIG_SRC, r + R_ORIG_DST, oSport, oDport, zoneDir & ZoneDir.Orig ? zone : -1);
    p = this.tuple(
      buf,
      p,
      Cta.TupleReply,
      family,
      l4,
      u8,
      dnat ? r + R_ORIG_DST : r + R_REPLY_SRC,
      snat ? r + R_ORIG_SRC : r + R_REPLY_DST,
      (dnat && ports) || (snat && icmp) ? (icmp ? oSport : oDport) : rSport,
      snat && ports ? oSport : rDport,
      zoneDir & ZoneDir.Reply ? zone : -1,
    );
    if (rflags & RecordFlag.HasZone) p = putBe16(buf, p, Cta.Zone, zone);
    p = putBe32(buf, p, Cta.Status, ((v.u32[(r + R_STATUS) >> 2] & SETTABLE_STATUS) | Status.Confirmed) >>> 0);
    const timeout = rflags & RecordFlag.HasTimeout ? Math.max(1, v.u32[(r + R_TIMEOUT) >> 2]) : FALLBACK_TIMEOUT;
    p = putBe32(buf, p, Cta.Timeout, timeout);
    const mark = v.u32[(r + R_MARK) >> 2];
    if (rflags & RecordFlag.HasMark || mark !== 0) p = putBe32(buf, p, Cta.Mark, mark);
    if (rflags & RecordFlag.HasProtoInfo) p = this.protoInfo(buf, p, v, l4);
    if (dnat) p = this.nat(buf, p, Cta.NatDst, family, l4, u8, r + R_REPLY_SRC, rSport);
    if (snat) p = this.nat(buf, p, Cta.NatSrc, family, l4, u8, r + R_REPLY_DST, icmp ? rSport : rDport);
    const x = v.ext;
    const present = v.extPresent;
    if (present !== 0) {
      const u32 = v.u32;
      if (present & ExtFlag.Helper) {
        let n = 0;
        while (n < 16 && u8[x + X_HELPER + n] !== 0) n++;
        const h = p;
        p = nest(buf, p, Cta.Help);
        hdr(buf, p, 4 + n + 1, CtaHelp.Name);
        for (let i = 0; i < n; i++) buf[p + 4 + i] = u8[x + X_HELPER + i];
        buf[p + 4 + n] = 0;
        const e = p + 4 + n + 1;
        const aligned = (e + 3) & ~3;
        for (let i = e; i < aligned; i++) buf[i] = 0;
        p = endNest(buf, h, aligned);
      }
      if (present & ExtFlag.SeqAdjOrig) p = this.seqAdj(buf, p, Cta.SeqAdjOrig, u32, (x + X_SEQADJ_ORIG) >> 2);
      if (present & ExtFlag.SeqAdjReply) p = this.seqAdj(buf, p, Cta.SeqAdjReply, u32, (x + X_SEQADJ_REPLY) >> 2);
      if (present & ExtFlag.Synproxy) {
        const h = p;
        const w = (x + X_SYNPROXY) >> 2;
        p = nest(buf, p, Cta.Synproxy);
        p = putBe32(buf, p, CtaSynproxy.Isn, u32[w]);
        p = putBe32(buf, p, CtaSynproxy.Its, u32[w + 1]);
        p = putBe32(buf, p, CtaSynproxy.Tsoff, u32[w + 2]);
        p = endNest(buf, h, p);
      }
      if (present & ExtFlag.Master) {
        p = this.tuple(
          buf,
          p,
          Cta.TupleMaster,
          family,
          u8[x + X_MASTER_L4PROTO],
          u8,
          x + X_MASTER_SRC,
          x + X_MASTER_DST,
          v.u16[(x + X_MASTER_SPORT) >> 1],
          v.u16[(x + X_MASTER_DPORT) >> 1],
          -1,
        );
      }
      if (present & ExtFlag.Labels) p = this.labels(buf, p, u8, x + X_LABELS);
    }
    return finishMessage(buf, start, p);
  }

  /**
   * Write a CT_NEW update (no NLM_F_CREATE) that sets only the labels of the
   * existing entry. Sent right after a create whose entry has labels: on
   * create the kernel ignores a labels failure, on update it answers ENOSPC
   * when the namespace has no label storage (no rule uses ct labels), so the
   * loss becomes a reported failure instead of a silent one.
   */
  encodeLabels(v: FlowView, buf: Buffer, off: number, seq: number, flags: number): number {
    const start = off;
    let p = this.key(buf, off, v, CtMsg.New, seq, flags);
    p = this.labels(buf, p, v.u8, v.ext + X_LABELS);
    return finishMessage(buf, start, p);
  }

  /** Write a CT_DELETE for the entry with the view's original tuple and zone. */
  encodeDelete(v: FlowView, buf: Buffer, off: number, seq: number, flags: number): number {
    const start = off;
    const p = this.key(buf, off, v, CtMsg.Delete, seq, flags);
    return finishMessage(buf, start, p);
  }

  /** Header, original tuple and zone: what identifies an entry in the kernel. */
  private key(buf: Buffer, off: number, v: FlowView, kind: CtMsg, seq: number, flags: number): number {
    const u8 = v.u8;
    const r = v.rec;
    const family = u8[r + R_FAMILY];
    const zone = v.u16[(r + R_ZONE) >> 1];
    let p = beginMessage(buf, off, ctMsgType(kind), flags, seq, family);
    p = this.tuple(
      buf,
      p,
      Cta.TupleOrig,
      family,
      u8[r + R_L4PROTO],
      u8,
      r + R_ORIG_SRC,
      r + R_ORIG_DST,
      v.u16[(r + R_ORIG_SPORT) >> 1],
      v.u16[(r + R_ORIG_DPORT) >> 1],
      u8[r + R_ZONE_DIR] & ZoneDir.Orig ? zone : -1,
    );
    if (u8[r + R_FLAGS] & RecordFlag.HasZone) p = putBe16(buf, p, Cta.Zone, zone);
    return p;
  }

  /** One tuple nest; `zone` >= 0 adds CTA_TUPLE_ZONE. */
  private tuple(
    buf: Buffer,
    off: number,
    type: number,
    family: number,
    l4: number,
    u8: Uint8Array,
    srcAt: number,
    dstAt: number,
    sport: number,
    dport: number,
    zone: number,
  ): number {
    const v4 = family === AF_INET;
    const t = off;
    let p = nest(buf, off, type);
    const ip = p;
    p = nest(buf, p, CtaTuple.Ip);
    p = putBytes(buf, p, v4 ? CtaIp.V4Src : CtaIp.V6Src, u8, srcAt, v4 ? 4 : 16);
    p = putBytes(buf, p, v4 ? CtaIp.V4Dst : CtaIp.V6Dst, u8, dstAt, v4 ? 4 : 16);
    p = endNest(buf, ip, p);
    const pr = p;
    p = nest(buf, p, CtaTuple.Proto);
    p = putU8(buf, p, CtaProto.Num, l4);
    if (hasPorts(l4)) {
      p = putBe16(buf, p, CtaProto.SrcPort, sport);
      p = putBe16(buf, p, CtaProto.DstPort, dport);
    } else if (l4 === L4.ICMP) {
      p = putBe16(buf, p, CtaProto.IcmpId, sport);
      p = putU8(buf, p, CtaProto.IcmpType, dport >>> 8);
      p = putU8(buf, p, CtaProto.IcmpCode, dport & 0xff);
    } else if (l4 === L4.ICMPV6) {
      p = putBe16(buf, p, CtaProto.Icmpv6Id, sport);
      p = putU8(buf, p, CtaProto.Icmpv6Type, dport >>> 8);
      p = putU8(buf, p, CtaProto.Icmpv6Code, dport & 0xff);
    }
    p = endNest(buf, pr, p);
    if (zone >= 0) p = putBe16(buf, p, CtaTuple.Zone, zone);
    return endNest(buf, t, p);
  }

  private protoInfo(buf: Buffer, off: number, v: FlowView, l4: number): number {
    const u8 = v.u8;
    const r = v.rec;
    if (l4 === L4.TCP) {
      const state = u8[r + R_PROTO_STATE];
      if (state >= TCP_STATE_MAX) return off;
      const h = off;
      let p = nest(buf, off, Cta.ProtoInfo);
      const t = p;
      p = nest(buf, p, CtaProtoInfo.Tcp);
      p = putU8(buf, p, CtaProtoInfoTcp.State, state);
      p = putU8(buf, p, CtaProtoInfoTcp.WscaleOriginal, u8[r + R_TCP_WSCALE_ORIG]);
      p = putU8(buf, p, CtaProtoInfoTcp.WscaleReply, u8[r + R_TCP_WSCALE_REPLY]);
      for (let dir = 0; dir < 2; dir++) {
        const f = u8[r + R_PROTO_A + dir] | TcpFlag.BeLiberal;
        hdr(buf, p, 6, dir === 0 ? CtaProtoInfoTcp.FlagsOriginal : CtaProtoInfoTcp.FlagsReply);
        buf[p + 4] = f; // flags
        buf[p + 5] = f; // mask: exactly these bits
        buf[p + 6] = 0;
        buf[p + 7] = 0;
        p += 8;
      }
      p = endNest(buf, t, p);
      return endNest(buf, h, p);
    }
    if (l4 === L4.SCTP) {
      const h = off;
      let p = nest(buf, off, Cta.ProtoInfo);
      const t = p;
      p = nest(buf, p, CtaProtoInfo.Sctp);
      p = putU8(buf, p, CtaProtoInfoSctp.State, u8[r + R_PROTO_STATE]);
      p = putBe32(buf, p, CtaProtoInfoSctp.VtagOriginal, v.u32[(r + R_PROTO_A) >> 2]);
      p = putBe32(buf, p, CtaProtoInfoSctp.VtagReply, v.u32[(r + R_PROTO_B) >> 2]);
      p = endNest(buf, t, p);
      return endNest(buf, h, p);
    }
    // DCCP needs role and handshake sequence, which the record does not keep:
    // its state is shown but not sent (the kernel then starts it fresh).
    return off;
  }

  /** An exact NAT range: one address, and for port protocols (and ICMP ids) one port. */
  private nat(buf: Buffer, off: number, type: number, family: number, l4: number, u8: Uint8Array, addrAt: number, port: number): number {
    const v4 = family === AF_INET;
    const h = off;
    let p = nest(buf, off, type);
    p = putBytes(buf, p, v4 ? CtaNat.V4MinIp : CtaNat.V6MinIp, u8, addrAt, v4 ? 4 : 16);
    p = putBytes(buf, p, v4 ? CtaNat.V4MaxIp : CtaNat.V6MaxIp, u8, addrAt, v4 ? 4 : 16);
    if (hasPorts(l4) || isIcmp(l4)) {
      const n = p;
      p = nest(buf, p, CtaNat.Proto);
      p = putBe16(buf, p, CtaProtoNat.PortMin, port);
      p = putBe16(buf, p, CtaProtoNat.PortMax, port);
      p = endNest(buf, n, p);
    }
    return endNest(buf, h, p);
  }

  private seqAdj(buf: Buffer, off: number, type: number, u32: Uint32Array, w: number): number {
    const h = off;
    let p = nest(buf, off, type);
    p = putBe32(buf, p, CtaSeqAdj.CorrectionPos, u32[w]);
    p = putBe32(buf, p, CtaSeqAdj.OffsetBefore, u32[w + 1]);
    p = putBe32(buf, p, CtaSeqAdj.OffsetAfter, u32[w + 2]);
    return endNest(buf, h, p);
  }

  private labels(buf: Buffer, off: number, u8: Uint8Array, at: number): number {
    let p = putBytes(buf, off, Cta.Labels, u8, at, 16);
    hdr(buf, p, 20, Cta.LabelsMask);
    buf.fill(0xff, p + 4, p + 20);
    p += 20;
    return p;
  }
}

/** True when the entry has labels that need the follow-up check (encodeLabels). */
export function hasLabels(v: FlowView): boolean {
  if ((v.extPresent & ExtFlag.Labels) === 0) return false;
  const u8 = v.u8;
  const at = v.ext + X_LABELS;
  for (let i = 0; i < 16; i++) if (u8[at + i] !== 0) return true;
  return false;
}

