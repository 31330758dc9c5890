/**
 * Dump filter: turns a FlowFilter into the ctnetlink dump requests that let
 * the kernel skip what the filter does not want, using only the filters the
 * running kernel has:
 * - family (4.20+), CTA_MARK + CTA_MARK_MASK (3.4+), CTA_ZONE (6.8+),
 * - CTA_FILTER by tuple (5.8+): one address per request and direction, so an
 *   address costs four dumps (original source, original destination, reply
 *   source, reply destination); an entry can come back more than once and is
 *   deduplicated by the table (upsert is idempotent).
 * The kernel's answer is a superset at worst; callers always apply
 * flowMatches() too, so the outcome is exact on every kernel.
 */
import { release } from 'node:os';
import { Address } from '../../plugin/address';
import { AF_INET } from '../../plugin/flow';
import { FlowFilter } from '../../plugin/flow-filter';
import { Cta, CtaFilter, CtaIp, CtaTuple, FilterFlag, NLA_F_NESTED } from './attributes';
import { beginMessage, CtMsg, ctMsgType, finishMessage, NlmFlag } from './netlink-message';

/** Kernel version as [major, minor]. */
export type KernelVersion = readonly [number, number];

/** Version of the running kernel (from uname -r); [0, 0] when unreadable. */
export function runningKernel(): KernelVersion {
  const m = /^(\d+)\.(\d+)/.exec(release());
  return m ? [Number(m[1]), Number(m[2])] : [0, 0];
}

function atLeast(k: KernelVersion, major: number, minor: number): boolean {
  return k[0] > major || (k[0] === major && k[1] >= minor);
}

/** The requests of one dump and which kernel filters they use. */
export interface DumpPlan {
  /** Complete GET|DUMP messages; the sender patches the sequence number (bytes 8..11). */
  requests: Buffer[];
  /** Kernel filters used: "family", "mark", "zone", "tuple". */
  kernelFilters: string[];
}

/** Most addresses for which per-address tuple dumps are used (4 dumps each); beyond, filter in userspace. */
export const MAX_TUPLE_FILTER_ADDRESSES = 8;

/** Build the dump requests for `filter` on kernel `kernel`. */
export function planDump(filter: FlowFilter, kernel: KernelVersion = runningKernel()): DumpPlan {
  const used = new Set<string>();
  const useMark = filter.mark !== undefined && atLeast(kernel, 3, 4);
  // Zone 0 is every entry's default: asking the kernel for it would add nothing.
  const useZone = filter.zone !== undefined && filter.zone !== 0 && atLeast(kernel, 6, 8);
  const useFamily = atLeast(kernel, 4, 20);
  const useTuple = atLeast(kernel, 5, 8) && filter.addresses.length > 0 && filter.addresses.length <= MAX_TUPLE_FILTER_ADDRESSES;
  if (useMark) used.add('mark');
  if (useZone) used.add('zone');
  const requests: Buffer[] = [];
  const common = (buf: Buffer, p: number): number => {
    if (useMark && filter.mark) {
      p = be32(buf, p, Cta.Mark, filter.mark.value);
      p = be32(buf, p, Cta.MarkMask, filter.mark.mask);
    }
    if (useZone && filter.zone !== undefined) p = be16(buf, p, Cta.Zone, filter.zone);
    return p;
  };
  if (useTuple) {
    used.add('tuple');
    used.add('family');
    for (const a of filter.addresses) {
      for (const dir of [Cta.TupleOrig, Cta.TupleReply]) {
        for (const which of [FilterFlag.IpSrc, FilterFlag.IpDst]) {
          requests.push(request(a.family, (buf, p) => tupleFilter(buf, common(buf, p), a, dir, which)));
        }
      }
    }
  } else {
    let family = 0;
    if (useFamily && filter.addresses.length > 0) {
      const fams = new Set(filter.addresses.map((a) => a.family));
      if (fams.size === 1) {
        family = filter.addresses[0].family;
        used.add('family');
      }
    }
    requests.push(request(family, common));
  }
  return { requests, kernelFilters: [...used].sort() };
}

function request(family: number, body: (buf: Buffer, p: number) => number): Buffer {
  const buf = Buffer.alloc(256);
  const p = beginMessage(buf, 0, ctMsgType(CtMsg.Get), NlmFlag.Request | NlmFlag.Dump, 0, family);
  const end = finishMessage(buf, 0, body(buf, p));
  return buf.subarray(0, end);
}

function tupleFilter(buf: Buffer, p: number, a: Address, dir: Cta, which: FilterFlag): number {
  const v4 = a.family === AF_INET;
  const t = p;
  p = hdr(buf, p, 0, dir | NLA_F_NESTED);
  const ip = p;
  p = hdr(buf, p, 0, CtaTuple.Ip | NLA_F_NESTED);
  const type = which === FilterFlag.IpSrc ? (v4 ? CtaIp.V4Src : CtaIp.V6Src) : v4 ? CtaIp.V4Dst : CtaIp.V6Dst;
  p = hdr(buf, p, 4 + a.bytes.length, type);
  for (let i = 0; i < a.bytes.length; i++) buf[p + i] = a.bytes[i];
  p += a.bytes.length;
  buf.writeUInt16LE(p - ip, ip);
  buf.writeUInt16LE(p - t, t);
  const f = p;
  p = hdr(buf, p, 0, Cta.Filter | NLA_F_NESTED);
  // CTA_FILTER flags are NLA_U32 in host order, unlike the conntrack values.
  p = hdr(buf, p, 8, dir === Cta.TupleOrig ? CtaFilter.OrigFlags : CtaFilter.ReplyFlags);
  buf.writeUInt32LE(which, p);
  p += 4;
  buf.writeUInt16LE(p - f, f);
  return p;
}

function hdr(buf: Buffer, p: number, len: number, type: number): number {
  buf.writeUInt16LE(len, p);
  buf.writeUInt16LE(type, p + 2);
  return p + 4;
}

function be32(buf: Buffer, p: number, type: number, v: number): number {
  p = hdr(buf, p, 8, type);
  buf.writeUInt32BE(v >>> 0, p);
  return p + 4;
}

function be16(buf: Buffer, p: number, type: number, v: number): number {
  p = hdr(buf, p, 6, type);
  buf.writeUInt16BE(v, p);
  buf.writeUInt16BE(0, p + 2);
  return p + 4;
}
