import assert from 'node:assert/strict';
import fc from 'fast-check';
import { parseAddress } from '../../../plugin/address';
import {
  ExtFlag,
  L4,
  R_FAMILY,
  R_L4PROTO,
  R_MARK,
  R_ORIG_DPORT,
  R_ORIG_DST,
  R_ORIG_SPORT,
  R_ORIG_SRC,
  R_REPLY_DPORT,
  R_REPLY_DST,
  R_REPLY_SPORT,
  R_REPLY_SRC,
  R_STATUS,
  R_TIMEOUT,
  R_ZONE,
  R_ZONE_DIR,
  RECORD_BYTES,
  RecordFlag,
  Status,
  X_HELPER,
  X_MASTER_DST,
  X_MASTER_FAMILY,
  X_MASTER_L4PROTO,
  X_MASTER_SRC,
  ZoneDir,
} from '../../../plugin/flow';
import { FlowRecord } from '../../../plugin/flow-view';
import { confine, confineKey, KNOWN_HELPERS, Refusal, REFUSAL_TEXT } from '../../../plugin/import-confinement';
import { VmSpec, vmSpec } from '../../../plugin/vm';

const UUID = '6f1c2a3e-9b4d-4c5e-8f70-112233445566';
const VM = '192.0.2.50';
const VM6 = '2001:db8:50::1';
const PEER = '198.51.100.66';
const OTHER = '203.0.113.5';
const NAT = '198.51.100.200';

interface Tuple {
  src: string;
  sport: number;
  dst: string;
  dport: number;
}
interface Shape {
  proto?: number;
  orig: Tuple;
  /** Default: the exact inverse of orig. */
  reply?: Tuple;
  status?: number;
  zone?: number;
  zoneDir?: number;
  timeout?: number;
  mark?: number;
  helper?: string;
  master?: { src: string; dst: string };
}

const BASE = Status.Confirmed | Status.SeenReply | Status.Assured;

function entry(s: Shape, rec = new FlowRecord()): FlowRecord {
  rec.clear();
  const o = s.orig;
  const r = s.reply ?? { src: o.dst, sport: o.dport, dst: o.src, dport: o.sport };
  const os = parseAddress(o.src);
  rec.setU8(R_FAMILY, os.family);
  rec.setU8(R_L4PROTO, s.proto ?? L4.UDP);
  rec.u8.set(os.bytes, R_ORIG_SRC);
  rec.u8.set(parseAddress(o.dst).bytes, R_ORIG_DST);
  rec.u8.set(parseAddress(r.src).bytes, R_REPLY_SRC);
  rec.u8.set(parseAddress(r.dst).bytes, R_REPLY_DST);
  rec.setU16(R_ORIG_SPORT, o.sport);
  rec.setU16(R_ORIG_DPORT, o.dport);
  rec.setU16(R_REPLY_SPORT, r.sport);
  rec.setU16(R_REPLY_DPORT, r.dport);
  rec.setU32(R_STATUS, s.status ?? BASE);
  rec.setU32(R_TIMEOUT, s.timeout ?? 300);
  rec.setFlag(RecordFlag.HasTimeout);
  if (s.zone !== undefined) {
    rec.setU16(R_ZONE, s.zone);
    if (s.zoneDir === undefined) rec.setFlag(RecordFlag.HasZone);
  }
  if (s.zoneDir !== undefined) rec.setU8(R_ZONE_DIR, s.zoneDir);
  if (s.mark !== undefined) {
    rec.setU32(R_MARK, s.mark);
    rec.setFlag(RecordFlag.HasMark);
  }
  if (s.helper !== undefined) {
    rec.addExt(ExtFlag.Helper);
    for (let i = 0; i < s.helper.length; i++) rec.setExtU8(X_HELPER + i, s.helper.charCodeAt(i));
  }
  if (s.master) {
    rec.addExt(ExtFlag.Master);
    rec.setExtU8(X_MASTER_FAMILY, os.family);
    rec.setExtU8(X_MASTER_L4PROTO, L4.TCP);
    rec.u8.set(parseAddress(s.master.src).bytes, RECORD_BYTES + X_MASTER_SRC);
    rec.u8.set(parseAddress(s.master.dst).bytes, RECORD_BYTES + X_MASTER_DST);
  }
  return rec;
}

const vm0 = vmSpec(UUID, [VM, VM6], 0);
const vm7 = vmSpec(UUID, [VM, VM6], 7);
const vmAnyZone = vmSpec(UUID, [VM, VM6]);
const vmMarked = vmSpec(UUID, [VM], 0, { value: 0x10, mask: 0xf0 });

const out: Tuple = { src: VM, sport: 40000, dst: OTHER, dport: 53 };
const inbound: Tuple = { src: PEER, sport: 5555, dst: VM, dport: 22 };
const foreign: Tuple = { src: PEER, sport: 5555, dst: OTHER, dport: 3306 };

const cases: Array<[string, VmSpec, Shape, Refusal]> = [
  ['the VM as original source', vm0, { orig: out }, Refusal.Accepted],
  ['the VM as original destination', vm0, { orig: inbound }, Refusal.Accepted],
  ['IPv6, the VM as original source', vm0, { orig: { src: VM6, sport: 123, dst: '2001:db8:99::123', dport: 123 } }, Refusal.Accepted],
  ['finding 1: the VM only as reply source, no NAT', vm0, { orig: foreign, reply: { src: VM, sport: 3306, dst: PEER, dport: 5555 } }, Refusal.NotTheVms],
  ['the VM only as reply destination, no NAT', vm0, { orig: foreign, reply: { src: OTHER, sport: 3306, dst: VM, dport: 5555 } }, Refusal.NotTheVms],
  ['neither tuple names the VM', vm0, { orig: foreign }, Refusal.NotTheVms],
  ['DNAT to the VM, reply consistent', vm0, { orig: { src: PEER, sport: 5000, dst: NAT, dport: 8080 }, reply: { src: VM, sport: 80, dst: PEER, dport: 5000 }, status: BASE | Status.DstNat }, Refusal.Accepted],
  ['DNAT to the VM, reply to a third host', vm0, { orig: { src: PEER, sport: 5000, dst: NAT, dport: 8080 }, reply: { src: VM, sport: 80, dst: OTHER, dport: 5000 }, status: BASE | Status.DstNat }, Refusal.InconsistentReply],
  ['DNAT to the VM, reply to another port', vm0, { orig: { src: PEER, sport: 5000, dst: NAT, dport: 8080 }, reply: { src: VM, sport: 80, dst: PEER, dport: 5001 }, status: BASE | Status.DstNat }, Refusal.InconsistentReply],
  ['SNAT bit, the VM as reply source only', vm0, { orig: foreign, reply: { src: VM, sport: 3306, dst: NAT, dport: 61000 }, status: BASE | Status.SrcNat }, Refusal.NotTheVms],
  ['SNAT of the VM, reply consistent', vm0, { orig: out, reply: { src: OTHER, sport: 53, dst: NAT, dport: 61000 }, status: BASE | Status.SrcNat }, Refusal.Accepted],
  ['SNAT of the VM, reply from a third host', vm0, { orig: out, reply: { src: PEER, sport: 53, dst: NAT, dport: 61000 }, status: BASE | Status.SrcNat }, Refusal.InconsistentReply],
  ['SNAT of the VM, reply from another port', vm0, { orig: out, reply: { src: OTHER, sport: 54, dst: NAT, dport: 61000 }, status: BASE | Status.SrcNat }, Refusal.InconsistentReply],
  ['SNAT to the VM address, reply consistent', vm0, { orig: foreign, reply: { src: OTHER, sport: 3306, dst: VM, dport: 61000 }, status: BASE | Status.SrcNat }, Refusal.Accepted],
  ['the VM in orig, reply rewritten without NAT bits', vm0, { orig: out, reply: { src: OTHER, sport: 53, dst: PEER, dport: 40000 } }, Refusal.InconsistentReply],
  ['finding 2: zone-0 VM, tuple zones 7, no CTA_ZONE', vm0, { orig: out, zone: 7, zoneDir: ZoneDir.Orig | ZoneDir.Reply }, Refusal.Zone],
  ['zone-0 VM, orig tuple zone 7 only', vm0, { orig: out, zone: 7, zoneDir: ZoneDir.Orig }, Refusal.Zone],
  ['zone-0 VM, CTA_ZONE 7', vm0, { orig: out, zone: 7 }, Refusal.Zone],
  ['zone-0 VM, CTA_ZONE 0', vm0, { orig: out, zone: 0 }, Refusal.Accepted],
  ['zone-7 VM, CTA_ZONE 7', vm7, { orig: out, zone: 7 }, Refusal.Accepted],
  ['zone-7 VM, tuple zones 7 both ways', vm7, { orig: out, zone: 7, zoneDir: ZoneDir.Orig | ZoneDir.Reply }, Refusal.Accepted],
  ['zone-7 VM, reply tuple zone 7 only', vm7, { orig: out, zone: 7, zoneDir: ZoneDir.Reply }, Refusal.Zone],
  ['zone-7 VM, no zone', vm7, { orig: out }, Refusal.Zone],
  ['VM without zone, one direction zoned', vmAnyZone, { orig: out, zone: 7, zoneDir: ZoneDir.Orig }, Refusal.Zone],
  ['VM without zone, CTA_ZONE 7', vmAnyZone, { orig: out, zone: 7 }, Refusal.Accepted],
  ['mark of the VM', vmMarked, { orig: out, zone: 0, mark: 0x1f }, Refusal.Accepted],
  ['mark not of the VM', vmMarked, { orig: out, zone: 0, mark: 0x20 }, Refusal.Mark],
  ['master of the VM', vm0, { orig: { src: OTHER, sport: 20, dst: VM, dport: 40001 }, master: { src: VM, dst: OTHER } }, Refusal.Accepted],
  ['foreign master', vm0, { orig: { src: OTHER, sport: 20, dst: VM, dport: 40001 }, master: { src: PEER, dst: OTHER } }, Refusal.ForeignMaster],
  ['known helper ftp', vm0, { proto: L4.TCP, orig: inbound, helper: 'ftp' }, Refusal.Accepted],
  ['known helper Q.931', vm0, { proto: L4.TCP, orig: inbound, helper: 'Q.931' }, Refusal.Accepted],
  ['unknown helper', vm0, { proto: L4.TCP, orig: inbound, helper: 'evil' }, Refusal.UnknownHelper],
  ['helper name by prefix only', vm0, { proto: L4.TCP, orig: inbound, helper: 'ftpx' }, Refusal.UnknownHelper],
  ['TCP established for 5 days', vm0, { proto: L4.TCP, orig: inbound, timeout: 432000 }, Refusal.Accepted],
  ['huge TCP timeout', vm0, { proto: L4.TCP, orig: inbound, timeout: 0xffffffff }, Refusal.Timeout],
  ['UDP for an hour', vm0, { orig: out, timeout: 3600 }, Refusal.Accepted],
  ['UDP for a day', vm0, { orig: out, timeout: 86400 }, Refusal.Timeout],
  ['ICMP echo, reply is echo-reply', vm0, { proto: L4.ICMP, orig: { src: VM, sport: 77, dst: OTHER, dport: 8 << 8 }, reply: { src: OTHER, sport: 77, dst: VM, dport: 0 }, timeout: 30 }, Refusal.Accepted],
  ['ICMP echo, reply type is echo again', vm0, { proto: L4.ICMP, orig: { src: VM, sport: 77, dst: OTHER, dport: 8 << 8 }, reply: { src: OTHER, sport: 77, dst: VM, dport: 8 << 8 }, timeout: 30 }, Refusal.InconsistentReply],
  ['ICMP with another id, no NAT', vm0, { proto: L4.ICMP, orig: { src: VM, sport: 77, dst: OTHER, dport: 8 << 8 }, reply: { src: OTHER, sport: 78, dst: VM, dport: 0 }, timeout: 30 }, Refusal.InconsistentReply],
];

describe('import confinement: which entries a destination imports as the VM’s', () => {
  for (const [name, spec, shape, expected] of cases) {
    it(`${name}: ${expected === Refusal.Accepted ? 'accepted' : `refused (${REFUSAL_TEXT[expected]})`}`, () => {
      assert.equal(confine(spec, entry(shape)), expected);
    });
  }

  it('a deletion is the VM’s by its original tuple and zone only', () => {
    assert.equal(confineKey(vm0, entry({ orig: inbound, reply: { src: PEER, sport: 1, dst: PEER, dport: 1 } })), Refusal.Accepted);
    assert.equal(confineKey(vm0, entry({ orig: foreign, reply: { src: VM, sport: 3306, dst: PEER, dport: 5555 } })), Refusal.NotTheVms);
    assert.equal(confineKey(vm0, entry({ orig: inbound, zone: 7, zoneDir: ZoneDir.Orig | ZoneDir.Reply })), Refusal.Zone);
  });
});

/**
 * The oracle: the rule of the README's Security section written out again
 * over the Shape (text addresses, numbers), not over records, so it shares
 * nothing with the implementation but the words of the rule.
 */
function oracle(spec: VmSpec, s: Shape): boolean {
  const vmAddr = (a: string): boolean => a === VM;
  const snat = ((s.status ?? BASE) & Status.SrcNat) !== 0;
  const dnat = ((s.status ?? BASE) & Status.DstNat) !== 0;
  const o = s.orig;
  const r = s.reply ?? { src: o.dst, sport: o.dport, dst: o.src, dport: o.sport };
  if (!(vmAddr(o.src) || vmAddr(o.dst) || (dnat && vmAddr(r.src)) || (snat && vmAddr(r.dst)))) return false;
  if (!dnat && (r.src !== o.dst || r.sport !== o.dport)) return false;
  if (!snat && (r.dst !== o.src || r.dport !== o.sport)) return false;
  let origZone = 0;
  let replyZone = 0;
  if (s.zone !== undefined && s.zoneDir === undefined) origZone = replyZone = s.zone;
  if (s.zone !== undefined && s.zoneDir !== undefined) {
    if (s.zoneDir & ZoneDir.Orig) origZone = s.zone;
    if (s.zoneDir & ZoneDir.Reply) replyZone = s.zone;
  }
  if (origZone !== replyZone) return false;
  if (spec.zone !== undefined && origZone !== spec.zone) return false;
  if (s.master && !(vmAddr(s.master.src) || vmAddr(s.master.dst))) return false;
  if (s.helper !== undefined && !['ftp', 'sip', 'irc', 'tftp', 'amanda', 'pptp', 'sane', 'snmp', 'snmp_trap', 'netbios-ns', 'RAS', 'Q.931', 'H.245'].includes(s.helper)) return false;
  const cap = s.proto === L4.TCP ? 5 * 24 * 3600 : 3600;
  if ((s.timeout ?? 300) > cap) return false;
  return true;
}

describe('import confinement: random entries pass only when the rule says so', () => {
  const addr = fc.constantFrom(VM, PEER, OTHER, NAT);
  const portNo = fc.constantFrom(22, 53, 5555, 61000);
  const tuple = fc.record({ src: addr, sport: portNo, dst: addr, dport: portNo });
  const shape: fc.Arbitrary<Shape> = fc.record(
    {
      proto: fc.constantFrom(L4.TCP, L4.UDP),
      orig: tuple,
      reply: tuple,
      status: fc.constantFrom(BASE, BASE | Status.SrcNat, BASE | Status.DstNat, BASE | Status.SrcNat | Status.DstNat),
      zone: fc.constantFrom(0, 7),
      zoneDir: fc.constantFrom(0, 1, 2, 3),
      timeout: fc.constantFrom(30, 3600, 3601, 432000, 432001, 0xffffffff),
      helper: fc.constantFrom('ftp', 'sip', 'H.245', 'evil', 'ft', 'snmp_trapx'),
      master: fc.record({ src: addr, dst: addr }),
    },
    { requiredKeys: ['orig'] },
  );
  const spec = fc.constantFrom(vm0, vm7, vmSpec(UUID, [VM]));

  it('confine() accepts exactly what the oracle accepts (2,000 runs)', () => {
    const rec = new FlowRecord();
    fc.assert(
      fc.property(spec, shape, (vmx, s) => {
        const want = oracle(vmx, s);
        const got = confine(vmx, entry(s, rec)) === Refusal.Accepted;
        return got === want;
      }),
      { numRuns: Number(process.env.FUZZ_RUNS ?? 2000) },
    );
  });

  it('the helper list is the one the oracle knows', () => {
    assert.deepEqual([...KNOWN_HELPERS].sort(), ['ftp', 'sip', 'irc', 'tftp', 'amanda', 'pptp', 'sane', 'snmp', 'snmp_trap', 'netbios-ns', 'RAS', 'Q.931', 'H.245'].sort());
  });
});
