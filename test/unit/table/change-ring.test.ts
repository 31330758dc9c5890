import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { ConnectionTable, Scan } from '../../../plugin/connection-table';
import { R_FLAGS, R_MARK, R_SEQ, R_TIMEOUT, R_VERSION_HI, R_VERSION_LO, RecordFlag } from '../../../plugin/flow';
import { FlowRecord } from '../../../plugin/flow-view';
import { makeFlow } from './flow-builder';

const LIVE_OR_TOMB = RecordFlag.Live | RecordFlag.Tombstone;

/** Stable read of a slot's flags and version, straight from the buffer. */
function readSlot(t: ConnectionTable, s: number): { flags: number; version: number } {
  const rec = t.recordOffset(s);
  for (;;) {
    const seq = t.waitStable(rec);
    const flags = t.u8[rec + R_FLAGS];
    const version = t.u32[(rec + R_VERSION_LO) >> 2] + t.u16[(rec + R_VERSION_HI) >> 1] * 0x1_0000_0000;
    if (Atomics.load(t.u32, (rec + R_SEQ) >> 2) === seq) return { flags, version };
  }
}

/** The slots a Delta(from, to] must yield, found by reading every slot: the oracle. */
function oracle(t: ConnectionTable, from: number, to: number): Set<number> {
  const out = new Set<number>();
  for (let s = 0; s < t.capacity; s++) {
    const { flags, version } = readSlot(t, s);
    if ((flags & LIVE_OR_TOMB) !== 0 && version > from && version <= to) out.add(s);
  }
  return out;
}

/** Run a Delta; returns the slots in yield order and their versions. Fails on a repeated slot. */
function delta(t: ConnectionTable, from: number, to: number): { slots: number[]; versions: number[]; ring: boolean } {
  const c = t.cursor().reset(Scan.Delta, from, to);
  const ring = c.usesRing;
  const slots: number[] = [];
  const versions: number[] = [];
  const seen = new Set<number>();
  while (c.next()) {
    assert.ok(!seen.has(c.slot), `slot ${c.slot} yielded twice in delta(${from}, ${to})`);
    seen.add(c.slot);
    slots.push(c.slot);
    versions.push(c.view.version);
  }
  return { slots, versions, ring };
}

function sorted(xs: Iterable<number>): number[] {
  return [...xs].sort((a, b) => a - b);
}

/** xorshift32: a repeatable random stream. */
function rng(seed: number): (n: number) => number {
  let x = seed >>> 0 || 1;
  return (n) => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) % n;
  };
}

describe('ConnectionTable change ring', () => {
  const r = new FlowRecord();
  const key = (i: number): FlowRecord => makeFlow(r, 6, '192.0.2.1', i, '198.51.100.2', 22);

  it('sizes the ring to a power of two of at most a quarter of the capacity (1024 .. 1 << 20) and counts what it writes', () => {
    assert.equal(ConnectionTable.create({ capacity: 1 }).ringSize, 1024);
    assert.equal(ConnectionTable.create({ capacity: 16 }).ringSize, 1024);
    assert.equal(ConnectionTable.create({ capacity: 100_000 }).ringSize, 16384);
    assert.equal(ConnectionTable.create({ capacity: 1 << 18 }).ringSize, 1 << 16);
    const t = ConnectionTable.create({ capacity: 16 });
    t.upsert(key(1));
    const used = t.usedBytes;
    t.upsert(key(1));
    assert.equal(t.usedBytes, used + 4, 'each new version writes one more ring word');
    assert.ok(t.byteLength >= 1024 * 4 + 16 * 124);
  });

  it('yields the same entries as a walk over every slot, for random workloads and many ranges', () => {
    for (const seed of [1, 7, 42, 1234]) {
      const rnd = rng(seed);
      const t = ConnectionTable.create({ capacity: 4096 });
      assert.equal(t.ringSize, 1024);
      let ringChecks = 0;
      let scanChecks = 0;
      const check = (from: number, to: number): void => {
        const got = delta(t, from, to);
        // The oracle walks the slots in order: same entries, same order.
        assert.deepEqual(got.slots, [...oracle(t, from, to)], `seed ${seed}: delta(${from}, ${to}) ${got.ring ? 'from the ring' : 'by scan'}`);
        for (let i = 0; i < got.versions.length; i++) assert.ok(got.versions[i] > from && got.versions[i] <= to);
        if (got.ring) ringChecks++;
        else scanChecks++;
      };
      for (let op = 1; op <= 6000; op++) {
        // Half the changes hit 16 hot entries (the same slot changes again and
        // again); removes make tombstones, reclaim frees old ones (their slots
        // get reused), an upsert of a tombstone revives it.
        const i = rnd(2) === 0 ? rnd(16) : rnd(3000);
        if (rnd(4) === 0) t.remove(key(i));
        else {
          key(i).setU32(R_MARK, op);
          t.upsert(r);
        }
        if (op % 700 === 0) t.reclaim(t.version - 300);
        if (op % 250 === 0) {
          const now = t.version;
          check(now, now);
          check(now - 1, now);
          check(now - 10, now);
          check(now - 10, now - 5);
          check(Math.max(0, now - t.ringSize + 1), now); // the oldest range the ring covers
          check(Math.max(0, now - t.ringSize), now); // one too old: scan
          check(Math.max(0, now - 2000), now);
          check(0, now);
          for (let k = 0; k < 20; k++) {
            const to = now - rnd(Math.min(now, 1500) + 1);
            check(to - rnd(to + 1), to);
          }
        }
      }
      assert.ok(ringChecks > 100, `${ringChecks} deltas from the ring`);
      assert.ok(scanChecks > 20, `${scanChecks} deltas by scan`);
    }
  });

  it('walks the slots instead when the writer laps the ring before the delta has read it', () => {
    const t = ConnectionTable.create({ capacity: 4096 });
    for (let i = 0; i < 2000; i++) t.upsert(key(i));
    const v0 = t.version;
    for (let i = 0; i < 300; i++) t.upsert(key(i * 3));
    const v1 = t.version;
    const c = t.cursor().reset(Scan.Delta, v0, v1);
    assert.ok(c.usesRing);
    for (let k = 0; k < t.ringSize; k++) t.upsert(key(1 + (k % 2) * 3));
    const got: number[] = [];
    while (c.next()) got.push(c.slot);
    assert.ok(!c.usesRing, 'the cursor noticed the lap and walked the slots');
    assert.deepEqual(got, [...oracle(t, v0, v1)]);
    assert.equal(got.length, 300);
  });

  it('keeps yielding without repeats or losses when the writer laps the ring mid-delta', () => {
    const t = ConnectionTable.create({ capacity: 4096 });
    for (let i = 0; i < 2000; i++) t.upsert(key(i));
    const v0 = t.version;
    for (let i = 0; i < 300; i++) {
      if (i % 5 === 0) t.remove(key(i * 3));
      else t.upsert(key(i * 3));
    }
    const v1 = t.version;
    const atReset = oracle(t, v0, v1);
    const c = t.cursor().reset(Scan.Delta, v0, v1);
    assert.ok(c.usesRing);
    const yielded = new Set<number>();
    const take = (): boolean => {
      if (!c.next()) return false;
      assert.ok(!yielded.has(c.slot), `slot ${c.slot} yielded twice`);
      yielded.add(c.slot);
      return true;
    };
    for (let k = 0; k < 100; k++) assert.ok(take());
    // The writer goes round the ring: it changes entries already yielded,
    // entries not yet reached, and others.
    for (let k = 0; k < t.ringSize + 50; k++) t.upsert(key((k * 7) % 2000));
    while (take());
    for (const s of yielded) assert.ok(atReset.has(s), `slot ${s} was not in the delta`);
    for (const s of oracle(t, v0, v1)) assert.ok(yielded.has(s), `slot ${s} still in the delta was lost`);
    assert.ok(yielded.size > 100 && yielded.size < 300);
  });

  for (const mode of ['ring', 'scan'] as const) {
    it(`retry() re-reads the current entry and next() carries on after it (${mode})`, () => {
      const t = ConnectionTable.create({ capacity: 64 });
      for (let i = 0; i < 10; i++) t.upsert(key(i));
      // Push version 0 out of the ring for the scan case.
      if (mode === 'scan') for (let k = 0; k <= t.ringSize; k++) t.upsert(key(0));
      const to = t.version;
      const c = t.cursor().reset(Scan.Delta, 0, to);
      assert.equal(c.usesRing, mode === 'ring');
      assert.ok(c.next());
      const first = c.slot;
      const mark = c.view.mark;
      assert.ok(c.stable());
      assert.ok(c.retry(), 'an unchanged entry still qualifies');
      assert.equal(c.slot, first);
      assert.equal(c.view.mark, mark);
      // A write lands on the current entry: it leaves the range (its version is now > to).
      key(c.view.origSport).setU32(R_MARK, 77);
      t.upsert(r);
      assert.ok(!c.stable());
      assert.ok(!c.retry());
      const rest: number[] = [];
      while (c.next()) rest.push(c.slot);
      assert.deepEqual(sorted([first, ...rest]), sorted(new Set([...oracle(t, 0, to), first])), 'nothing after the changed entry was skipped');
      assert.equal(rest.length, 9);
    });
  }

  it('retry() takes a rewritten entry that still qualifies (a scan up to a future version)', () => {
    const t = ConnectionTable.create({ capacity: 64 });
    for (let i = 0; i < 3; i++) t.upsert(key(i));
    const c = t.cursor().reset(Scan.Delta, 0, Number.MAX_SAFE_INTEGER);
    assert.ok(!c.usesRing, 'a range past the current version is scanned');
    assert.ok(c.next());
    const slot = c.slot;
    key(c.view.origSport).setU32(R_MARK, 5);
    t.upsert(r);
    assert.ok(!c.stable());
    assert.ok(c.retry());
    assert.ok(c.stable());
    assert.equal(c.slot, slot);
    assert.equal(c.view.mark, 5);
    let n = 1;
    while (c.next()) n++;
    assert.equal(n, 3);
  });

  it('lets a reader on another thread take deltas while a writer churns: no torn entry, no repeat, no loss', async function () {
    this.timeout(60000);
    const t = ConnectionTable.create({ capacity: 4096 });
    const progress = new SharedArrayBuffer(4);
    const done = new Int32Array(progress);
    const ops = 400_000;
    const worker = new Worker(join(__dirname, 'table-churn.worker.js'), { workerData: { sab: t.sab, ops, keys: 2000, seed: 99, progress } });
    const exited = new Promise<void>((resolve, reject) => {
      worker.once('error', reject);
      worker.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`writer exited ${code}`))));
    });
    const rnd = rng(5);
    const spans = [1, 10, 100, 500, 900, 1020, 1200, 5000];
    let deltas = 0;
    let fromRing = 0;
    let lapped = 0;
    let entries = 0;
    let retries = 0;
    const c = t.cursor();
    while (Atomics.load(done, 0) < ops || deltas < 50) {
      const now = t.version;
      const to = now - rnd(3);
      const from = Math.max(0, to - spans[rnd(spans.length)]);
      c.reset(Scan.Delta, from, to);
      const ring = c.usesRing;
      const seen = new Set<number>();
      while (c.next()) {
        assert.ok(!seen.has(c.slot), `slot ${c.slot} yielded twice in delta(${from}, ${to})`);
        seen.add(c.slot);
        let sport = 0;
        let timeout = 0;
        let mark = 0;
        let version = 0;
        let gone = false;
        for (;;) {
          sport = c.view.origSport;
          timeout = c.view.u32At(R_TIMEOUT);
          mark = c.view.mark;
          version = c.view.version;
          if (c.stable()) break;
          retries++;
          if (!c.retry()) {
            gone = true;
            break;
          }
        }
        if (gone) continue;
        entries++;
        assert.equal(timeout, sport * 3 + mark, 'torn entry');
        assert.ok(version > from && version <= to, `version ${version} outside (${from}, ${to}]`);
      }
      // Every slot still in the range now was in it all along, so it must have come out.
      for (const s of oracle(t, from, to)) assert.ok(seen.has(s), `slot ${s} lost from delta(${from}, ${to}) (${ring ? 'ring' : 'scan'})`);
      deltas++;
      if (ring) fromRing++;
      if (ring && !c.usesRing) lapped++; // the writer lapped the ring before the cursor had read it
      if (deltas % 16 === 0) await new Promise((res) => setImmediate(res));
    }
    await exited;
    assert.ok(fromRing > 0, `${fromRing} of ${deltas} deltas from the ring`);
    assert.ok(entries > 0);
    // After the writer is done, the ring and the oracle agree exactly.
    const now = t.version;
    for (const span of spans) {
      const from = Math.max(0, now - span);
      assert.deepEqual(sorted(delta(t, from, now).slots), sorted(oracle(t, from, now)));
    }
    console.log(`      ${deltas} deltas (${fromRing} from the ring, ${lapped} lapped while collecting), ${entries} entries, ${retries} retries`);
  });
});
