import { workerData } from 'node:worker_threads';
import { ConnectionTable } from '../../../plugin/connection-table';
import { R_MARK, R_TIMEOUT } from '../../../plugin/flow';
import { FlowRecord } from '../../../plugin/flow-view';
import { makeFlow } from './flow-builder';

// Test helper: `ops` random changes (upserts, removes, now and then a reclaim)
// over `keys` entries, keeping timeout === sport * 3 + mark inside every
// record. Signals progress in progress[0] (the number of ops done).
const { sab, ops, keys, seed, progress } = workerData as { sab: SharedArrayBuffer; ops: number; keys: number; seed: number; progress: SharedArrayBuffer };
const t = ConnectionTable.attach(sab);
const done = new Int32Array(progress);
const r = new FlowRecord();
let x = seed >>> 0 || 1;
function rnd(n: number): number {
  x ^= x << 13;
  x ^= x >>> 17;
  x ^= x << 5;
  return (x >>> 0) % n;
}
for (let op = 1; op <= ops; op++) {
  const i = rnd(keys);
  makeFlow(r, 6, '192.0.2.1', i, '198.51.100.2', 22);
  if (rnd(4) === 0) t.remove(r);
  else {
    const mark = rnd(1000);
    r.setU32(R_MARK, mark);
    r.setU32(R_TIMEOUT, i * 3 + mark);
    t.upsert(r);
  }
  if (op % 5000 === 0) t.reclaim(t.version - 20_000);
  if (op % 256 === 0) Atomics.store(done, 0, op);
}
Atomics.store(done, 0, ops);
