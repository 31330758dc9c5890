/**
 * Warm-up: run the snapshot codec's hot paths once, on made-up entries, when
 * the daemon starts.
 *
 * Why: V8 compiles a function to fast machine code only after it has run a
 * while, so a daemon's first migration would encode (source) and decode
 * (destination) its first entries in slow tiers. Measured on 2 cores, a
 * fresh daemon pair's 1M-entry pre-copy took 4.76 s with the warm-ups (here
 * and in the writer threads) against 4.85 s without (medians of four runs
 * each; small, but the kernel bounds the rest). It costs ~80 ms of CPU at
 * start, when nothing waits for it.
 */
import { TCP_ESTABLISHED } from './conntrack-names';
import { ConnectionTable, Scan } from './connection-table';
import { AF_INET, L4, R_FAMILY, R_L4PROTO, R_ORIG_DPORT, R_ORIG_DST, R_ORIG_SPORT, R_ORIG_SRC, R_PROTO_STATE, R_REPLY_DPORT, R_REPLY_DST, R_REPLY_SPORT, R_REPLY_SRC, R_STATUS, R_TIMEOUT, RecordFlag, Status } from './flow';
import { FlowRecord } from './flow-view';
import { SnapshotDecoder } from './snapshot-decoder';
import { encodeTableToBuffer } from './snapshot-encoder';

/** Entries the warm-up runs through each path: enough for V8's optimising tier. */
export const WARM_UP_ENTRIES = 20_000;


/**
 * A table of `n` made-up established TCP entries between two addresses of
 * 192.0.2.0/24 (documentation range; they never reach a kernel).
 */
export function warmUpTable(n: number): ConnectionTable {
  const t = ConnectionTable.create({ capacity: n });
  const r = new FlowRecord();
  r.setU8(R_FAMILY, AF_INET);
  r.setU8(R_L4PROTO, L4.TCP);
  r.u8.set([192, 0, 2, 1], R_ORIG_SRC);
  r.u8.set([192, 0, 2, 2], R_ORIG_DST);
  r.u8.set([192, 0, 2, 2], R_REPLY_SRC);
  r.u8.set([192, 0, 2, 1], R_REPLY_DST);
  r.setU32(R_STATUS, Status.Confirmed | Status.SeenReply | Status.Assured);
  r.setU32(R_TIMEOUT, 300);
  r.setU8(R_PROTO_STATE, TCP_ESTABLISHED);
  r.setFlag(RecordFlag.HasTimeout | RecordFlag.HasProtoInfo);
  for (let i = 0; i < n; i++) {
    r.setU16(R_ORIG_SPORT, 1024 + (i % 60000));
    r.setU16(R_ORIG_DPORT, 1 + Math.floor(i / 60000));
    r.setU16(R_REPLY_SPORT, r.u16[R_ORIG_DPORT >> 1]);
    r.setU16(R_REPLY_DPORT, r.u16[R_ORIG_SPORT >> 1]);
    t.upsert(r);
  }
  return t;
}

/** Encode a made-up table and decode it again the way a migration does (into a staging table, then scanned). */
export function warmUpCodec(n = WARM_UP_ENTRIES): void {
  const source = warmUpTable(n);
  const { bytes } = encodeTableToBuffer(source, { scan: Scan.Snapshot, from: 0, to: source.version });
  const staging = ConnectionTable.create({ capacity: n });
  const decoder = new SnapshotDecoder({ maxEntries: n, staging });
  // In pieces, as chunks arrive from a peer.
  const piece = 64 * 1024;
  for (let at = 0; at < bytes.length; at += piece) decoder.write(bytes.subarray(at, Math.min(bytes.length, at + piece)));
  decoder.end();
  const cur = staging.cursor().reset(Scan.Delta, 0, staging.version);
  let seen = 0;
  while (cur.next()) seen++;
  if (seen !== n) throw new Error(`codec warm-up decoded ${seen} of ${n} entries`);
}
