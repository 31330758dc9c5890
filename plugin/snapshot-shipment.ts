import { ConnectionTable, Scan } from './connection-table';
import { isEstablishedTcp, isNotEstablishedTcp } from './established-tcp';
import { FlowView } from './flow-view';
import { ChunkSink, EncodeSummary, encodeSlot, SnapshotEncoder } from './snapshot-encoder';
import { SnapshotKind } from './snapshot-format';

/** What the shipment does when the switchover comes before the snapshot is across. */
export interface SwitchoverOrder {
  /** Asked between entries: true once the VM has stopped (or the cut-over has been asked for). */
  switchedOver(): boolean;
  /**
   * Called once, at an entry boundary, with every chunk so far handed to
   * the sink: ship what changed since the snapshot's version (deletions
   * included), ahead of the snapshot's remaining entries.
   */
  handOver(): Promise<void>;
  /** Every established TCP entry the snapshot still had is handed to the sink: say so to the destination. */
  establishedSent(): Promise<void>;
}

/**
 * Stream the table's live entries with version <= `version` as a snapshot,
 * in slot order. When the switchover comes first (a small VM that finishes
 * its memory before a big table is across), the order changes at the next
 * entry: the changes since `version` go out at once, then the remaining
 * established TCP entries, then the rest, so that the destination holds
 * the flows that matter long before the snapshot's tail.
 *
 * Why this stays exact: the snapshot takes an entry only while its version
 * is <= `version` (unchanged since), and every entry that changed after
 * `version` is in the handed-over changes or in the later ones. A key is
 * therefore in at most one of the remaining snapshot and the changes, and
 * a key the snapshot sent before the handover is overtaken, in order, by
 * its change. The two passes over the rest do not repeat a key either: an
 * entry that changes between them leaves the snapshot's range.
 */
export async function streamSnapshot(
  table: ConnectionTable,
  version: number,
  sink: ChunkSink,
  order: SwitchoverOrder,
  chunkBytes: number,
  firstChunkBytes: number,
): Promise<EncodeSummary & { handedOver: boolean }> {
  const enc = new SnapshotEncoder(sink, chunkBytes, firstChunkBytes);
  enc.begin(SnapshotKind.Snapshot, 0, version);
  const cur = table.cursor().reset(Scan.Snapshot, 0, version);
  let resumeAt = -1;
  while (cur.next()) {
    encodeSlot(enc, cur, undefined);
    if (enc.backlog) await enc.drain();
    if (order.switchedOver()) {
      resumeAt = cur.slot;
      break;
    }
  }
  if (resumeAt < 0) return { ...(await enc.end()), handedOver: false };
  enc.cut();
  await enc.drain();
  await order.handOver();
  await pass(enc, table, version, resumeAt, isEstablishedTcp);
  enc.cut();
  await enc.drain();
  await order.establishedSent();
  await pass(enc, table, version, resumeAt, isNotEstablishedTcp);
  return { ...(await enc.end()), handedOver: true };
}

/** The snapshot's entries after slot `after` that `keep` accepts. */
async function pass(enc: SnapshotEncoder, table: ConnectionTable, version: number, after: number, keep: (v: FlowView) => boolean): Promise<void> {
  const cur = table.cursor().reset(Scan.Snapshot, 0, version);
  cur.slot = after;
  while (cur.next()) {
    encodeSlot(enc, cur, keep);
    if (enc.backlog) await enc.drain();
  }
}
