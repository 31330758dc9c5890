import {
  AF_INET,
  AF_INET6,
  ExtFlag,
  hasPorts,
  HELPER_NAME_MAX,
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
  R_REPLY_DPORT,
  R_REPLY_DST,
  R_REPLY_SPORT,
  R_REPLY_SRC,
  R_STATUS,
  R_TIMEOUT,
  R_ZONE,
  R_ZONE_DIR,
  RecordFlag,
  Status,
  X_HELPER,
  X_MASTER_DST,
  X_MASTER_FAMILY,
  X_MASTER_SRC,
  X_PRESENT,
  ZoneDir,
} from './flow';
import { FlowView } from './flow-view';
import { VmSpec } from './vm';

/**
 * Import confinement: whether an entry a peer sent may enter this host's
 * kernel as the VM's. The dump filter (flow-filter.ts) matches any of the
 * four tuple addresses, which is right for showing entries and wrong for
 * importing them: a reply tuple is only the VM's if the NAT the status bits
 * declare explains it. The rule, checked in this order:
 *
 * 1. Owner: a VM address is the original source or destination, or the
 *    reply source with DST_NAT set (the VM is the DNAT target), or the
 *    reply destination with SRC_NAT set (the VM is the SNAT address).
 * 2. Reply: without DST_NAT the reply source (address and port) is exactly
 *    the original destination; without SRC_NAT the reply destination is
 *    exactly the original source. ICMP: the id may differ only with NAT,
 *    the reply type is the kernel's inverse of the original type, the code
 *    is the same.
 * 3. Zone: the zone of each direction (CTA_TUPLE_ZONE, or CTA_ZONE for
 *    both) equals the VM's zone; a direction without any zone is zone 0.
 *    A VM without a zone takes any zone, but one for both directions.
 * 4. Mark: (mark & mask) === value when the VM has a mark.
 * 5. Master: a related entry's master tuple has a VM address as its source
 *    or destination, in the entry's family.
 * 6. Helper: the name is one of the kernel's in-tree helpers.
 * 7. Timeout: at most TIMEOUT_CAP_S for the protocol.
 *
 * Every check reads the record in place: nothing is allocated per entry.
 */

/** Why an entry was refused (Accepted: it was not). */
export const enum Refusal {
  Accepted = 0,
  /** Not an IPv4/IPv6 entry. */
  Family,
  /** No VM address in the original tuple or in a NAT binding the status declares. */
  NotTheVms,
  /** The reply tuple is not what the original tuple and the NAT bits imply. */
  InconsistentReply,
  /** A direction's zone, or CTA_ZONE, is not the VM's zone. */
  Zone,
  /** The ct mark is not the VM's. */
  Mark,
  /** The master tuple of a related entry is not the VM's. */
  ForeignMaster,
  /** The helper is not one the kernel ships. */
  UnknownHelper,
  /** The timeout is longer than the protocol allows. */
  Timeout,
}

/** Number of Refusal values, for per-reason counters. */
export const REFUSAL_KINDS = 9;

/** Text of each refusal reason, for logs. */
export const REFUSAL_TEXT: readonly string[] = [
  'accepted',
  'not an IPv4/IPv6 entry',
  "no VM address in the original tuple or in a NAT binding",
  'reply tuple inconsistent with the original tuple and NAT bits',
  "zone is not the VM's",
  "mark is not the VM's",
  "master tuple is not the VM's",
  'unknown helper',
  'timeout longer than the protocol allows',
];

/** No cap is below this: sysctl-raised UDP/ICMP timeouts (minutes) still migrate. */
const TIMEOUT_FLOOR_S = 3600;

/**
 * Longest timeout (seconds) an imported entry may carry: the kernel's
 * longest default for any state of the protocol (nf_conntrack_proto_*.c:
 * TCP established 5 days; SCTP established 5 days before 5.19; DCCP open
 * 12 h), and never less than one hour (UDP stream 120 s, GRE stream 180 s,
 * ICMP 30 s and generic 600 s defaults are often raised by sysctl). A peer
 * cannot plant an entry that outlives what a kernel would keep (a u32
 * timeout is 136 years); a source whose sysctls go past these loses those
 * entries, counted as refused.
 */
export function timeoutCap(l4proto: number): number {
  switch (l4proto) {
    case L4.TCP:
    case L4.SCTP:
      return 432000;
    case L4.DCCP:
      return 43200;
    default:
      return TIMEOUT_FLOOR_S;
  }
}

/** In-tree conntrack helpers by their registered names (net/netfilter/nf_conntrack_*.c). */
export const KNOWN_HELPERS: readonly string[] = [
  'ftp',
  'tftp',
  'sip',
  'irc',
  'amanda',
  'pptp',
  'sane',
  'snmp',
  'snmp_trap',
  'netbios-ns',
  'RAS',
  'Q.931',
  'H.245',
];
const HELPER_BYTES: readonly Uint8Array[] = KNOWN_HELPERS.map((n) => Uint8Array.from(n, (c) => c.charCodeAt(0)));

/** ICMP reply type for a request type (nf_conntrack_proto_icmp.c invmap); -1: no reply. */
export function icmpReplyType(l4proto: number, type: number): number {
  if (l4proto === L4.ICMP) {
    switch (type) {
      case 8:
        return 0;
      case 0:
        return 8;
      case 13:
        return 14;
      case 14:
        return 13;
      case 15:
        return 16;
      case 16:
        return 15;
      case 17:
        return 18;
      case 18:
        return 17;
      default:
        return -1;
    }
  }
  switch (type) {
    case 128:
      return 129;
    case 129:
      return 128;
    case 139:
      return 140;
    case 140:
      return 139;
    default:
      return -1;
  }
}

/**
 * Whether the VM is in the entry's original tuple. An existing kernel entry
 * with the same original tuple and zone is then the VM's too, by the same
 * rule, and may be replaced; an entry that is the VM's only through its NAT
 * binding may collide with a flow of the host's own, which is left alone.
 */
export function ownsOriginalTuple(vm: VmSpec, v: FlowView): boolean {
  const family = v.u8[v.rec + R_FAMILY];
  return isVmAddress(vm, family, v.u8, v.rec + R_ORIG_SRC) || isVmAddress(vm, family, v.u8, v.rec + R_ORIG_DST);
}

/** Check one entry against the VM; Refusal.Accepted when it may be imported. */
export function confine(vm: VmSpec, v: FlowView): Refusal {
  const u8 = v.u8;
  const r = v.rec;
  const family = u8[r + R_FAMILY];
  if (family !== AF_INET && family !== AF_INET6) return Refusal.Family;
  const alen = family === AF_INET ? 4 : 16;
  const status = v.u32[(r + R_STATUS) >> 2];
  const snat = (status & Status.SrcNat) !== 0;
  const dnat = (status & Status.DstNat) !== 0;

  if (
    !isVmAddress(vm, family, u8, r + R_ORIG_SRC) &&
    !isVmAddress(vm, family, u8, r + R_ORIG_DST) &&
    !(dnat && isVmAddress(vm, family, u8, r + R_REPLY_SRC)) &&
    !(snat && isVmAddress(vm, family, u8, r + R_REPLY_DST))
  )
    return Refusal.NotTheVms;

  if (!replyConsistent(v, alen, snat, dnat)) return Refusal.InconsistentReply;

  if (!zoneIsVms(vm, v)) return Refusal.Zone;

  if (vm.mark !== undefined && ((v.u32[(r + R_MARK) >> 2] & vm.mark.mask) >>> 0) !== vm.mark.value >>> 0) return Refusal.Mark;

  const x = v.ext;
  const present = x < 0 ? 0 : v.u32[(x + X_PRESENT) >> 2];
  if ((present & ExtFlag.Master) !== 0) {
    if (u8[x + X_MASTER_FAMILY] !== family) return Refusal.ForeignMaster;
    if (!isVmAddress(vm, family, u8, x + X_MASTER_SRC) && !isVmAddress(vm, family, u8, x + X_MASTER_DST)) return Refusal.ForeignMaster;
  }
  if ((present & ExtFlag.Helper) !== 0 && !knownHelper(u8, x + X_HELPER)) return Refusal.UnknownHelper;

  if ((u8[r + R_FLAGS] & RecordFlag.HasTimeout) !== 0 && v.u32[(r + R_TIMEOUT) >> 2] > timeoutCap(u8[r + R_L4PROTO])) return Refusal.Timeout;
  return Refusal.Accepted;
}

/**
 * The check for a deletion (a tombstone carries only its key): the VM's by
 * its original tuple, in the VM's zone. A deletion only ever removes what
 * this session created, so this decides only whether it is counted.
 */
export function confineKey(vm: VmSpec, v: FlowView): Refusal {
  const u8 = v.u8;
  const r = v.rec;
  const family = u8[r + R_FAMILY];
  if (family !== AF_INET && family !== AF_INET6) return Refusal.Family;
  if (!isVmAddress(vm, family, u8, r + R_ORIG_SRC) && !isVmAddress(vm, family, u8, r + R_ORIG_DST)) return Refusal.NotTheVms;
  if (!zoneIsVms(vm, v)) return Refusal.Zone;
  return Refusal.Accepted;
}

function replyConsistent(v: FlowView, alen: number, snat: boolean, dnat: boolean): boolean {
  const u8 = v.u8;
  const r = v.rec;
  const l4 = u8[r + R_L4PROTO];
  const oSport = v.u16[(r + R_ORIG_SPORT) >> 1];
  const oDport = v.u16[(r + R_ORIG_DPORT) >> 1];
  const rSport = v.u16[(r + R_REPLY_SPORT) >> 1];
  const rDport = v.u16[(r + R_REPLY_DPORT) >> 1];
  // DNAT rewrites where the original went: only then may the reply come from elsewhere.
  if (!dnat && !same(u8, r + R_REPLY_SRC, r + R_ORIG_DST, alen)) return false;
  // SNAT rewrites who the original came from: only then may the reply go elsewhere.
  if (!snat && !same(u8, r + R_REPLY_DST, r + R_ORIG_SRC, alen)) return false;
  if (hasPorts(l4)) {
    if (!dnat && rSport !== oDport) return false;
    if (!snat && rDport !== oSport) return false;
  } else if (isIcmp(l4)) {
    // The id is the tuple's only "port"; NAT may remap it either way.
    if (!snat && !dnat && rSport !== oSport) return false;
    const type = icmpReplyType(l4, oDport >> 8);
    if (type < 0 || rDport !== ((type << 8) | (oDport & 0xff))) return false;
  }
  return true;
}

function zoneIsVms(vm: VmSpec, v: FlowView): boolean {
  const r = v.rec;
  const dirs = v.u8[r + R_ZONE_DIR];
  const hasZone = (v.u8[r + R_FLAGS] & RecordFlag.HasZone) !== 0;
  const zone = v.u16[(r + R_ZONE) >> 1];
  // CTA_ZONE alone covers both directions; tuple zones cover only their own.
  const both = hasZone && dirs === 0;
  const orig = both || (dirs & ZoneDir.Orig) !== 0 ? zone : 0;
  const reply = both || (dirs & ZoneDir.Reply) !== 0 ? zone : 0;
  if (orig !== reply) return false;
  return vm.zone === undefined || orig === vm.zone;
}

function isVmAddress(vm: VmSpec, family: number, u8: Uint8Array, off: number): boolean {
  const list = vm.addresses;
  for (let i = 0; i < list.length; i++) {
    const a = list[i];
    if (a.family === family && sameBytes(u8, off, a.bytes)) return true;
  }
  return false;
}

function knownHelper(u8: Uint8Array, off: number): boolean {
  let len = 0;
  while (len <= HELPER_NAME_MAX && u8[off + len] !== 0) len++;
  if (len === 0 || len > HELPER_NAME_MAX) return false;
  for (let i = 0; i < HELPER_BYTES.length; i++) {
    const h = HELPER_BYTES[i];
    if (h.length === len && sameBytes(u8, off, h)) return true;
  }
  return false;
}

function same(u8: Uint8Array, a: number, b: number, n: number): boolean {
  for (let i = 0; i < n; i++) if (u8[a + i] !== u8[b + i]) return false;
  return true;
}

function sameBytes(u8: Uint8Array, off: number, bytes: Uint8Array): boolean {
  for (let i = 0; i < bytes.length; i++) if (u8[off + i] !== bytes[i]) return false;
  return true;
}

/** "2 zone is not the VM's, 1 unknown helper": the non-zero counts of a per-reason tally. */
export function refusalSummary(counts: Uint32Array): string {
  const parts: string[] = [];
  for (let i = 1; i < counts.length; i++) if (counts[i] > 0) parts.push(`${counts[i]} ${REFUSAL_TEXT[i]}`);
  return parts.join(', ');
}
