import { strict as assert } from 'node:assert';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import sinon from 'sinon';
import { CodecError, SnapshotFormatError } from '../../../plugin/codec-error';
import { ConnectionTable, Scan } from '../../../plugin/connection-table';
import { FlowRecord } from '../../../plugin/flow-view';
import { R_ORIG_SPORT, R_TIMEOUT } from '../../../plugin/flow';
import { applyStaged, decodeSnapshot, SnapshotDecoder } from '../../../plugin/snapshot-decoder';
import { encodeTable, encodeTableToBuffer, SnapshotEncoder } from '../../../plugin/snapshot-encoder';
import { SnapshotKind } from '../../../plugin/snapshot-format';
import { readSnapshot } from '../../../plugin/snapshot-reader';
import { deltaBytes, keyOf, sampleDeltaTable, sampleFlows, sampleTable, snapshotBytes, tableEntries } from './sample-flows';

const LIMITS = { maxEntries: 1000 };
const FIXTURES = resolve(__dirname, '../../../../test/fixtures/snapshot');


function expectedDelta(): Map<string, { live: boolean; bytes: number[] }> {
  const { table, from } = sampleDeltaTable();
  const all = tableEntries(table);
  const c = table.cursor().reset(Scan.Delta, from, table.version);
  const keep = new Set<string>();
  while (c.next()) keep.add(keyOf(c.view));
  return new Map([...all].filter(([k]) => keep.has(k)));
}

function assertSameEntries(got: ConnectionTable, want: Map<string, { live: boolean; bytes: number[] }>): void {
  const have = tableEntries(got);
  assert.deepEqual([...have.keys()].sort(), [...want.keys()].sort());
  for (const [k, w] of want) {
    const h = have.get(k)!;
    assert.equal(h.live, w.live, `liveness of ${k}`);
    if (w.live) assert.deepEqual(h.bytes, w.bytes, `bytes of ${k}`);
  }
}

function decodeError(bytes: Uint8Array): SnapshotFormatError {
  try {
    decodeSnapshot(bytes, LIMITS);
  } catch (err) {
    if (err instanceof SnapshotFormatError) return err;
    throw new Error(`expected SnapshotFormatError, got ${String(err)}`);
  }
  throw new Error('decoding succeeded but should have failed');
}

describe('binary snapshot codec', () => {
  describe('round trip', () => {
    it('carries every entry kind of a snapshot field for field', () => {
      const src = sampleTable();
      const d = decodeSnapshot(snapshotBytes(), LIMITS);
      assert.equal(d.kind, SnapshotKind.Snapshot);
      assert.equal(d.entries, sampleFlows().length);
      assert.equal(d.to, src.version);
      assertSameEntries(d.table, tableEntries(src));
    });

    for (const [name, rec] of sampleFlows()) {
      it(`carries a lone ${name} entry through a one-shot encoder`, () => {
        const chunks: Uint8Array[] = [];
        const enc = new SnapshotEncoder((c) => {
          chunks.push(c);
        });
        rec.setU32(4, 5);
        enc.begin(SnapshotKind.Snapshot, 0, 5, 1);
        enc.writeFlow(rec, false);
        const sum = enc.finish();
        const d = decodeSnapshot(Buffer.concat(chunks), LIMITS);
        assert.equal(d.entries, 1);
        assert.equal(sum.bytes, Buffer.concat(chunks).length);
        const one = ConnectionTable.create({ capacity: 1 });
        one.upsert(rec);
        assertSameEntries(d.table, tableEntries(one));
      });
    }

    it('carries a delta: updates, and deletions as tombstones', () => {
      const d = decodeSnapshot(deltaBytes(), LIMITS);
      assert.equal(d.kind, SnapshotKind.Delta);
      assert.equal(d.tombstones, 2);
      assertSameEntries(d.table, expectedDelta());
    });

    it('applies a decoded delta onto a copy of the source state', () => {
      const target = sampleTable();
      const sum = applyStaged(decodeSnapshot(deltaBytes(), LIMITS).table, target);
      assert.deepEqual(sum, { upserted: 1, removed: 2, absent: 0 });
      const { table } = sampleDeltaTable();
      const want = new Map([...tableEntries(table)].filter(([, e]) => e.live));
      const got = new Map([...tableEntries(target)].filter(([, e]) => e.live));
      assert.deepEqual(got, want);
    });

    it('streams through an async sink in small chunks and reads back from the chunk stream', async () => {
      const t = sampleTable();
      const chunks: Uint8Array[] = [];
      const sink = sinon.spy(async (c: Uint8Array) => {
        await new Promise((r) => setImmediate(r));
        chunks.push(c);
      });
      const sum = await encodeTable(t, { scan: Scan.Snapshot, from: 0, to: t.version }, sink, 512);
      assert.ok(sink.callCount > 2, 'several chunks');
      assert.equal(sum.bytes, chunks.reduce((n, c) => n + c.length, 0));
      const d = await readSnapshot(chunks, LIMITS);
      assert.equal(d.format, 'binary');
      assertSameEntries(d.table, tableEntries(t));
    });

    it('starts with small chunks and doubles them up to the chunk size; the stream reads back the same', async () => {
      const t = ConnectionTable.create({ capacity: 4096 });
      const samples = sampleFlows().map(([, r]) => r);
      for (let i = 0; i < 3000; i++) {
        const r = new FlowRecord().copyFrom(samples[i % samples.length]);
        r.setU16(R_ORIG_SPORT, 1024 + i);
        t.upsert(r);
      }
      const chunks: Uint8Array[] = [];
      const sum = await encodeTable(t, { scan: Scan.Snapshot, from: 0, to: t.version }, (c) => void chunks.push(Uint8Array.from(c)), 64 * 1024, 1024);
      const sizes = chunks.map((c) => c.length);
      // A chunk is flushed when the next entry might not fit: each is at most its budget and close to it.
      const budgets = sizes.map((_, i) => Math.min(64 * 1024, 1024 << i));
      for (let i = 0; i < sizes.length - 1; i++) assert.ok(sizes[i] <= budgets[i] && sizes[i] > budgets[i] / 2, `chunk ${i}: ${sizes[i]} bytes of ${budgets[i]} (${sizes.join(', ')})`);
      assert.ok(sizes.length > 7 && budgets[sizes.length - 2] === 64 * 1024, `reaches the full size (${sizes.join(', ')})`);
      assert.equal(sum.bytes, sizes.reduce((a, b) => a + b, 0));
      const d = await readSnapshot(chunks, { ...LIMITS, maxEntries: 4096 });
      assertSameEntries(d.table, tableEntries(t));
    });

    it('refuses a stream of another kind than the reader expects, at its header', () => {
      const t = sampleTable();
      const { bytes } = encodeTableToBuffer(t, { scan: Scan.Delta, from: 0, to: t.version });
      const dec = new SnapshotDecoder({ ...LIMITS, kind: SnapshotKind.Snapshot });
      assert.throws(() => dec.write(bytes.subarray(0, 40)), (e: unknown) => e instanceof SnapshotFormatError && /expected a snapshot, the header says delta/.test(e.message));
      const ok = new SnapshotDecoder({ ...LIMITS, kind: SnapshotKind.Delta });
      ok.write(bytes);
      assert.equal(ok.end().kind, SnapshotKind.Delta);
    });

    it('applies the filter, and stops at the requested version', () => {
      const t = sampleTable();
      const to = 5;
      const { summary } = encodeTableToBuffer(t, { scan: Scan.Snapshot, from: 0, to, filter: (v) => v.family === 2 });
      assert.ok(summary.entries > 0 && summary.entries < to);
    });

    it('rejects an entry whose version is outside the stream range at encode time', () => {
      const enc = new SnapshotEncoder(() => undefined);
      enc.begin(SnapshotKind.Delta, 10, 20);
      const r = sampleFlows()[0][1];
      r.setU32(4, 5);
      assert.throws(() => enc.writeFlow(r, false), /outside the delta's range/);
    });
  });

  describe('streaming decode', () => {
    it('accepts every split of a file into two and three chunks', () => {
      const bytes = deltaBytes();
      const want = expectedDelta();
      for (let i = 0; i <= bytes.length; i++) {
        const d = new SnapshotDecoder(LIMITS);
        d.write(bytes.subarray(0, i));
        d.write(bytes.subarray(i));
        assertSameEntries(d.end().table, want);
      }
      for (let i = 0; i <= bytes.length; i += 7) {
        for (let j = i; j <= bytes.length; j += 5) {
          const d = new SnapshotDecoder(LIMITS);
          d.write(bytes.subarray(0, i));
          d.write(bytes.subarray(i, j));
          d.write(bytes.subarray(j));
          assert.equal(d.end().entries, want.size);
        }
      }
    });

    it('accepts a byte-at-a-time feed', () => {
      const bytes = snapshotBytes();
      const d = new SnapshotDecoder(LIMITS);
      for (let i = 0; i < bytes.length; i++) d.write(bytes.subarray(i, i + 1));
      assert.equal(d.end().entries, sampleFlows().length);
    });
  });

  describe('rejects bad input, and changes nothing', () => {
    it('truncated at every byte offset: typed error, target untouched', () => {
      const bytes = deltaBytes();
      const target = sampleTable();
      const before = tableEntries(target);
      const version = target.version;
      for (let n = 0; n < bytes.length; n++) {
        const err = decodeError(bytes.subarray(0, n));
        assert.ok(err.problem === 'truncated' || (n < 8 && err.problem === 'magic'), `cut at ${n}: ${err.message}`);
        assert.doesNotMatch(err.message, /\n/);
      }
      assert.equal(target.version, version);
      assert.deepEqual(tableEntries(target), before);
    });

    it('names the entry and byte of a truncation', () => {
      const bytes = snapshotBytes();
      const err = decodeError(bytes.subarray(0, 100));
      assert.match(err.message, /^snapshot is truncated: entry 2 of 18 \(byte \d+\) ends past the end of input \(byte 100\)$/);
      assert.equal(err.entry, 2);
    });

    it('a flipped byte anywhere is an error', () => {
      const bytes = deltaBytes();
      for (let i = 0; i < bytes.length; i++) {
        for (const mask of [0x01, 0x80, 0xff]) {
          const bad = Buffer.from(bytes);
          bad[i] ^= mask;
          decodeError(bad);
        }
      }
    });

    it('says "checksum mismatch" when only the data is corrupt', () => {
      const bytes = Buffer.from(snapshotBytes());
      bytes[32 + 1 + 20] ^= 0x10; // an address byte of the first entry
      const err = decodeError(bytes);
      assert.equal(err.problem, 'checksum');
      assert.match(err.message, /^checksum mismatch: snapshot is corrupt/);
    });

    it('an unknown format version', () => {
      const bytes = Buffer.from(snapshotBytes());
      bytes[8] = 7;
      const err = decodeError(bytes);
      assert.equal(err.problem, 'version');
      assert.equal(err.message, 'unsupported snapshot format version 7 (this ctmigrate reads version 1)');
    });

    it('a declared count above the limit, before staging anything', () => {
      const bytes = Buffer.from(snapshotBytes());
      bytes.writeUInt32LE(2_000_000, 28);
      const create = sinon.spy(ConnectionTable, 'create');
      try {
        const d = new SnapshotDecoder({ maxEntries: 100 });
        assert.throws(() => d.write(bytes.subarray(0, 32)), (e: unknown) => e instanceof SnapshotFormatError && e.problem === 'limit');
        assert.equal(create.callCount, 0);
      } finally {
        create.restore();
      }
    });

    it('more entries than the limit when the count was not declared', () => {
      const t = sampleTable();
      const chunks: Uint8Array[] = [];
      const enc = new SnapshotEncoder((c) => {
        chunks.push(c);
      });
      enc.begin(SnapshotKind.Snapshot, 0, t.version);
      const c = t.cursor().reset(Scan.Snapshot, 0, t.version);
      while (c.next()) enc.writeFlow(c.view, false);
      enc.finish();
      assert.throws(
        () => decodeSnapshot(Buffer.concat(chunks), { maxEntries: 5 }),
        (e: unknown) => e instanceof SnapshotFormatError && e.problem === 'limit' && /entry 6 \(byte \d+\) is past the limit of 5 entries/.test(e.message),
      );
    });

    it('trailing garbage', () => {
      const err = decodeError(Buffer.concat([snapshotBytes(), Buffer.from([0])]));
      assert.equal(err.problem, 'trailing');
    });

    it('not a snapshot at all', () => {
      assert.equal(decodeError(Buffer.from('{"family":"ipv4"}\n')).problem, 'magic');
    });

    it('stays failed after the first error', () => {
      const d = new SnapshotDecoder(LIMITS);
      assert.throws(() => d.write(Buffer.from('nope nope nope nope nope nope nope nope')), SnapshotFormatError);
      assert.throws(() => d.write(snapshotBytes()), SnapshotFormatError);
      assert.throws(() => d.end(), SnapshotFormatError);
    });

    it('fuzz: random and mutated inputs only ever raise SnapshotFormatError', function () {
      this.timeout(20000);
      let seed = 0x2545f491;
      const rand = (n: number): number => {
        seed ^= seed << 13;
        seed ^= seed >>> 17;
        seed ^= seed << 5;
        return (seed >>> 0) % n;
      };
      const good = deltaBytes();
      for (let it = 0; it < 4000; it++) {
        let input: Buffer;
        switch (it % 4) {
          case 0:
            input = Buffer.from(Array.from({ length: rand(600) }, () => rand(256)));
            break;
          case 1: {
            // A valid header, then noise.
            input = Buffer.concat([good.subarray(0, 32), Buffer.from(Array.from({ length: rand(800) }, () => rand(256)))]);
            break;
          }
          case 2: {
            input = Buffer.from(good);
            for (let k = 1 + rand(4); k > 0; k--) input[rand(input.length)] = rand(256);
            break;
          }
          default: {
            const at = rand(good.length);
            input = Buffer.concat([good.subarray(0, at), Buffer.from([rand(256)]), good.subarray(at + rand(2))]);
          }
        }
        const d = new SnapshotDecoder({ maxEntries: 50 });
        try {
          let off = 0;
          while (off < input.length) {
            const n = 1 + rand(97);
            d.write(input.subarray(off, off + n));
            off += n;
          }
          d.end();
        } catch (err) {
          assert.ok(err instanceof SnapshotFormatError, `iteration ${it}: ${String(err)}`);
          assert.ok(err instanceof CodecError);
          assert.doesNotMatch(err.message, /\n/);
        }
      }
    });
  });

  describe('golden fixtures (format version 1)', () => {
    it('decodes the committed snapshot fixture and encodes the same bytes', () => {
      const file = readFileSync(resolve(FIXTURES, 'v1-snapshot.ctsnap'));
      assert.deepEqual(Buffer.from(snapshotBytes()), file, 'the encoder still writes version 1 byte for byte');
      const d = decodeSnapshot(file, LIMITS);
      assertSameEntries(d.table, tableEntries(sampleTable()));
    });

    it('decodes the committed delta fixture', () => {
      const file = readFileSync(resolve(FIXTURES, 'v1-delta.ctsnap'));
      assert.deepEqual(Buffer.from(deltaBytes()), file);
      const d = decodeSnapshot(file, LIMITS);
      assert.equal(d.kind, SnapshotKind.Delta);
      assertSameEntries(d.table, expectedDelta());
    });
  });

  it('keeps a changed entry consistent while encoding (torn reads are retried)', () => {
    const t = sampleTable();
    const r = new FlowRecord().copyFrom(sampleFlows()[0][1]);
    let writes = 0;
    const { bytes } = encodeTableToBuffer(t, {
      scan: Scan.Delta,
      from: 0,
      to: t.version + 1,
      filter: (v) => {
        // A writer lands on the slot being read, once.
        if (writes === 0 && keyOf(v) === keyOf(r)) {
          writes++;
          r.setU32(R_TIMEOUT, 1);
          t.upsert(r);
        }
        return true;
      },
    });
    const d = decodeSnapshot(bytes, LIMITS);
    const got = tableEntries(d.table).get(keyOf(r))!;
    assert.equal(got.live, true);
    const c = d.table.cursor().reset(Scan.Delta, 0, d.table.version);
    while (c.next()) if (keyOf(c.view) === keyOf(r)) assert.equal(c.view.timeout, 1);
  });
});
