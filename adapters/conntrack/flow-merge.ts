/**
 * Flow merge: folds a partial conntrack event into the record the table
 * already holds, and compares records while ignoring what always changes.
 *
 * Operational catch: update events carry only what changed (protocol info
 * only on a state change, labels only on a label change, the mark only when
 * non-zero or changed...), so writing a decoded update over the stored entry
 * would silently drop its labels, helper or TCP window scale. Merging keeps
 * every part the event did not mention.
 */
import {
  EXT_BYTES,
  ExtFlag,
  EXT_PARTS,
  R_FLAGS,
  R_ID,
  R_MARK,
  R_ORIG_SRC,
  R_PROTO_A,
  R_PROTO_B,
  R_PROTO_STATE,
  R_STATUS,
  R_TCP_WSCALE_ORIG,
  R_TCP_WSCALE_REPLY,
  R_TIMEOUT,
  R_ZONE,
  R_ZONE_DIR,
  RECORD_BYTES,
  RecordFlag,
  X_COUNTERS,
  X_LABELS,
  X_PRESENT,
} from '../../plugin/flow';
import { FlowRecord, FlowView } from '../../plugin/flow-view';
import { Seen } from './flow-decoder';

/** Which decoder Seen bit says an event carried each extension part (plugin/flow.ts EXT_PARTS has where it lives). */
const SEEN_BY_PART: ReadonlyMap<number, number> = new Map([
  [ExtFlag.Helper, Seen.Help],
  [ExtFlag.Labels, Seen.Labels],
  [ExtFlag.SeqAdjOrig, Seen.SeqAdjOrig],
  [ExtFlag.SeqAdjReply, Seen.SeqAdjReply],
  [ExtFlag.Synproxy, Seen.Synproxy],
  [ExtFlag.Master, Seen.Master],
  [ExtFlag.Counters, Seen.Counters],
  [ExtFlag.Timestamp, Seen.Timestamp],
  [ExtFlag.Use, Seen.Use],
  [ExtFlag.Secmark, Seen.Secmark],
]);

/** Extension parts an event may carry: [Seen bit, ExtFlag, byte offset, byte length]. */
const EXT_MERGE: ReadonlyArray<readonly [number, number, number, number]> = EXT_PARTS.map((part) => [SEEN_BY_PART.get(part.flag) ?? 0, part.flag, part.offset, part.bytes] as const);

function copyBytes(dst: FlowRecord, src: FlowView, at: number, n: number): void {
  for (let i = 0; i < n; i++) dst.u8[at + i] = src.u8[src.rec + at + i];
}

function copyFlag(out: FlowRecord, src: FlowView, flag: number): void {
  out.u8[R_FLAGS] = (out.u8[R_FLAGS] & ~flag) | (src.u8[src.rec + R_FLAGS] & flag);
}

/**
 * out := `stored` updated with what the decoded event `ev` carried (`seen`
 * bits from the decoder). `ev` is a FlowRecord (extension right after it).
 */
export function mergeEvent(stored: FlowView, ev: FlowRecord, seen: number, out: FlowRecord): FlowRecord {
  out.copyFrom(stored);
  // Tuples (and their ports) are in every event.
  copyBytes(out, ev, R_ORIG_SRC, R_STATUS - R_ORIG_SRC);
  copyBytes(out, ev, R_ZONE, 2);
  copyBytes(out, ev, R_ZONE_DIR, 1);
  copyFlag(out, ev, RecordFlag.HasZone);
  if (seen & Seen.Status) copyBytes(out, ev, R_STATUS, 4);
  if (seen & Seen.Timeout) {
    copyBytes(out, ev, R_TIMEOUT, 4);
    copyFlag(out, ev, RecordFlag.HasTimeout);
  }
  if (seen & Seen.Mark) {
    copyBytes(out, ev, R_MARK, 4);
    copyFlag(out, ev, RecordFlag.HasMark);
  }
  if (seen & Seen.Id) {
    copyBytes(out, ev, R_ID, 4);
    copyFlag(out, ev, RecordFlag.HasId);
  }
  if (seen & Seen.ProtoInfo) {
    copyBytes(out, ev, R_PROTO_STATE, 1);
    copyBytes(out, ev, R_TCP_WSCALE_ORIG, 1);
    copyBytes(out, ev, R_TCP_WSCALE_REPLY, 1);
    copyBytes(out, ev, R_PROTO_A, 4);
    copyBytes(out, ev, R_PROTO_B, 4);
    copyFlag(out, ev, RecordFlag.HasProtoInfo);
  }
  const evPresent = ev.extPresent;
  let present = out.extPresent;
  for (const [bit, flag, at, n] of EXT_MERGE) {
    if ((seen & bit) === 0) continue;
    for (let i = 0; i < n; i++) out.u8[RECORD_BYTES + at + i] = ev.u8[RECORD_BYTES + at + i];
    present = (present & ~flag) | (evPresent & flag);
  }
  out.u32[(RECORD_BYTES + X_PRESENT) >> 2] = present;
  return out;
}

const VOLATILE_EXT = ExtFlag.Use | ExtFlag.Counters;

/**
 * True when two records describe the same entry state, ignoring version,
 * timeout, reference count and counters (which change all the time and
 * would make every re-dump look like a change).
 */
export function sameFlow(a: FlowView, b: FlowView): boolean {
  const a8 = a.u8;
  const b8 = b.u8;
  const ar = a.rec;
  const br = b.rec;
  const live = RecordFlag.Live | RecordFlag.Tombstone;
  if ((a8[ar + R_FLAGS] & ~live) !== (b8[br + R_FLAGS] & ~live)) return false;
  for (let i = 11; i < R_ID + 4; i++) {
    if (i >= R_TIMEOUT && i < R_TIMEOUT + 4) continue;
    if (a8[ar + i] !== b8[br + i]) return false;
  }
  const ap = a.extPresent & ~VOLATILE_EXT;
  const bp = b.extPresent & ~VOLATILE_EXT;
  if (ap !== bp) return false;
  if (ap === 0) return true;
  for (let i = X_LABELS; i < EXT_BYTES; i++) {
    if (i >= X_COUNTERS && i < X_COUNTERS + 32) continue;
    if (a8[a.ext + i] !== b8[b.ext + i]) return false;
  }
  return true;
}
