import { parseAddress } from '../../../plugin/address';
import { R_FAMILY, R_L4PROTO, R_ORIG_DPORT, R_ORIG_DST, R_ORIG_SPORT, R_ORIG_SRC, R_REPLY_DPORT, R_REPLY_DST, R_REPLY_SPORT, R_REPLY_SRC, R_STATUS, R_TIMEOUT, R_ZONE, RecordFlag, Status } from '../../../plugin/flow';
import { FlowRecord } from '../../../plugin/flow-view';

/** A plain TCP/UDP entry from text, for table tests. */
export function makeFlow(rec: FlowRecord, proto: number, src: string, sport: number, dst: string, dport: number, zone?: number): FlowRecord {
  rec.clear();
  const s = parseAddress(src);
  const d = parseAddress(dst);
  rec.setU8(R_FAMILY, s.family);
  rec.setU8(R_L4PROTO, proto);
  rec.u8.set(s.bytes, R_ORIG_SRC);
  rec.u8.set(d.bytes, R_ORIG_DST);
  rec.u8.set(d.bytes, R_REPLY_SRC);
  rec.u8.set(s.bytes, R_REPLY_DST);
  rec.setU16(R_ORIG_SPORT, sport);
  rec.setU16(R_ORIG_DPORT, dport);
  rec.setU16(R_REPLY_SPORT, dport);
  rec.setU16(R_REPLY_DPORT, sport);
  rec.setU32(R_STATUS, Status.Confirmed | Status.SeenReply | Status.Assured);
  rec.setU32(R_TIMEOUT, 300);
  rec.setFlag(RecordFlag.HasTimeout);
  if (zone !== undefined) {
    rec.setU16(R_ZONE, zone);
    rec.setFlag(RecordFlag.HasZone);
  }
  return rec;
}
