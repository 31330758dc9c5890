import { L4, R_FLAGS, R_L4PROTO, R_PROTO_STATE, RecordFlag } from './flow';
import { TCP_ESTABLISHED } from './conntrack-names';
import { FlowView } from './flow-view';

/**
 * An established TCP entry: the flows a VM's users feel first when the drop
 * is lifted (readiness `tcp-established`), so both the final delta and a
 * snapshot cut short by the switchover send them ahead of the rest.
 */
export function isEstablishedTcp(v: FlowView): boolean {
  const u8 = v.u8;
  const r = v.rec;
  return u8[r + R_L4PROTO] === L4.TCP && u8[r + R_PROTO_STATE] === TCP_ESTABLISHED && (u8[r + R_FLAGS] & RecordFlag.HasProtoInfo) !== 0;
}

/** Everything isEstablishedTcp() leaves out. */
export function isNotEstablishedTcp(v: FlowView): boolean {
  return !isEstablishedTcp(v);
}
