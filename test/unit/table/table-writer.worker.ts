import { workerData } from 'node:worker_threads';
import { ConnectionTable } from '../../../plugin/connection-table';
import { R_MARK, R_TIMEOUT } from '../../../plugin/flow';
import { FlowRecord } from '../../../plugin/flow-view';
import { makeFlow } from './flow-builder';

// Test helper: rewrites 1000 entries `rounds` times, keeping the invariant
// timeout === sport * 3 + mark inside every record.
const { sab, rounds } = workerData as { sab: SharedArrayBuffer; rounds: number };
const t = ConnectionTable.attach(sab);
const r = new FlowRecord();
for (let round = 0; round < rounds; round++) {
  for (let i = 0; i < 1000; i++) {
    makeFlow(r, 6, '192.0.2.1', i, '198.51.100.2', 22);
    r.setU32(R_MARK, round);
    r.setU32(R_TIMEOUT, i * 3 + round);
    t.upsert(r);
  }
}
