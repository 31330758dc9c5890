import { formatAddress } from './address';
import { hasPorts, isIcmp, R_FLAGS, R_ORIG_DST, R_ORIG_SRC, RecordFlag } from './flow';
import { PROTO_NAMES, protoName } from './conntrack-names';
import { FlowView } from './flow-view';

/**
 * One short line naming an entry by its original tuple and zone, for error
 * reports and logs: "tcp 192.0.2.1:40000 -> 198.51.100.2:22 zone 7".
 * Not for hot paths (it builds a string).
 */
export function describeFlow(v: FlowView): string {
  const len = v.addressLength;
  const src = formatAddress(v.u8, v.rec + R_ORIG_SRC, len);
  const dst = formatAddress(v.u8, v.rec + R_ORIG_DST, len);
  const p = v.l4proto;
  const wrap = (a: string): string => (len === 16 ? `[${a}]` : a);
  let text: string;
  if (hasPorts(p)) text = `${protoName(p)} ${wrap(src)}:${v.origSport} -> ${wrap(dst)}:${v.origDport}`;
  else if (isIcmp(p)) text = `${protoName(p)} ${src} -> ${dst} type ${v.origDport >> 8} code ${v.origDport & 0xff} id ${v.origSport}`;
  // Protocols with ports or ICMP always have a name; another may not ("proto 99").
  else text = `${PROTO_NAMES.has(p) ? protoName(p) : `proto ${p}`} ${src} -> ${dst}`;
  if ((v.u8[v.rec + R_FLAGS] & RecordFlag.HasZone) !== 0) text += ` zone ${v.zone}`;
  return text;
}
