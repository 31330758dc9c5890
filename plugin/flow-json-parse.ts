import { AddressError, parseAddress } from './address';
import { FlowJsonError } from './codec-error';
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
  R_FLAGS,
} from './flow';
import { FlowRecord } from './flow-view';
import { PROTO_NAMES, PROTO_NUMBERS, protoName, STATUS_NAMES, TupleShape, tupleShape, stateNames } from './conntrack-names';

/** One JSON line back into a record, every field checked (the format: flow-json.ts). */

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
