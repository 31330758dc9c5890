// Micro-benchmark (not a test): what does a 10-entry delta cost on a table
// of 1M entries? Prints numbers, asserts nothing.
//
//   npx tsc -p . && node dist/test/unit/table/delta-speed.js [entries]
//
// "ring": delta(v0, v0 + 10) right after 10 changes (the change ring covers it).
// "full scan": the same 10 slots changed, but the range starts before what the
// ring still holds, so the cursor walks every slot: what every delta cost
// before the ring existed.
import { performance } from 'node:perf_hooks';
import { ConnectionTable, Scan } from '../../../plugin/connection-table';
import { R_MARK } from '../../../plugin/flow';
import { FlowRecord } from '../../../plugin/flow-view';
import { encodeTableToBuffer } from '../../../plugin/snapshot-encoder';
import { makeFlow } from './flow-builder';

const N = Number(process.argv[2] ?? 1_000_000);
const r = new FlowRecord();

function flow(i: number, mark = 0): FlowRecord {
  makeFlow(r, 17, `10.${(i >>> 16) & 0xff}.${(i >>> 8) & 0xff}.${i & 0xff}`, 1000 + (i % 50000), '198.51.100.2', 53);
  r.setU32(R_MARK, mark);
  return r;
}

function time(label: string, rounds: number, fn: () => number): void {
  let n = fn(); // warm up
  const t0 = performance.now();
  for (let i = 0; i < rounds; i++) n = fn();
  const ms = (performance.now() - t0) / rounds;
  console.log(`${label.padEnd(44)} ${ms < 0.1 ? `${(ms * 1000).toFixed(1)} us` : `${ms.toFixed(2)} ms`} per delta (${n} entries)`);
}

function cursorDelta(t: ConnectionTable, from: number, to: number): number {
  const c = t.cursor().reset(Scan.Delta, from, to);
  let n = 0;
  while (c.next()) if (c.stable()) n++;
  return n;
}

const t = ConnectionTable.create({ capacity: N });
const tb = performance.now();
for (let i = 0; i < N; i++) t.upsert(flow(i));
console.log(`table: ${t.size} entries, version ${t.version}, built in ${((performance.now() - tb) / 1000).toFixed(1)} s`);

// 10 changes: 7 updates, 3 removes, spread over the table.
const v0 = t.version;
for (let k = 0; k < 10; k++) {
  const i = Math.floor((k * N) / 10) + 3;
  if (k < 7) t.upsert(flow(i, 1));
  else t.remove(flow(i));
}
const v1 = t.version;
time('cursor delta(10 changes), ring', 200, () => cursorDelta(t, v0, v1));
time('encodeTableToBuffer delta(10 changes), ring', 200, () => encodeTableToBuffer(t, { scan: Scan.Delta, from: v0, to: v1 }).summary.entries);

// Push the start of that range out of the ring: churn the same 10 slots for
// more versions than the ring holds (at most 1 << 20).
for (let round = 0; round < (1 << 20) / 7 + 1; round++) for (let k = 0; k < 7; k++) t.upsert(flow(Math.floor((k * N) / 10) + 3, 2 + round));
const v2 = t.version;
time('cursor delta(10 entries), full scan', 20, () => cursorDelta(t, v0, v2));
time('encodeTableToBuffer delta(10 entries), full scan', 20, () => encodeTableToBuffer(t, { scan: Scan.Delta, from: v0, to: v2 }).summary.entries);
