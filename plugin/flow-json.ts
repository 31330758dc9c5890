import { AddressError, parseAddress, formatAddress } from './address';
import { FlowJsonError } from './codec-error';
import { ConnectionTable, Scan, TableFullError } from './connection-table';
import {
  AF_INET,
  AF_INET6,
  ExtFlag,
  HELPER_NAME_MAX,
  L4,
  RECORD_BYTES,
  R_FAMILY,
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
  isIcmp,
  R_FLAGS,
} from './flow';
import { FlowRecord, FlowView } from './flow-view';
import { DecodeLimits, DecodedSnapshot } from './snapshot-decoder';
import { SnapshotKind } from './snapshot-format';

/*
 * JSON lines: one conntrack entry per line, for people (and scripts), and
 * loadable back. Field names follow conntrack(8)'s output. A line looks like
 *
 * {"family":"ipv4","proto":"tcp","protonum":6,"state":"ESTABLISHED","timeout":431999,
 *  "orig":{"src":"192.0.2.1","dst":"198.51.100.2","sport":40000,"dport":22},
 *  "reply":{"src":"198.51.100.2","dst":"192.0.2.1","sport":22,"dport":40000},
 *  "status":["SEEN_REPLY","ASSURED","CONFIRMED"],"mark":0,"zone":0,
 *  "tcp":{"wscale_orig":7,"wscale_reply":7,"flags_orig":35,"flags_reply":35},"id":123}
 *
 * Fields appear only when the record has them (timeout, mark, zone, id each
 * have a presence flag; extension parts their present bit):
 *   family        "ipv4" | "ipv6"
 *   proto         tcp udp udplite icmp icmpv6 sctp gre dccp, else "unknown"
 *   protonum      IP protocol number (always printed; alone it is enough on load)
 *   state         protocol state name (TCP, SCTP, DCCP) or its number
 *   timeout, mark, zone, id    u32 (zone u16)
 *   orig, reply   tuples: src, dst, then by protocol
 *                   ports (tcp udp udplite sctp dccp): sport, dport
 *                   gre: srckey, dstkey
 *                   icmp, icmpv6: type, code, id
 *                   other: sport, dport only when non-zero
 *                 and "zone" when that tuple carried CTA_TUPLE_ZONE (the
 *                 record has one zone value, so both must agree)
 *   status        IPS_* names; a bit without a name as "BIT<n>"
 *   tcp           wscale_orig, wscale_reply, flags_orig, flags_reply (with state)
 *   sctp          vtag_orig, vtag_reply (with state)
 *   labels        set label bits, ascending (0..127)
 *   helper        helper name
 *   seqadj        {"orig":{correction_pos,offset_before,offset_after},"reply":{...}}
 *   synproxy      {isn, its, tsoff}
 *   master        {family, proto, protonum, src, dst, sport, dport}
 * Read-only (the kernel's own; printed, parsed into the record so a line
 * round-trips, never sent to the kernel): id, use, counters
 * {"orig":{packets,bytes},"reply":{...}}, timestamp {start, stop} (ns),
 * secmark. 64-bit values are JSON numbers up to 2^53 - 1, decimal strings
 * above. The table-owned version is not part of a line.
 */

/** TCP_CONNTRACK_* names, in the kernel's order. */
export const TCP_STATES = ['NONE', 'SYN_SENT', 'SYN_RECV', 'ESTABLISHED', 'FIN_WAIT', 'CLOSE_WAIT', 'LAST_ACK', 'TIME_WAIT', 'CLOSE', 'SYN_SENT2'];
/** The kernel's number of TCP_CONNTRACK_ESTABLISHED (3). */
export const TCP_ESTABLISHED = TCP_STATES.indexOf('ESTABLISHED');
/** SCTP_CONNTRACK_* names, in the kernel's order (uapi nf_conntrack_sctp.h). */
export const SCTP_STATES = [
  'NONE',
  'CLOSED',
  'COOKIE_WAIT',
  'COOKIE_ECHOED',
  'ESTABLISHED',
  'SHUTDOWN_SENT',
  'SHUTDOWN_RECD',
  'SHUTDOWN_ACK_SENT',
  'HEARTBEAT_SENT',
  'HEARTBEAT_ACKED',
];
/** CT_DCCP_* names, in the kernel's order. */
export const DCCP_STATES = ['NONE', 'REQUEST', 'RESPOND', 'PARTOPEN', 'OPEN', 'CLOSEREQ', 'CLOSING', 'TIMEWAIT', 'IGNORE', 'INVALID'];
/** IPS_* status bit names, bit 0 first, as conntrack prints them. */
export const STATUS_NAMES = [
  'EXPECTED',
  'SEEN_REPLY',
  'ASSURED',
  'CONFIRMED',
  'SRC_NAT',
  'DST_NAT',
  'SEQ_ADJUST',
  'SRC_NAT_DONE',
  'DST_NAT_DONE',
  'DYING',
  'FIXED_TIMEOUT',
  'TEMPLATE',
  'NAT_CLASH',
  'HELPER',
  'OFFLOAD',
  'HW_OFFLOAD',
];
/** Protocol names conntrack prints, by number. */
export const PROTO_NAMES: ReadonlyMap<number, string> = new Map([
  [L4.TCP, 'tcp'],
  [L4.UDP, 'udp'],
  [L4.UDPLITE, 'udplite'],
  [L4.ICMP, 'icmp'],
  [L4.ICMPV6, 'icmpv6'],
  [L4.SCTP, 'sctp'],
  [L4.GRE, 'gre'],
  [L4.DCCP, 'dccp'],
]);
const PROTO_NUMBERS = new Map([...PROTO_NAMES].map(([n, s]) => [s, n]));

/** Name of a protocol number: conntrack's, or "unknown". */
export function protoName(l4proto: number): string {
  return PROTO_NAMES.get(l4proto) ?? 'unknown';
}

/** State names of a protocol, or null when it has no named states. */
export function stateNames(l4proto: number): readonly string[] | null {
  if (l4proto === L4.TCP) return TCP_STATES;
  if (l4proto === L4.SCTP) return SCTP_STATES;
  if (l4proto === L4.DCCP) return DCCP_STATES;
  return null;
}

const enum TupleShape {
  Ports,
  Gre,
  Icmp,
  Other,
}

function tupleShape(l4proto: number): TupleShape {
  if (l4proto === L4.GRE) return TupleShape.Gre;
  if (isIcmp(l4proto)) return TupleShape.Icmp;
  if (l4proto === L4.TCP || l4proto === L4.UDP || l4proto === L4.UDPLITE || l4proto === L4.SCTP || l4proto === L4.DCCP)
    return TupleShape.Ports;
  return TupleShape.Other;
}

// ---- record -> JSON -------------------------------------------------------

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

// ---- JSON -> record -------------------------------------------------------

type Obj = Record<string, unknown>;

const TOP_FIELDS = new Set([
  'family',
  'proto',
  'protonum',
  'state',
  'timeout',
  'orig',
  'reply',
  'status',
  'mark',
  'zone',
  'labels',
  'helper',
  'seqadj',
  'synproxy',
  'master',
  'tcp',
  'sctp',
  'id',
  'use',
  'counters',
  'timestamp',
  'secmark',
]);

/** Parses one line; every failure names the line and field. */
class LineParser {
  constructor(
    private readonly lineNo: number,
    private readonly r: FlowRecord,
  ) {}

  fail(field: string, msg: string): never {
    throw new FlowJsonError(this.lineNo, field, msg);
  }

  object(v: unknown, field: string, allowed: readonly string[]): Obj {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) this.fail(field, `must be an object, not ${show(v)}`);
    const o = v as Obj;
    for (const k of Object.keys(o)) if (!allowed.includes(k)) this.fail(join(field, k), 'is not a known field here');
    return o;
  }

  uint(v: unknown, field: string, max: number): number {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > max)
      this.fail(field, `must be an integer from 0 to ${max}, not ${show(v)}`);
    return v;
  }

  u64(v: unknown, field: string): [number, number] {
    let big: bigint;
    if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) big = BigInt(v);
    else if (typeof v === 'string' && /^[0-9]{1,20}$/.test(v)) big = BigInt(v);
    else this.fail(field, `must be an unsigned 64-bit integer (a number, or a decimal string), not ${show(v)}`);
    if (big > 0xffffffffffffffffn) this.fail(field, `is larger than 64 bits: ${show(v)}`);
    return [Number(big & 0xffffffffn), Number(big >> 32n)];
  }

  required(o: Obj, key: string, field: string): unknown {
    if (!(key in o)) this.fail(join(field, key), 'is missing');
    return o[key];
  }

  address(v: unknown, field: string, family: number, at: number, inExt: boolean): void {
    if (typeof v !== 'string') this.fail(field, `must be an IP address string, not ${show(v)}`);
    let a;
    try {
      a = parseAddress(v);
    } catch (err) {
      if (err instanceof AddressError) this.fail(field, `is not an IP address: ${JSON.stringify(v)}`);
      throw err;
    }
    if (a.family !== family)
      this.fail(field, `is an ${a.family === AF_INET ? 'IPv4' : 'IPv6'} address but family is ${family === AF_INET ? 'ipv4' : 'ipv6'}: ${JSON.stringify(v)}`);
    const base = inExt ? RECORD_BYTES + at : at;
    for (let i = 0; i < 16; i++) this.r.u8[base + i] = i < a.bytes.length ? a.bytes[i] : 0;
  }

  family(v: unknown, field: string): number {
    if (v === 'ipv4') return AF_INET;
    if (v === 'ipv6') return AF_INET6;
    this.fail(field, `must be "ipv4" or "ipv6", not ${show(v)}`);
  }

  /** proto / protonum pair (either alone is enough; together they must agree). */
  proto(o: Obj, field: string): number {
    const name = o.proto;
    const num = o.protonum;
    let byName: number | undefined;
    if (name !== undefined) {
      if (typeof name !== 'string') this.fail(join(field, 'proto'), `must be a protocol name, not ${show(name)}`);
      if (name !== 'unknown') {
        byName = PROTO_NUMBERS.get(name);
        if (byName === undefined) this.fail(join(field, 'proto'), `is not a known protocol: ${JSON.stringify(name)} (use protonum)`);
      }
    }
    if (num !== undefined) {
      const n = this.uint(num, join(field, 'protonum'), 255);
      if (byName !== undefined && byName !== n) this.fail(join(field, 'protonum'), `is ${n} but proto ${JSON.stringify(name)} is ${byName}`);
      if (name === 'unknown' && PROTO_NAMES.has(n)) this.fail(join(field, 'proto'), `is "unknown" but protonum ${n} is ${protoName(n)}`);
      return n;
    }
    if (byName === undefined) this.fail(join(field, 'protonum'), 'is missing (needed when proto is absent or "unknown")');
    return byName;
  }
}

const TUPLE_FIELDS: Record<TupleShape, readonly string[]> = {
  [TupleShape.Ports]: ['src', 'dst', 'sport', 'dport', 'zone'],
  [TupleShape.Gre]: ['src', 'dst', 'srckey', 'dstkey', 'zone'],
  [TupleShape.Icmp]: ['src', 'dst', 'type', 'code', 'id', 'zone'],
  [TupleShape.Other]: ['src', 'dst', 'sport', 'dport', 'zone'],
};

/**
 * Parse one JSON line into `into` (cleared first). Throws FlowJsonError
 * naming the line and field. Returns what the line is: always a live entry
 * (JSON lines carry no deletions).
 */
export function parseFlowJson(line: string, lineNo: number, into: FlowRecord): 'live' {
  let raw: unknown;
  try {
    raw = JSON.parse(line);
  } catch (err) {
    throw new FlowJsonError(lineNo, '', `is not valid JSON (${err instanceof Error ? err.message : String(err)})`);
  }
  const p: LineParser = new LineParser(lineNo, into);
  const r = into.clear();
  const o = p.object(raw, '', [...TOP_FIELDS]);
  const family = p.family(p.required(o, 'family', ''), 'family');
  const l4 = p.proto(o, '');
  r.setU8(R_FAMILY, family);
  r.setU8(R_L4PROTO, l4);
  let flags = 0;
  const shape = tupleShape(l4);
  let tupleZone = -1;
  let zoneDir = 0;
  const tuple = (name: 'orig' | 'reply', src: number, dst: number, sport: number, dport: number, dirBit: number): void => {
    const t = p.object(p.required(o, name, ''), name, TUPLE_FIELDS[shape]);
    p.address(p.required(t, 'src', name), `${name}.src`, family, src, false);
    p.address(p.required(t, 'dst', name), `${name}.dst`, family, dst, false);
    let a = 0;
    let b = 0;
    switch (shape) {
      case TupleShape.Ports:
        a = p.uint(p.required(t, 'sport', name), `${name}.sport`, 0xffff);
        b = p.uint(p.required(t, 'dport', name), `${name}.dport`, 0xffff);
        break;
      case TupleShape.Gre:
        a = p.uint(p.required(t, 'srckey', name), `${name}.srckey`, 0xffff);
        b = p.uint(p.required(t, 'dstkey', name), `${name}.dstkey`, 0xffff);
        break;
      case TupleShape.Icmp:
        a = p.uint(p.required(t, 'id', name), `${name}.id`, 0xffff);
        b = (p.uint(p.required(t, 'type', name), `${name}.type`, 255) << 8) | p.uint(p.required(t, 'code', name), `${name}.code`, 255);
        break;
      case TupleShape.Other:
        if (t.sport !== undefined) a = p.uint(t.sport, `${name}.sport`, 0xffff);
        if (t.dport !== undefined) b = p.uint(t.dport, `${name}.dport`, 0xffff);
        break;
    }
    r.setU16(sport, a);
    r.setU16(dport, b);
    if (t.zone !== undefined) {
      const z = p.uint(t.zone, `${name}.zone`, 0xffff);
      if (tupleZone >= 0 && z !== tupleZone) p.fail(`${name}.zone`, `is ${z} but orig.zone is ${tupleZone} (an entry has one zone)`);
      tupleZone = z;
      zoneDir |= dirBit;
    }
  };
  tuple('orig', R_ORIG_SRC, R_ORIG_DST, R_ORIG_SPORT, R_ORIG_DPORT, ZoneDir.Orig);
  tuple('reply', R_REPLY_SRC, R_REPLY_DST, R_REPLY_SPORT, R_REPLY_DPORT, ZoneDir.Reply);
  r.setU8(R_ZONE_DIR, zoneDir);
  if (o.zone !== undefined) {
    const z = p.uint(o.zone, 'zone', 0xffff);
    if (tupleZone >= 0 && z !== tupleZone) p.fail('zone', `is ${z} but the tuples' zone is ${tupleZone} (an entry has one zone)`);
    r.setU16(R_ZONE, z);
    flags |= RecordFlag.HasZone;
  } else if (tupleZone >= 0) r.setU16(R_ZONE, tupleZone);

  if (o.state !== undefined) {
    const names = stateNames(l4);
    let st: number;
    if (typeof o.state === 'string') {
      const name = l4 === L4.TCP && o.state === 'LISTEN' ? 'SYN_SENT2' : o.state;
      st = names ? names.indexOf(name) : -1;
      if (st < 0)
        p.fail('state', names ? `is not a ${protoName(l4)} state: ${JSON.stringify(o.state)} (one of ${names.join(', ')})` : `must be a number for protocol ${l4}, not ${show(o.state)}`);
    } else st = p.uint(o.state, 'state', 255);
    r.setU8(R_PROTO_STATE, st);
    flags |= RecordFlag.HasProtoInfo;
  }
  if (o.tcp !== undefined) {
    if (l4 !== L4.TCP) p.fail('tcp', `is only for tcp entries, this one is ${protoName(l4)}`);
    if (o.state === undefined) p.fail('state', 'is missing (needed with tcp)');
    const t = p.object(o.tcp, 'tcp', ['wscale_orig', 'wscale_reply', 'flags_orig', 'flags_reply']);
    if (t.wscale_orig !== undefined) r.setU8(R_TCP_WSCALE_ORIG, p.uint(t.wscale_orig, 'tcp.wscale_orig', 255));
    if (t.wscale_reply !== undefined) r.setU8(R_TCP_WSCALE_REPLY, p.uint(t.wscale_reply, 'tcp.wscale_reply', 255));
    if (t.flags_orig !== undefined) r.setU8(R_PROTO_A, p.uint(t.flags_orig, 'tcp.flags_orig', 255));
    if (t.flags_reply !== undefined) r.setU8(R_PROTO_A + 1, p.uint(t.flags_reply, 'tcp.flags_reply', 255));
  }
  if (o.sctp !== undefined) {
    if (l4 !== L4.SCTP) p.fail('sctp', `is only for sctp entries, this one is ${protoName(l4)}`);
    if (o.state === undefined) p.fail('state', 'is missing (needed with sctp)');
    const t = p.object(o.sctp, 'sctp', ['vtag_orig', 'vtag_reply']);
    if (t.vtag_orig !== undefined) r.setU32(R_PROTO_A, p.uint(t.vtag_orig, 'sctp.vtag_orig', 0xffffffff));
    if (t.vtag_reply !== undefined) r.setU32(R_PROTO_B, p.uint(t.vtag_reply, 'sctp.vtag_reply', 0xffffffff));
  }
  if (o.timeout !== undefined) {
    r.setU32(R_TIMEOUT, p.uint(o.timeout, 'timeout', 0xffffffff));
    flags |= RecordFlag.HasTimeout;
  }
  if (o.mark !== undefined) {
    r.setU32(R_MARK, p.uint(o.mark, 'mark', 0xffffffff));
    flags |= RecordFlag.HasMark;
  }
  if (o.id !== undefined) {
    r.setU32(R_ID, p.uint(o.id, 'id', 0xffffffff));
    flags |= RecordFlag.HasId;
  }
  if (o.status !== undefined) {
    if (!Array.isArray(o.status)) p.fail('status', `must be an array of status names, not ${show(o.status)}`);
    let st = 0;
    o.status.forEach((name, i) => {
      let bit = typeof name === 'string' ? STATUS_NAMES.indexOf(name) : -1;
      if (bit < 0 && typeof name === 'string') {
        const m = /^BIT([0-9]|[12][0-9]|3[01])$/.exec(name);
        if (m && Number(m[1]) >= STATUS_NAMES.length) bit = Number(m[1]);
      }
      if (bit < 0) p.fail(`status[${i}]`, `is not a status name: ${show(name)}`);
      st |= 1 << bit;
    });
    r.setU32(R_STATUS, st);
  }
  r.setU8(R_FLAGS, flags);

  if (o.labels !== undefined) {
    if (!Array.isArray(o.labels)) p.fail('labels', `must be an array of label bit numbers, not ${show(o.labels)}`);
    o.labels.forEach((n, i) => {
      const bit = p.uint(n, `labels[${i}]`, 127);
      r.setExtU8(X_LABELS + (bit >> 3), r.extU8(X_LABELS + (bit >> 3)) | (1 << (bit & 7)));
    });
    r.addExt(ExtFlag.Labels);
  }
  if (o.helper !== undefined) {
    const h = o.helper;
    if (typeof h !== 'string' || !/^[\x21-\x7e]+$/.test(h) || h.length > HELPER_NAME_MAX)
      p.fail('helper', `must be a helper name of 1 to ${HELPER_NAME_MAX} printable characters, not ${show(h)}`);
    for (let i = 0; i < h.length; i++) r.setExtU8(X_HELPER + i, h.charCodeAt(i));
    r.addExt(ExtFlag.Helper);
  }
  if (o.seqadj !== undefined) {
    const sa = p.object(o.seqadj, 'seqadj', ['orig', 'reply']);
    const dir = (name: 'orig' | 'reply', off: number, part: ExtFlag): void => {
      if (sa[name] === undefined) return;
      const f = `seqadj.${name}`;
      const d = p.object(sa[name], f, ['correction_pos', 'offset_before', 'offset_after']);
      r.setExtU32(off, p.uint(p.required(d, 'correction_pos', f), `${f}.correction_pos`, 0xffffffff));
      r.setExtU32(off + 4, p.uint(p.required(d, 'offset_before', f), `${f}.offset_before`, 0xffffffff));
      r.setExtU32(off + 8, p.uint(p.required(d, 'offset_after', f), `${f}.offset_after`, 0xffffffff));
      r.addExt(part);
    };
    dir('orig', X_SEQADJ_ORIG, ExtFlag.SeqAdjOrig);
    dir('reply', X_SEQADJ_REPLY, ExtFlag.SeqAdjReply);
  }
  if (o.synproxy !== undefined) {
    const s = p.object(o.synproxy, 'synproxy', ['isn', 'its', 'tsoff']);
    r.setExtU32(X_SYNPROXY, p.uint(p.required(s, 'isn', 'synproxy'), 'synproxy.isn', 0xffffffff));
    r.setExtU32(X_SYNPROXY + 4, p.uint(p.required(s, 'its', 'synproxy'), 'synproxy.its', 0xffffffff));
    r.setExtU32(X_SYNPROXY + 8, p.uint(p.required(s, 'tsoff', 'synproxy'), 'synproxy.tsoff', 0xffffffff));
    r.addExt(ExtFlag.Synproxy);
  }
  if (o.master !== undefined) {
    const m = p.object(o.master, 'master', ['family', 'proto', 'protonum', 'src', 'dst', 'sport', 'dport']);
    const mf = p.family(p.required(m, 'family', 'master'), 'master.family');
    const ml4 = p.proto(m, 'master');
    r.setExtU8(X_MASTER_FAMILY, mf);
    r.setExtU8(X_MASTER_L4PROTO, ml4);
    p.address(p.required(m, 'src', 'master'), 'master.src', mf, X_MASTER_SRC, true);
    p.address(p.required(m, 'dst', 'master'), 'master.dst', mf, X_MASTER_DST, true);
    r.setExtU16(X_MASTER_SPORT, m.sport === undefined ? 0 : p.uint(m.sport, 'master.sport', 0xffff));
    r.setExtU16(X_MASTER_DPORT, m.dport === undefined ? 0 : p.uint(m.dport, 'master.dport', 0xffff));
    r.addExt(ExtFlag.Master);
  }
  if (o.use !== undefined) {
    r.setExtU32(X_USE, p.uint(o.use, 'use', 0xffffffff));
    r.addExt(ExtFlag.Use);
  }
  if (o.counters !== undefined) {
    const c = p.object(o.counters, 'counters', ['orig', 'reply']);
    const dir = (name: 'orig' | 'reply', off: number): void => {
      const f = `counters.${name}`;
      const d = p.object(p.required(c, name, 'counters'), f, ['packets', 'bytes']);
      const pk = p.u64(p.required(d, 'packets', f), `${f}.packets`);
      const by = p.u64(p.required(d, 'bytes', f), `${f}.bytes`);
      r.setExtU32(off, pk[0]);
      r.setExtU32(off + 4, pk[1]);
      r.setExtU32(off + 8, by[0]);
      r.setExtU32(off + 12, by[1]);
    };
    dir('orig', X_COUNTERS);
    dir('reply', X_COUNTERS + 16);
    r.addExt(ExtFlag.Counters);
  }
  if (o.timestamp !== undefined) {
    const t = p.object(o.timestamp, 'timestamp', ['start', 'stop']);
    const start = p.u64(p.required(t, 'start', 'timestamp'), 'timestamp.start');
    const stop = p.u64(p.required(t, 'stop', 'timestamp'), 'timestamp.stop');
    r.setExtU32(X_TIMESTAMP, start[0]);
    r.setExtU32(X_TIMESTAMP + 4, start[1]);
    r.setExtU32(X_TIMESTAMP + 8, stop[0]);
    r.setExtU32(X_TIMESTAMP + 12, stop[1]);
    r.addExt(ExtFlag.Timestamp);
  }
  if (o.secmark !== undefined) {
    r.setExtU32(X_SECMARK, p.uint(o.secmark, 'secmark', 0xffffffff));
    r.addExt(ExtFlag.Secmark);
  }
  return 'live';
}

function join(field: string, key: string): string {
  return field ? `${field}.${key}` : key;
}

function show(v: unknown): string {
  if (v === undefined) return 'nothing';
  const s = JSON.stringify(v);
  return s.length > 40 ? `${s.slice(0, 37)}...` : s;
}

// ---- whole inputs ---------------------------------------------------------

/** Longest line accepted: far above any entry, low enough to stop a runaway input. */
export const MAX_JSON_LINE = 64 * 1024;

/** Input for decodeJsonLines: the whole text, or chunks (Buffers, strings), sync or async. */
export type TextInput = string | Uint8Array | Iterable<Uint8Array | string> | AsyncIterable<Uint8Array | string>;

/**
 * Parse and validate every line of a JSON-lines input into a private
 * staging table; any bad line fails the whole input (FlowJsonError naming
 * the line) and nothing is kept. Blank lines are skipped. A key that
 * appears twice: the later line wins.
 */
export async function decodeJsonLines(input: TextInput, limits: DecodeLimits): Promise<DecodedSnapshot> {
  const dec = new JsonLinesDecoder(limits);
  if (typeof input === 'string' || input instanceof Uint8Array) dec.write(input);
  else if (Symbol.asyncIterator in input) for await (const c of input) dec.write(c);
  else for (const c of input) dec.write(c);
  return dec.end();
}

/** Streaming form of decodeJsonLines: write() chunks split anywhere, then end(). */
export class JsonLinesDecoder {
  private readonly text = new TextDecoder('utf-8', { fatal: true });
  private partial = '';
  private lineNo = 0;
  private count = 0;
  private bytes = 0;
  private readonly rec = new FlowRecord();
  private readonly table: ConnectionTable;
  private readonly maxEntries: number;

  constructor(limits: DecodeLimits) {
    this.maxEntries = limits.maxEntries;
    if (limits.staging) {
      limits.staging.clear();
      this.table = limits.staging;
      this.maxEntries = Math.min(this.maxEntries, limits.staging.capacity);
    } else this.table = ConnectionTable.create({ capacity: limits.maxEntries, extCapacity: limits.maxEntries });
  }

  write(chunk: Uint8Array | string): void {
    let s: string;
    if (typeof chunk === 'string') s = chunk;
    else {
      this.bytes += chunk.length;
      try {
        s = this.text.decode(chunk, { stream: true });
      } catch {
        throw new FlowJsonError(this.lineNo + 1, '', 'is not valid UTF-8');
      }
    }
    let start = 0;
    for (;;) {
      const nl = s.indexOf('\n', start);
      if (nl < 0) break;
      const line = this.partial + s.slice(start, nl);
      this.partial = '';
      this.line(line);
      start = nl + 1;
    }
    this.partial += s.slice(start);
    if (this.partial.length > MAX_JSON_LINE) throw new FlowJsonError(this.lineNo + 1, '', `is longer than ${MAX_JSON_LINE} characters`);
  }

  end(): DecodedSnapshot {
    try {
      this.partial += this.text.decode();
    } catch {
      throw new FlowJsonError(this.lineNo + 1, '', 'is not valid UTF-8 (the input ends inside a character)');
    }
    if (this.partial !== '') this.line(this.partial);
    this.partial = '';
    return {
      format: 'json',
      kind: SnapshotKind.Snapshot,
      from: 0,
      to: 0,
      entries: this.count,
      live: this.count,
      tombstones: 0,
      bytes: this.bytes,
      table: this.table,
    };
  }

  private line(raw: string): void {
    this.lineNo++;
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    if (line.length > MAX_JSON_LINE) throw new FlowJsonError(this.lineNo, '', `is longer than ${MAX_JSON_LINE} characters`);
    if (line.trim() === '') return;
    if (this.count >= this.maxEntries) throw new FlowJsonError(this.lineNo, '', `is past the limit of ${this.maxEntries} entries; nothing imported`);
    parseFlowJson(line, this.lineNo, this.rec);
    try {
      this.table.upsert(this.rec);
    } catch (err) {
      if (err instanceof TableFullError) throw new FlowJsonError(this.lineNo, '', `does not fit: ${err.message}`);
      throw err;
    }
    this.count++;
  }
}

/**
 * Write the selected entries of a table as JSON lines (live entries only:
 * a line cannot say "deleted"). `write` gets text pieces of up to ~1 MiB.
 */
export async function encodeJsonLines(
  table: ConnectionTable,
  sel: { scan: Scan; from: number; to: number; filter?: (v: FlowView) => boolean },
  write: (text: string) => void | Promise<void>,
): Promise<number> {
  const cur = table.cursor().reset(sel.scan, sel.from, sel.to);
  const v = cur.view;
  const copy = new FlowRecord();
  let out: string[] = [];
  let size = 0;
  let n = 0;
  while (cur.next()) {
    if ((v.u8[v.rec + R_FLAGS] & RecordFlag.Live) === 0) continue;
    let gone = false;
    for (;;) {
      copy.copyFrom(v);
      if (cur.stable()) break;
      if (!cur.retry()) {
        gone = true;
        break;
      }
    }
    if (gone || (copy.u8[R_FLAGS] & RecordFlag.Live) === 0) continue;
    if (sel.filter && !sel.filter(copy)) continue;
    const line = flowToJson(copy);
    out.push(line);
    size += line.length + 1;
    n++;
    if (size >= 1 << 20) {
      await write(out.join('\n') + '\n');
      out = [];
      size = 0;
    }
  }
  if (out.length) await write(out.join('\n') + '\n');
  return n;
}
