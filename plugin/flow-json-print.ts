import { formatAddress } from './address';
import {
  AF_INET,
  AF_INET6,
  ExtFlag,
  L4,
  R_ORIG_DPORT,
  R_ORIG_DST,
  R_ORIG_SPORT,
  R_ORIG_SRC,
  R_PROTO_A,
  R_PROTO_B,
  R_REPLY_DPORT,
  R_REPLY_DST,
  R_REPLY_SPORT,
  R_REPLY_SRC,
  R_TCP_WSCALE_ORIG,
  R_TCP_WSCALE_REPLY,
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
  X_SECMARK,
  X_SEQADJ_ORIG,
  X_SEQADJ_REPLY,
  X_SYNPROXY,
  X_TIMESTAMP,
  X_USE,
  ZoneDir,
} from './flow';
import { FlowView } from './flow-view';
import { protoName, STATUS_NAMES, TupleShape, tupleShape, stateNames } from './conntrack-names';

/** An entry as one JSON object (the format: flow-json.ts). */

/** One JSON line (no newline) for the entry `v` points at. */
export function flowToJson(v: FlowView): string {
  return JSON.stringify(flowToObject(v));
}

/** The JSON object of an entry (what flowToJson prints). */
export function flowToObject(v: FlowView): Record<string, unknown> {
  const family = v.family;
  const alen = family === AF_INET ? 4 : 16;
  const l4 = v.l4proto;
  const o: Record<string, unknown> = {};
  o.family = family === AF_INET ? 'ipv4' : family === AF_INET6 ? 'ipv6' : family;
  o.proto = protoName(l4);
  o.protonum = l4;
  const hasInfo = v.hasFlag(RecordFlag.HasProtoInfo);
  if (hasInfo) {
    const names = stateNames(l4);
    const st = v.protoState;
    o.state = names && st < names.length ? names[st] : st;
  }
  if (v.hasFlag(RecordFlag.HasTimeout)) o.timeout = v.timeout;
  const shape = tupleShape(l4);
  const zd = v.zoneDir;
  o.orig = tupleObject(v, R_ORIG_SRC, R_ORIG_DST, R_ORIG_SPORT, R_ORIG_DPORT, alen, shape, (zd & ZoneDir.Orig) !== 0);
  o.reply = tupleObject(v, R_REPLY_SRC, R_REPLY_DST, R_REPLY_SPORT, R_REPLY_DPORT, alen, shape, (zd & ZoneDir.Reply) !== 0);
  const status: string[] = [];
  const st = v.status;
  for (let i = 0; i < 32; i++) if (st & (1 << i)) status.push(i < STATUS_NAMES.length ? STATUS_NAMES[i] : `BIT${i}`);
  o.status = status;
  if (v.hasFlag(RecordFlag.HasMark)) o.mark = v.mark;
  if (v.hasFlag(RecordFlag.HasZone)) o.zone = v.zone;
  if (hasInfo && l4 === L4.TCP) {
    o.tcp = {
      wscale_orig: v.u8At(R_TCP_WSCALE_ORIG),
      wscale_reply: v.u8At(R_TCP_WSCALE_REPLY),
      flags_orig: v.u8At(R_PROTO_A),
      flags_reply: v.u8At(R_PROTO_A + 1),
    };
  }
  if (hasInfo && l4 === L4.SCTP) o.sctp = { vtag_orig: v.u32At(R_PROTO_A), vtag_reply: v.u32At(R_PROTO_B) };
  const px = v.extPresent;
  if (px & ExtFlag.Labels) {
    const labels: number[] = [];
    for (let i = 0; i < 128; i++) if (v.extU8(X_LABELS + (i >> 3)) & (1 << (i & 7))) labels.push(i);
    o.labels = labels;
  }
  if (px & ExtFlag.Helper) {
    let name = '';
    for (let i = 0; i < 16; i++) {
      const c = v.extU8(X_HELPER + i);
      if (c === 0) break;
      name += String.fromCharCode(c);
    }
    o.helper = name;
  }
  if (px & (ExtFlag.SeqAdjOrig | ExtFlag.SeqAdjReply)) {
    const sa: Record<string, unknown> = {};
    if (px & ExtFlag.SeqAdjOrig) sa.orig = seqadjObject(v, X_SEQADJ_ORIG);
    if (px & ExtFlag.SeqAdjReply) sa.reply = seqadjObject(v, X_SEQADJ_REPLY);
    o.seqadj = sa;
  }
  if (px & ExtFlag.Synproxy) o.synproxy = { isn: v.extU32(X_SYNPROXY), its: v.extU32(X_SYNPROXY + 4), tsoff: v.extU32(X_SYNPROXY + 8) };
  if (px & ExtFlag.Master) {
    const mf = v.extU8(X_MASTER_FAMILY);
    const ml4 = v.extU8(X_MASTER_L4PROTO);
    const mlen = mf === AF_INET ? 4 : 16;
    o.master = {
      family: mf === AF_INET ? 'ipv4' : mf === AF_INET6 ? 'ipv6' : mf,
      proto: protoName(ml4),
      protonum: ml4,
      src: formatAddress(v.u8, v.ext + X_MASTER_SRC, mlen),
      dst: formatAddress(v.u8, v.ext + X_MASTER_DST, mlen),
      sport: v.extU16(X_MASTER_SPORT),
      dport: v.extU16(X_MASTER_DPORT),
    };
  }
  if (v.hasFlag(RecordFlag.HasId)) o.id = v.id;
  if (px & ExtFlag.Use) o.use = v.extU32(X_USE);
  if (px & ExtFlag.Counters) {
    o.counters = {
      orig: { packets: u64(v, X_COUNTERS), bytes: u64(v, X_COUNTERS + 8) },
      reply: { packets: u64(v, X_COUNTERS + 16), bytes: u64(v, X_COUNTERS + 24) },
    };
  }
  if (px & ExtFlag.Timestamp) o.timestamp = { start: u64(v, X_TIMESTAMP), stop: u64(v, X_TIMESTAMP + 8) };
  if (px & ExtFlag.Secmark) o.secmark = v.extU32(X_SECMARK);
  return o;
}

function tupleObject(
  v: FlowView,
  src: number,
  dst: number,
  sport: number,
  dport: number,
  alen: number,
  shape: TupleShape,
  zone: boolean,
): Record<string, unknown> {
  const t: Record<string, unknown> = {
    src: formatAddress(v.u8, v.rec + src, alen),
    dst: formatAddress(v.u8, v.rec + dst, alen),
  };
  const a = v.u16At(sport);
  const b = v.u16At(dport);
  switch (shape) {
    case TupleShape.Ports:
      t.sport = a;
      t.dport = b;
      break;
    case TupleShape.Gre:
      t.srckey = a;
      t.dstkey = b;
      break;
    case TupleShape.Icmp:
      t.type = b >> 8;
      t.code = b & 0xff;
      t.id = a;
      break;
    case TupleShape.Other:
      if (a !== 0) t.sport = a;
      if (b !== 0) t.dport = b;
      break;
  }
  if (zone) t.zone = v.zone;
  return t;
}

function seqadjObject(v: FlowView, off: number): Record<string, number> {
  return { correction_pos: v.extU32(off), offset_before: v.extU32(off + 4), offset_after: v.extU32(off + 8) };
}

function u64(v: FlowView, off: number): number | string {
  const lo = v.extU32(off);
  const hi = v.extU32(off + 4);
  const n = hi * 0x1_0000_0000 + lo;
  return n <= Number.MAX_SAFE_INTEGER ? n : ((BigInt(hi) << 32n) | BigInt(lo)).toString();
}
