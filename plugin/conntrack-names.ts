import { L4, isIcmp } from './flow';

/*
 * conntrack's names for what a record holds (conntrack(8) prints them,
 * flow-json and flow-text read and write them): protocol states, status
 * bits, protocols, and the fields a protocol's tuple has.
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
export const PROTO_NUMBERS = new Map([...PROTO_NAMES].map(([n, s]) => [s, n]));

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

export const enum TupleShape {
  Ports,
  Gre,
  Icmp,
  Other,
}

export function tupleShape(l4proto: number): TupleShape {
  if (l4proto === L4.GRE) return TupleShape.Gre;
  if (isIcmp(l4proto)) return TupleShape.Icmp;
  if (l4proto === L4.TCP || l4proto === L4.UDP || l4proto === L4.UDPLITE || l4proto === L4.SCTP || l4proto === L4.DCCP)
    return TupleShape.Ports;
  return TupleShape.Other;
}
