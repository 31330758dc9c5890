/**
 * Codec tests against dump messages recorded from the running kernel
 * (test/fixtures/conntrack/dump-6.18.hex, made by record.sh; the entries as
 * conntrack -L showed them are in dump-6.18-conntrack-L.txt).
 */
import { strict as assert } from 'node:assert';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { NetlinkFormatError } from '../../../adapters/conntrack/attributes';
import { FlowDecoder } from '../../../adapters/conntrack/flow-decoder';
import { FlowEncoder, SETTABLE_STATUS } from '../../../adapters/conntrack/flow-encoder';
import { messageEnd, NlmFlag } from '../../../adapters/conntrack/netlink-message';
import { formatAddress } from '../../../plugin/address';
import { AF_INET, AF_INET6, R_ORIG_SRC, R_REPLY_DST, R_REPLY_SRC, RecordFlag, Status, ZoneDir } from '../../../plugin/flow';
import { FlowRecord } from '../../../plugin/flow-view';

const fixtureDir = join(__dirname, '..', '..', '..', '..', 'test', 'fixtures', 'conntrack');
const messages = readFileSync(join(fixtureDir, 'dump-6.18.hex'), 'utf8')
  .split('\n')
  .filter((l) => l.trim() !== '')
  .map((l) => Buffer.from(l.trim(), 'hex'));

function decodeAll(): FlowRecord[] {
  const d = new FlowDecoder();
  return messages.map((m) => {
    const r = new FlowRecord();
    d.decode(m, 0, m.length, r);
    return r;
  });
}

function find(recs: FlowRecord[], l4: number, sport: number): FlowRecord {
  const r = recs.find((x) => x.l4proto === l4 && x.origSport === sport);
  assert.ok(r, `fixture has no entry proto ${l4} sport ${sport}`);
  return r;
}

describe('flow decoder (fixtures recorded from Linux 6.18)', () => {
  const recs = decodeAll();

  // [what, proto, orig sport, expectations]
  const table: Array<[string, number, number, (r: FlowRecord) => void]> = [
    ['TCP established with mark 7', 6, 1000, (r) => {
      assert.equal(r.family, AF_INET);
      assert.equal(formatAddress(r.u8, R_ORIG_SRC, 4), '192.0.2.1');
      assert.equal(r.origDport, 22);
      assert.equal(r.replySport, 22);
      assert.equal(r.mark, 7);
      assert.equal(r.protoState, 3); // TCP_CONNTRACK_ESTABLISHED
      // One flag at a time: hasFlag(A | B) holds when any one of them is set.
      const flags: Array<[string, number]> = [['HasProtoInfo', RecordFlag.HasProtoInfo], ['HasTimeout', RecordFlag.HasTimeout], ['HasId', RecordFlag.HasId]];
      for (const [name, flag] of flags) assert.ok(r.hasFlag(flag), `${name} is not set`);
      assert.equal(r.status & (Status.Assured | Status.SeenReply | Status.Confirmed), Status.Assured | Status.SeenReply | Status.Confirmed);
      assert.ok(r.timeout > 250 && r.timeout <= 300);
    }],
    ['UDP in zone 5 (CTA_ZONE)', 17, 5353, (r) => {
      assert.equal(r.zone, 5);
      assert.ok(r.hasFlag(RecordFlag.HasZone));
      assert.equal(r.zoneDir, 0);
    }],
    ['UDP-Lite ports', 136, 7000, (r) => assert.equal(r.replySport, 7001)],
    ['ICMP echo: id, type<<8|code in both tuples', 1, 77, (r) => {
      assert.equal(r.origDport, 8 << 8);
      assert.equal(r.replyDport, 0);
      assert.equal(r.replySport, 77);
    }],
    ['ICMPv6 echo', 58, 78, (r) => {
      assert.equal(r.family, AF_INET6);
      assert.equal(r.origDport, 128 << 8);
      assert.equal(r.replyDport, 129 << 8);
    }],
    ['SCTP state and vtags (opaque be32 as the kernel stores them; the CLI sent host order)', 132, 3868, (r) => {
      assert.equal(r.protoState, 4); // SCTP_CONNTRACK_ESTABLISHED
      assert.equal(r.u32At(104), 0xd2040000); // 1234 byte-swapped
      assert.equal(r.u32At(108), 0x2e160000); // 5678 byte-swapped
    }],
    ['GRE keys in the port slots', 47, 17, (r) => assert.equal(r.origDport, 18)],
    ['DNAT to 198.51.100.7:8080 shows in the reply tuple', 6, 4000, (r) => {
      assert.equal(formatAddress(r.u8, R_REPLY_SRC, 4), '198.51.100.7');
      assert.equal(r.replySport, 8080);
      assert.ok(r.status & Status.DstNat);
    }],
    ['SNAT to 203.0.113.1:6000', 17, 5000, (r) => {
      assert.equal(formatAddress(r.u8, R_REPLY_DST, 4), '203.0.113.1');
      assert.equal(r.replyDport, 6000);
      assert.ok(r.status & Status.SrcNat);
    }],
    ['IPv6 TCP zone 9 mark 0x10', 6, 40000, (r) => {
      assert.equal(r.zone, 9);
      assert.equal(r.mark, 0x10);
      assert.equal(formatAddress(r.u8, R_ORIG_SRC, 16), '2001:db8::5');
    }],
  ];
  for (const [what, l4, sport, check] of table) it(`decodes ${what}`, () => check(find(recs, l4, sport)));

  it('keeps no extension for plain entries (zeroed synproxy and CTA_USE are dropped)', () => {
    for (const r of recs) assert.equal(r.extPresent, 0);
  });
});

describe('flow encoder', () => {
  const recs = decodeAll();
  const enc = new FlowEncoder();
  const dec = new FlowDecoder();
  const buf = Buffer.alloc(4096);

  it('encodes a create that decodes back to the same tuples, mark, zone and protocol state', () => {
    for (const r of recs) {
      const end = enc.encodeCreate(r, buf, 0, 42, NlmFlag.Request | NlmFlag.Create | NlmFlag.Excl);
      assert.equal(buf.readUInt32LE(0), end);
      assert.equal(buf.readUInt32LE(8), 42);
      const back = new FlowRecord();
      dec.decode(buf, 0, end, back);
      assert.deepEqual([...back.u8.subarray(16, 48)], [...r.u8.subarray(16, 48)], 'original tuple');
      assert.equal(back.origSport, r.origSport);
      assert.equal(back.origDport, r.origDport);
      assert.equal(back.mark, r.mark);
      assert.equal(back.zone, r.zone);
      assert.equal(back.protoState, r.protoState);
      assert.equal(back.status, (r.status & SETTABLE_STATUS) | Status.Confirmed);
      assert.equal(back.hasFlag(RecordFlag.HasId), false, 'CTA_ID is never sent');
    }
  });

  it('sends the un-NATed reply tuple and an exact CTA_NAT_DST range for DNAT', () => {
    const r = find(recs, 6, 4000);
    const end = enc.encodeCreate(r, buf, 0, 1, NlmFlag.Request);
    const back = new FlowRecord();
    dec.decode(buf, 0, end, back);
    assert.equal(formatAddress(back.u8, R_REPLY_SRC, 4), '203.0.113.9');
    assert.equal(back.replySport, 80);
    // CTA_NAT_DST (13) | NLA_F_NESTED, then CTA_NAT_V4_MINIP 198.51.100.7
    const natDst = Buffer.from('0d80', 'hex');
    const at = buf.subarray(0, end).indexOf(natDst);
    assert.ok(at > 0);
    assert.deepEqual([...buf.subarray(at + 2, at + 10)], [0x08, 0x00, 0x01, 0x00, 198, 51, 100, 7]);
  });

  it('sets BE_LIBERAL in flags and mask of both TCP directions', () => {
    const r = find(recs, 6, 1000);
    const end = enc.encodeCreate(r, buf, 0, 1, NlmFlag.Request);
    const m = buf.subarray(0, end);
    for (const type of [4, 5]) {
      const at = m.indexOf(Buffer.from([0x06, 0x00, type, 0x00]));
      assert.ok(at > 0, `CTA_PROTOINFO_TCP_FLAGS ${type}`);
      assert.equal(m[at + 4] & 0x08, 0x08);
      assert.equal(m[at + 5] & 0x08, 0x08);
    }
  });

  it('encodes a delete of just the key: header, original tuple, zone', () => {
    const r = find(recs, 17, 5353);
    const end = enc.encodeDelete(r, buf, 0, 7, NlmFlag.Request);
    // nlmsghdr: len, type 0x0102 (ctnetlink DELETE), flags REQUEST, seq 7, pid 0; nfgenmsg AF_INET
    assert.equal(buf.readUInt16LE(4), 0x0102);
    assert.equal(buf.readUInt16LE(6), NlmFlag.Request);
    assert.equal(buf[16], AF_INET);
    // ends with CTA_ZONE (18) = be16 5
    assert.deepEqual([...buf.subarray(end - 8, end)], [0x06, 0x00, 0x12, 0x00, 0x00, 0x05, 0x00, 0x00]);
    assert.equal(r.zoneDir & ZoneDir.Orig, 0);
  });
});

describe('malformed input', () => {
  it('refuses a datagram cut anywhere inside a message with NetlinkFormatError', () => {
    const m = messages[0];
    for (let cut = 1; cut < m.length; cut++) assert.throws(() => messageEnd(m, 0, cut), NetlinkFormatError);
    assert.equal(messageEnd(m, 0, m.length), m.length);
  });

  it('refuses a message cut inside an attribute or before its tuples', () => {
    const d = new FlowDecoder();
    const r = new FlowRecord();
    const m = messages[0];
    for (let cut = 0; cut < 120; cut++) assert.throws(() => d.decode(m, 0, cut, r), NetlinkFormatError);
  });

  it('never throws anything but NetlinkFormatError on mutated bytes', () => {
    const d = new FlowDecoder();
    const r = new FlowRecord();
    let seed = 12345;
    const rnd = (n: number): number => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return seed % n;
    };
    for (let i = 0; i < 20000; i++) {
      const m = Buffer.from(messages[rnd(messages.length)]);
      const flips = 1 + rnd(6);
      for (let f = 0; f < flips; f++) m[rnd(m.length)] = rnd(256);
      try {
        d.decode(m, 0, m.length, r);
      } catch (err) {
        if (!(err instanceof NetlinkFormatError)) throw err;
      }
    }
  });
});
