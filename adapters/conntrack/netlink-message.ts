/**
 * Netlink messages: the nlmsghdr + nfgenmsg framing of ctnetlink, message
 * types and flags, and the kernel's answers (NLMSG_ERROR, NLMSG_DONE).
 *
 * The middle layer of adapters/conntrack: attributes → messages → flows.
 * All integers in the headers are in host order (little-endian here); the
 * conntrack attributes inside are in network order.
 */
import { constants as osConstants } from 'node:os';
import { NetlinkFormatError } from './attributes';

/** Netlink protocol number of netfilter (socket(AF_NETLINK, SOCK_RAW, 12)). */
export const NETLINK_NETFILTER = 12;

/** Bytes of struct nlmsghdr. */
export const NLMSG_HDRLEN = 16;
/** Bytes of struct nfgenmsg that follow it in every nfnetlink message. */
export const NFGEN_LEN = 4;
/** Offset of the first attribute of an nfnetlink message. */
export const NFNL_ATTR_OFFSET = NLMSG_HDRLEN + NFGEN_LEN;

/** Control message types (netlink core). */
export const enum NlmsgType {
  Noop = 1,
  /** An error (errno < 0) or an ACK (0) for the request with the same sequence number. */
  Error = 2,
  /** End of a dump; its payload is the dump's final errno. */
  Done = 3,
  Overrun = 4,
}

/** Request / reply flags (nlmsg_flags). */
export const enum NlmFlag {
  Request = 0x01,
  /** Part of a multipart (dump) answer. */
  Multi = 0x02,
  /** Ask for an ACK; failures are reported even without it. */
  Ack = 0x04,
  Echo = 0x08,
  DumpIntr = 0x10,
  /** The kernel applied a dump filter. */
  DumpFiltered = 0x20,
  /** NLM_F_ROOT | NLM_F_MATCH on a GET: a dump. */
  Dump = 0x300,
  Replace = 0x100,
  /** With CREATE: fail with EEXIST instead of updating an existing entry. */
  Excl = 0x200,
  Create = 0x400,
}

/** nfnetlink subsystem id of ctnetlink (the high byte of the message type). */
export const NFNL_SUBSYS_CTNETLINK = 1;

/** ctnetlink message kinds (the low byte of the message type). */
export const enum CtMsg {
  /** Create or update (and the kind of dump replies and new/update events). */
  New = 0,
  Get = 1,
  /** Delete (and the kind of destroy events). */
  Delete = 2,
  GetCtrZero = 3,
}

/** Full nlmsg_type of a ctnetlink message kind. */
export function ctMsgType(kind: CtMsg): number {
  return (NFNL_SUBSYS_CTNETLINK << 8) | kind;
}

/** Multicast groups of ctnetlink events (NFNLGRP_CONNTRACK_*). */
export const enum CtGroup {
  New = 1,
  Update = 2,
  Destroy = 3,
}

/**
 * Write an nlmsghdr + nfgenmsg at `off`; the length is patched by
 * finishMessage once the attributes are in. Returns the offset of the
 * first attribute.
 */
export function beginMessage(buf: Buffer, off: number, type: number, flags: number, seq: number, family: number): number {
  buf.writeUInt32LE(0, off);
  buf.writeUInt16LE(type, off + 4);
  buf.writeUInt16LE(flags, off + 6);
  buf.writeUInt32LE(seq >>> 0, off + 8);
  buf.writeUInt32LE(0, off + 12);
  buf[off + 16] = family;
  buf[off + 17] = 0; // NFNETLINK_V0
  buf[off + 18] = 0; // res_id (be16)
  buf[off + 19] = 0;
  return off + NFNL_ATTR_OFFSET;
}

/** Patch the length of the message that starts at `start` and ends at `end`; returns the aligned end. */
export function finishMessage(buf: Buffer, start: number, end: number): number {
  buf.writeUInt32LE(end - start, start);
  const aligned = (end + 3) & ~3;
  buf.fill(0, end, aligned);
  return aligned;
}

/** Length field of the message at `off`, checked against the datagram. */
export function messageEnd(buf: Uint8Array, off: number, end: number): number {
  if (off + NLMSG_HDRLEN > end) throw new NetlinkFormatError('message header truncated', off);
  const len = (buf[off] | (buf[off + 1] << 8) | (buf[off + 2] << 16) | (buf[off + 3] << 24)) >>> 0;
  if (len < NLMSG_HDRLEN || off + len > end) throw new NetlinkFormatError(`message length ${len} out of bounds`, off);
  return off + len;
}

/** nlmsg_type of the message at `off`. */
export function messageType(buf: Uint8Array, off: number): number {
  return buf[off + 4] | (buf[off + 5] << 8);
}

/** nlmsg_seq of the message at `off`. */
export function messageSeq(buf: Uint8Array, off: number): number {
  return (buf[off + 8] | (buf[off + 9] << 8) | (buf[off + 10] << 16) | (buf[off + 11] << 24)) >>> 0;
}

/**
 * The errno of an NLMSG_ERROR or NLMSG_DONE at `off` as a positive number
 * (0 = ACK / clean end). The kernel stores it negated.
 */
export function messageErrno(buf: Uint8Array, off: number, end: number): number {
  if (off + NLMSG_HDRLEN + 4 > end) throw new NetlinkFormatError('error message truncated', off);
  const v = buf[off + 16] | (buf[off + 17] << 8) | (buf[off + 18] << 16) | (buf[off + 19] << 24);
  return -v;
}

/**
 * Sequence number of the request an NLMSG_ERROR answers (from the copy of
 * its header the kernel echoes back). The outer header's seq is the same on
 * Linux, but the echoed one is what the kernel promises.
 */
export function erroredSeq(buf: Uint8Array, off: number, end: number): number {
  if (off + NLMSG_HDRLEN + 4 + NLMSG_HDRLEN > end) return messageSeq(buf, off);
  return messageSeq(buf, off + NLMSG_HDRLEN + 4);
}

const errnoNames = new Map<number, string>();
for (const [name, num] of Object.entries(osConstants.errno)) if (!errnoNames.has(num)) errnoNames.set(num, name);

/** Symbolic name of a positive errno ("EEXIST"); "E<number>" when unknown. */
export function errnoName(errno: number): string {
  return errnoNames.get(errno) ?? `E${errno}`;
}

/** Errno numbers the adapter reasons about. */
export const Errno = {
  ENOENT: osConstants.errno.ENOENT,
  EAGAIN: osConstants.errno.EAGAIN,
  ENOMEM: osConstants.errno.ENOMEM,
  EBUSY: osConstants.errno.EBUSY,
  EEXIST: osConstants.errno.EEXIST,
  EINVAL: osConstants.errno.EINVAL,
  ENOSPC: osConstants.errno.ENOSPC,
  EPERM: osConstants.errno.EPERM,
  ENOBUFS: osConstants.errno.ENOBUFS,
  EOPNOTSUPP: osConstants.errno.EOPNOTSUPP,
  ETIME: osConstants.errno.ETIME,
} as const;
