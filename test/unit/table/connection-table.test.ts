import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { ConnectionTable, Scan, TableFullError } from '../../../plugin/connection-table';
import { ExtFlag, R_MARK, R_TIMEOUT, RECORD_BYTES, X_HELPER, X_LABELS } from '../../../plugin/flow';
import { FlowRecord } from '../../../plugin/flow-view';
import { describeFlow } from '../../../plugin/flow-text';
import { makeFlow } from './flow-builder';

function collect(t: ConnectionTable, mode: Scan, from: number, to: number): string[] {
  const c = t.cursor().reset(mode, from, to);
  const out: string[] = [];
  while (c.next()) out.push(`${describeFlow(c.view)}${c.view.hasFlag(2) ? ' (destroyed)' : ''}`);
  return out.sort();
}

describe('ConnectionTable', () => {
  const r = new FlowRecord();

  it('stores an entry once per original tuple and zone, stamping each change with a new version', () => {
    const t = ConnectionTable.create({ capacity: 16 });
    assert.equal(t.version, 0);
    t.upsert(makeFlow(r, 6, '192.0.2.1', 40000, '198.51.100.2', 22));
    t.upsert(makeFlow(r, 6, '192.0.2.1', 40000, '198.51.100.2', 22));
    t.upsert(makeFlow(r, 6, '192.0.2.1', 40000, '198.51.100.2', 22, 7));
    t.upsert(makeFlow(r, 6, '2001:db8::1', 40000, '2001:db8::2', 22));
    assert.equal(t.size, 3);
    assert.equal(t.version, 4);
    assert.deepEqual(collect(t, Scan.Snapshot, 0, t.version), [
      'tcp 192.0.2.1:40000 -> 198.51.100.2:22',
      'tcp 192.0.2.1:40000 -> 198.51.100.2:22 zone 7',
      'tcp [2001:db8::1]:40000 -> [2001:db8::2]:22',
    ]);
  });

  it('keeps a tombstone for a destroyed entry and hands it out in the delta, not the snapshot', () => {
    const t = ConnectionTable.create({ capacity: 16 });
    t.upsert(makeFlow(r, 17, '192.0.2.1', 53, '198.51.100.2', 53));
    t.upsert(makeFlow(r, 6, '192.0.2.1', 1, '198.51.100.2', 2));
    const v0 = t.version;
    assert.equal(t.remove(makeFlow(r, 17, '192.0.2.1', 53, '198.51.100.2', 53)), 0);
    assert.equal(t.remove(makeFlow(r, 17, '192.0.2.1', 53, '198.51.100.2', 53)), -1, 'second destroy is a no-op');
    t.upsert(makeFlow(r, 6, '192.0.2.9', 1, '198.51.100.2', 2));
    assert.equal(t.size, 2);
    assert.equal(t.tombstones, 1);
    assert.deepEqual(collect(t, Scan.Snapshot, 0, v0), ['tcp 192.0.2.1:1 -> 198.51.100.2:2']);
    assert.deepEqual(collect(t, Scan.Delta, v0, t.version), ['tcp 192.0.2.9:1 -> 198.51.100.2:2', 'udp 192.0.2.1:53 -> 198.51.100.2:53 (destroyed)']);
  });

  it('snapshot(V0) plus delta(V0, V1) describe the table at V1', () => {
    const t = ConnectionTable.create({ capacity: 64 });
    for (let i = 0; i < 20; i++) t.upsert(makeFlow(r, 6, '192.0.2.1', 1000 + i, '198.51.100.2', 22));
    const v0 = t.version;
    for (let i = 0; i < 5; i++) t.remove(makeFlow(r, 6, '192.0.2.1', 1000 + i, '198.51.100.2', 22));
    for (let i = 5; i < 8; i++) {
      makeFlow(r, 6, '192.0.2.1', 1000 + i, '198.51.100.2', 22);
      r.setU32(R_MARK, 9);
      t.upsert(r);
    }
    const snap = collect(t, Scan.Snapshot, 0, v0);
    const delta = collect(t, Scan.Delta, v0, t.version);
    assert.equal(snap.length, 12, 'changed and destroyed entries left the snapshot');
    assert.equal(delta.length, 8);
    assert.equal(snap.length + delta.filter((d) => !d.endsWith('(destroyed)')).length, t.size);
  });

  it('reuses reclaimed tombstone slots and revives a tombstone that comes back', () => {
    const t = ConnectionTable.create({ capacity: 2 });
    t.upsert(makeFlow(r, 6, '192.0.2.1', 1, '198.51.100.2', 2));
    t.upsert(makeFlow(r, 6, '192.0.2.1', 3, '198.51.100.2', 4));
    t.remove(makeFlow(r, 6, '192.0.2.1', 1, '198.51.100.2', 2));
    assert.throws(() => t.upsert(makeFlow(r, 6, '192.0.2.1', 5, '198.51.100.2', 6)), TableFullError);
    t.upsert(makeFlow(r, 6, '192.0.2.1', 1, '198.51.100.2', 2));
    assert.equal(t.tombstones, 0);
    t.remove(makeFlow(r, 6, '192.0.2.1', 1, '198.51.100.2', 2));
    assert.equal(t.reclaim(t.version - 1), 0, 'a tombstone newer than the watermark stays');
    assert.equal(t.reclaim(t.version), 1);
    t.upsert(makeFlow(r, 6, '192.0.2.1', 5, '198.51.100.2', 6));
    assert.equal(t.size, 2);
    assert.equal(t.find(makeFlow(r, 6, '192.0.2.1', 1, '198.51.100.2', 2)), -1);
  });

  it('tells the writer what version an upserted key had before, or -1 for a new key', () => {
    const t = ConnectionTable.create({ capacity: 8 });
    t.upsert(makeFlow(r, 6, '192.0.2.1', 1, '198.51.100.2', 2));
    assert.equal(t.previousVersion, -1);
    t.upsert(makeFlow(r, 6, '192.0.2.1', 1, '198.51.100.2', 2));
    assert.equal(t.previousVersion, 1);
    t.remove(makeFlow(r, 6, '192.0.2.1', 1, '198.51.100.2', 2));
    t.upsert(makeFlow(r, 6, '192.0.2.1', 1, '198.51.100.2', 2));
    assert.equal(t.previousVersion, 3, 'a revived tombstone reports the version of its destroy');
  });

  it('says clearly that it is full instead of crashing', () => {
    const t = ConnectionTable.create({ capacity: 3 });
    for (let i = 0; i < 3; i++) t.upsert(makeFlow(r, 6, '192.0.2.1', i, '198.51.100.2', 2));
    assert.throws(
      () => t.upsert(makeFlow(r, 6, '192.0.2.1', 99, '198.51.100.2', 2)),
      /connection table is full \(3 entries\); raise the table capacity; the entry was not stored/,
    );
    assert.equal(t.size, 3);
  });

  it('stores extensions only for entries that have them and frees them when dropped', () => {
    const t = ConnectionTable.create({ capacity: 8, extCapacity: 1 });
    makeFlow(r, 6, '192.0.2.1', 21, '198.51.100.2', 21);
    r.addExt(ExtFlag.Helper);
    r.u8.set(Buffer.from('ftp'), RECORD_BYTES + X_HELPER);
    const slot = t.upsert(r);
    const c = t.cursor().reset(Scan.Snapshot, 0, t.version);
    assert.ok(c.next());
    assert.equal(c.slot, slot);
    assert.ok(c.view.hasExt(ExtFlag.Helper));
    assert.equal(Buffer.from(c.view.u8.subarray(c.view.ext + X_HELPER, c.view.ext + X_HELPER + 3)).toString(), 'ftp');
    makeFlow(r, 6, '192.0.2.1', 22, '198.51.100.2', 22);
    r.addExt(ExtFlag.Labels);
    r.setExtU8(X_LABELS, 1);
    assert.throws(() => t.upsert(r), /full \(1 extensions\)/);
    makeFlow(r, 6, '192.0.2.1', 21, '198.51.100.2', 21);
    t.upsert(r);
    makeFlow(r, 6, '192.0.2.1', 22, '198.51.100.2', 22);
    r.addExt(ExtFlag.Labels);
    t.upsert(r);
  });

  it('costs at most 128 bytes per entry without extensions', () => {
    const t = ConnectionTable.create({ capacity: 100_000 });
    for (let i = 0; i < 100_000; i++) t.upsert(makeFlow(r, 17, '192.0.2.1', i & 0xffff, i < 65536 ? '198.51.100.2' : '198.51.100.3', 53));
    assert.equal(t.size, 100_000);
    assert.ok(t.usedBytes / t.size <= 128, `${t.usedBytes / t.size} bytes per entry`);
  });

  it('lets a reader on another thread see every change of a concurrent writer, never a torn record', async function () {
    this.timeout(30000);
    const t = ConnectionTable.create({ capacity: 4096 });
    const worker = new Worker(join(__dirname, 'table-writer.worker.js'), { workerData: { sab: t.sab, rounds: 200 } });
    const done = new Promise<void>((resolve, reject) => {
      worker.once('error', reject);
      worker.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`writer exited ${code}`))));
    });
    let finished = false;
    void done.then(() => (finished = true));
    let reads = 0;
    let torn = 0;
    const c = t.cursor();
    while (!finished) {
      c.reset(Scan.Snapshot, 0, t.version);
      while (c.next()) {
        // The writer keeps timeout === sport * 3 + round; a torn read breaks it.
        const sport = c.view.origSport;
        const timeout = c.view.u32At(R_TIMEOUT);
        const mark = c.view.mark;
        if (!c.stable()) continue;
        reads++;
        if (timeout !== sport * 3 + mark) torn++;
      }
      await new Promise((res) => setImmediate(res));
    }
    await done;
    assert.equal(torn, 0);
    assert.ok(reads > 0);
    assert.equal(t.size, 1000);
    assert.equal(t.version, 200 * 1000);
  });
});
