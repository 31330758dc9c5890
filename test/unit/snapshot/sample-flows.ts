import { parseAddress } from '../../../plugin/address';
import { ConnectionTable, Scan } from '../../../plugin/connection-table';
import {
  AF_INET,
  AF_INET6,
  EXT_BYTES,
  ExtFlag,
  L4,
  RECORD_BYTES,
  R_EXT,
  R_ID,
  R_L4PROTO,
  R_FAMILY,
  R_MARK,
  R_NEXT,
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
  R_SEQ,
  R_STATUS,
  R_TCP_WSCALE_ORIG,
  R_TCP_WSCALE_REPLY,
  R_TIMEOUT,
  R_VERSION_HI,
  R_VERSION_LO,
  R_ZONE,
  R_ZONE_DIR,
  RecordFlag,
  Status,
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
} from '../../../plugin/flow';
import { FlowRecord, FlowView } from '../../../plugin/flow-view';
import { encodeTableToBuffer } from '../../../plugin/snapshot-encoder';

/** Tuple as tests write it: src, dst, sport (or id / key), dport (or type<<8|code / key). */
type Tuple = [string, string, number, number];

export interface FlowSpec {
  l4: number;
  orig: Tuple;
  /** Default: orig mirrored. */
  reply?: Tuple;
  state?: number;
  status?: number;
  timeout?: number;
  mark?: number;
  zone?: number;
  zoneDir?: number;
  id?: number;
  tcp?: [number, number, number, number];
  sctp?: [number, number];
  ext?: (r: FlowRecord) => void;
}

function putAddress(r: FlowRecord, at: number, text: string): number {
  const a = parseAddress(text);
  for (let i = 0; i < 16; i++) r.setU8(at + i, i < a.bytes.length ? a.bytes[i] : 0);
  return a.family;
}

/** A record built with FlowRecord's setters, the way an adapter would. */
export function flow(s: FlowSpec): FlowRecord {
  const r = new FlowRecord().clear();
  const reply: Tuple = s.reply ?? [s.orig[1], s.orig[0], s.orig[3], s.orig[2]];
  const fam = putAddress(r, R_ORIG_SRC, s.orig[0]);
  putAddress(r, R_ORIG_DST, s.orig[1]);
  putAddress(r, R_REPLY_SRC, reply[0]);
  putAddress(r, R_REPLY_DST, reply[1]);
  r.setU8(R_FAMILY, fam);
  r.setU8(R_L4PROTO, s.l4);
  r.setU16(R_ORIG_SPORT, s.orig[2]);
  r.setU16(R_ORIG_DPORT, s.orig[3]);
  r.setU16(R_REPLY_SPORT, reply[2]);
  r.setU16(R_REPLY_DPORT, reply[3]);
  r.setU32(R_STATUS, s.status ?? Status.Confirmed | Status.SeenReply | Status.Assured);
  if (s.timeout !== undefined) {
    r.setFlag(RecordFlag.HasTimeout);
    r.setU32(R_TIMEOUT, s.timeout);
  }
  if (s.mark !== undefined) {
    r.setFlag(RecordFlag.HasMark);
    r.setU32(R_MARK, s.mark);
  }
  if (s.zone !== undefined) {
    r.setFlag(RecordFlag.HasZone);
    r.setU16(R_ZONE, s.zone);
  }
  if (s.zoneDir !== undefined) r.setU8(R_ZONE_DIR, s.zoneDir);
  if (s.id !== undefined) {
    r.setFlag(RecordFlag.HasId);
    r.setU32(R_ID, s.id);
  }
  if (s.state !== undefined) {
    r.setFlag(RecordFlag.HasProtoInfo);
    r.setU8(R_PROTO_STATE, s.state);
  }
  if (s.tcp) {
    r.setU8(R_TCP_WSCALE_ORIG, s.tcp[0]);
    r.setU8(R_TCP_WSCALE_REPLY, s.tcp[1]);
    r.setU8(R_PROTO_A, s.tcp[2]);
    r.setU8(R_PROTO_A + 1, s.tcp[3]);
  }
  if (s.sctp) {
    r.setU32(R_PROTO_A, s.sctp[0]);
    r.setU32(R_PROTO_B, s.sctp[1]);
  }
  s.ext?.(r);
  return r;
}

function helper(r: FlowRecord, name: string): void {
  for (let i = 0; i < name.length; i++) r.setExtU8(X_HELPER + i, name.charCodeAt(i));
  r.addExt(ExtFlag.Helper);
}

/** One entry of every kind the codec must carry, named. */
export function sampleFlows(): Array<[string, FlowRecord]> {
  return [
    ['tcp ipv4 established', flow({ l4: L4.TCP, orig: ['192.0.2.1', '198.51.100.2', 40000, 22], state: 3, timeout: 431999, mark: 0, zone: 0, id: 123, tcp: [7, 7, 0x23, 0x23] })],
    ['tcp ipv6', flow({ l4: L4.TCP, orig: ['2001:db8::1', '2001:db8:1::2', 50000, 443], state: 9, timeout: 120, tcp: [14, 0, 0x01, 0x00] })],
    ['udp ipv4', flow({ l4: L4.UDP, orig: ['192.0.2.10', '203.0.113.53', 5353, 53], timeout: 30, status: Status.Confirmed })],
    ['udplite ipv6', flow({ l4: L4.UDPLITE, orig: ['2001:db8::a', '2001:db8::b', 1000, 2000], timeout: 30 })],
    ['icmp echo', flow({ l4: L4.ICMP, orig: ['192.0.2.1', '198.51.100.7', 1234, (8 << 8) | 0], reply: ['198.51.100.7', '192.0.2.1', 1234, 0], timeout: 29 })],
    ['icmpv6 echo', flow({ l4: L4.ICMPV6, orig: ['2001:db8::1', '2001:db8::7', 99, (128 << 8) | 0], reply: ['2001:db8::7', '2001:db8::1', 99, 129 << 8], timeout: 29 })],
    ['sctp with vtags', flow({ l4: L4.SCTP, orig: ['192.0.2.3', '198.51.100.3', 3868, 3868], state: 4, timeout: 210, sctp: [0xdeadbeef, 0x01020304] })],
    ['gre keys', flow({ l4: L4.GRE, orig: ['192.0.2.4', '198.51.100.4', 0x1234, 0x5678], timeout: 180 })],
    ['unknown proto', flow({ l4: 99, orig: ['192.0.2.5', '198.51.100.5', 0, 0], timeout: 600 })],
    ['dccp', flow({ l4: L4.DCCP, orig: ['192.0.2.6', '198.51.100.6', 5001, 5002], state: 4, timeout: 100 })],
    ['zones + tuple zones', flow({ l4: L4.TCP, orig: ['192.0.2.1', '198.51.100.2', 40000, 22], state: 3, zone: 7, zoneDir: ZoneDir.Orig | ZoneDir.Reply, timeout: 5, tcp: [0, 0, 0, 0] })],
    ['mark', flow({ l4: L4.UDP, orig: ['192.0.2.1', '198.51.100.2', 1, 2], mark: 0xfeedf00d, timeout: 1 })],
    [
      'labels',
      flow({
        l4: L4.TCP,
        orig: ['192.0.2.11', '198.51.100.2', 40001, 22],
        state: 3,
        timeout: 10,
        tcp: [7, 7, 0, 0],
        ext: (r) => {
          r.setExtU8(X_LABELS, 0b00100001);
          r.setExtU8(X_LABELS + 15, 0x80);
          r.addExt(ExtFlag.Labels);
        },
      }),
    ],
    [
      'nat with seqadj and helper',
      flow({
        l4: L4.TCP,
        orig: ['192.0.2.12', '203.0.113.21', 40002, 21],
        reply: ['198.51.100.21', '203.0.113.99', 21, 61000],
        state: 3,
        timeout: 300,
        status: Status.Confirmed | Status.SeenReply | Status.Assured | Status.SrcNat | Status.DstNat | Status.SrcNatDone | Status.DstNatDone | Status.SeqAdjust | Status.Helper,
        tcp: [7, 7, 0, 0],
        ext: (r) => {
          helper(r, 'ftp');
          r.setExtU32(X_SEQADJ_ORIG, 1000);
          r.setExtU32(X_SEQADJ_ORIG + 4, 4);
          r.setExtU32(X_SEQADJ_ORIG + 8, 0xfffffffc);
          r.addExt(ExtFlag.SeqAdjOrig);
          r.setExtU32(X_SEQADJ_REPLY, 2000);
          r.setExtU32(X_SEQADJ_REPLY + 4, 0);
          r.setExtU32(X_SEQADJ_REPLY + 8, 8);
          r.addExt(ExtFlag.SeqAdjReply);
        },
      }),
    ],
    [
      'synproxy',
      flow({
        l4: L4.TCP,
        orig: ['2001:db8::5', '2001:db8::6', 40003, 80],
        state: 3,
        timeout: 7,
        tcp: [0, 0, 0, 0],
        ext: (r) => {
          r.setExtU32(X_SYNPROXY, 111);
          r.setExtU32(X_SYNPROXY + 4, 222);
          r.setExtU32(X_SYNPROXY + 8, 333);
          r.addExt(ExtFlag.Synproxy);
        },
      }),
    ],
    [
      'expected with master',
      flow({
        l4: L4.TCP,
        orig: ['192.0.2.12', '203.0.113.21', 40100, 20],
        state: 2,
        timeout: 60,
        status: Status.Confirmed | Status.Expected,
        tcp: [0, 0, 0, 0],
        ext: (r) => {
          r.setExtU8(X_MASTER_FAMILY, AF_INET);
          r.setExtU8(X_MASTER_L4PROTO, L4.TCP);
          const a = parseAddress('192.0.2.12').bytes;
          const b = parseAddress('203.0.113.21').bytes;
          for (let i = 0; i < 4; i++) {
            r.setExtU8(X_MASTER_SRC + i, a[i]);
            r.setExtU8(X_MASTER_DST + i, b[i]);
          }
          r.setExtU16(X_MASTER_SPORT, 40002);
          r.setExtU16(X_MASTER_DPORT, 21);
          r.addExt(ExtFlag.Master);
          helper(r, 'ftp');
        },
      }),
    ],
    [
      'ipv6 master',
      flow({
        l4: L4.UDP,
        orig: ['2001:db8::9', '2001:db8::10', 5060, 5060],
        timeout: 60,
        ext: (r) => {
          r.setExtU8(X_MASTER_FAMILY, AF_INET6);
          r.setExtU8(X_MASTER_L4PROTO, L4.UDP);
          const a = parseAddress('2001:db8::9').bytes;
          const b = parseAddress('2001:db8::10').bytes;
          for (let i = 0; i < 16; i++) {
            r.setExtU8(X_MASTER_SRC + i, a[i]);
            r.setExtU8(X_MASTER_DST + i, b[i]);
          }
          r.setExtU16(X_MASTER_SPORT, 5060);
          r.setExtU16(X_MASTER_DPORT, 5060);
          r.addExt(ExtFlag.Master);
          helper(r, 'sip');
        },
      }),
    ],
    [
      'counters, timestamp, use, secmark',
      flow({
        l4: L4.TCP,
        orig: ['192.0.2.13', '198.51.100.13', 40004, 443],
        state: 3,
        timeout: 99,
        id: 0xffffffff,
        tcp: [7, 7, 0x23, 0x23],
        ext: (r) => {
          r.setExtU32(X_COUNTERS, 10);
          r.setExtU32(X_COUNTERS + 8, 1500);
          r.setExtU32(X_COUNTERS + 16, 0xffffffff);
          r.setExtU32(X_COUNTERS + 20, 0x7);
          r.setExtU32(X_COUNTERS + 24, 0x12345678);
          r.setExtU32(X_COUNTERS + 28, 0x0fffffff);
          r.addExt(ExtFlag.Counters);
          r.setExtU32(X_TIMESTAMP, 0x89abcdef);
          r.setExtU32(X_TIMESTAMP + 4, 0x18000000);
          r.addExt(ExtFlag.Timestamp);
          r.setExtU32(X_USE, 2);
          r.addExt(ExtFlag.Use);
          r.setExtU32(X_SECMARK, 42);
          r.addExt(ExtFlag.Secmark);
        },
      }),
    ],
  ];
}

/** A table holding the sample flows (fresh, so slots and versions are the same every run). */
export function sampleTable(): ConnectionTable {
  const t = ConnectionTable.create({ capacity: 64 });
  for (const [, r] of sampleFlows()) t.upsert(r);
  return t;
}

/** The sample table after two deletions and one update: a delta with every entry kind. */
export function sampleDeltaTable(): { table: ConnectionTable; from: number } {
  const t = sampleTable();
  const flows = sampleFlows();
  const from = t.version;
  t.remove(flows[1][1]);
  t.remove(flows[4][1]);
  const changed = flows[0][1];
  changed.setU32(R_TIMEOUT, 431000);
  t.upsert(changed);
  return { table: t, from };
}

/**
 * Record and extension of `v` as bytes, without what a table owns (seqlock,
 * version, ext index, chain link): what must survive any codec.
 */
export function entryBytes(v: FlowView): number[] {
  const out: number[] = [];
  for (let i = 0; i < RECORD_BYTES; i++) {
    if (i >= R_SEQ && i < R_SEQ + 4) continue;
    if (i >= R_VERSION_LO && i < R_VERSION_HI + 2) continue;
    if (i >= R_EXT && i < R_NEXT + 4) continue;
    out.push(v.u8[v.rec + i]);
  }
  // Liveness bits are the table's business too.
  const flagsAt = 10 - 4 - 6;
  out[flagsAt] &= ~(RecordFlag.Live | RecordFlag.Tombstone);
  const present = v.extPresent;
  for (let i = 0; i < EXT_BYTES; i++) out.push(present === 0 ? 0 : v.u8[v.ext + i]);
  return out;
}

/** Every entry of a table (live and tombstones) as {key text -> [live, bytes]}. */
export function tableEntries(t: ConnectionTable): Map<string, { live: boolean; bytes: number[] }> {
  const m = new Map<string, { live: boolean; bytes: number[] }>();
  const c = t.cursor().reset(Scan.Delta, 0, t.version);
  while (c.next()) {
    const b = entryBytes(c.view);
    const live = c.view.hasFlag(RecordFlag.Live);
    m.set(keyOf(c.view), { live, bytes: b });
  }
  return m;
}

/** Family, protocol, zone, zone dir and original tuple: an entry's identity. */
export function keyOf(v: FlowView): string {
  const parts: number[] = [v.family, v.l4proto, v.zone, v.zoneDir];
  for (let i = 0; i < 32; i++) parts.push(v.u8[v.rec + R_ORIG_SRC + i]);
  parts.push(v.origSport, v.origDport);
  return parts.join(',');
}

/** The golden snapshot fixture's bytes (test/fixtures/snapshot/v1-snapshot.ctsnap): the sample table, encoded. */
export function snapshotBytes(): Buffer {
  const t = sampleTable();
  return encodeTableToBuffer(t, { scan: Scan.Snapshot, from: 0, to: t.version }).bytes;
}

/** The golden delta fixture's bytes (v1-delta.ctsnap). */
export function deltaBytes(): Buffer {
  const { table, from } = sampleDeltaTable();
  return encodeTableToBuffer(table, { scan: Scan.Delta, from, to: table.version }).bytes;
}
