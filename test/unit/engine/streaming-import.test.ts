import 'reflect-metadata';
import assert from 'node:assert/strict';
import { parseAddress } from '../../../plugin/address';
import { ConnectionTable, Scan } from '../../../plugin/connection-table';
import { AF_INET, ExtFlag, L4, X_MASTER_DPORT, X_MASTER_DST, X_MASTER_FAMILY, X_MASTER_L4PROTO, X_MASTER_SPORT, X_MASTER_SRC } from '../../../plugin/flow';
import { FlowRecord } from '../../../plugin/flow-view';
import { MessageKind, StartMessage } from '../../../plugin/peer-protocol';
import { encodeTableToBuffer } from '../../../plugin/snapshot-encoder';
import { FakeClock } from './fakes/fake-clock';
import { FakeConnection, FakeNetwork } from './fakes/fake-peer-network';
import { Host, PORT, put, sessionOf, startHost, tcp, udp, vm, VM_UUID, VM_V4, vmOnly } from './lab';

/** A related entry (FTP data) of the VM whose master is `master` (an IPv4 TCP entry). */
function related(master: FlowRecord, sport: number): FlowRecord {
  const r = new FlowRecord().copyFrom(tcp('198.51.100.9', sport, VM_V4, 20, { state: 2 }));
  r.setExtU8(X_MASTER_FAMILY, AF_INET);
  r.setExtU8(X_MASTER_L4PROTO, L4.TCP);
  const src = parseAddress('198.51.100.9').bytes;
  const dst = parseAddress(VM_V4).bytes;
  for (let i = 0; i < 4; i++) {
    r.setExtU8(X_MASTER_SRC + i, src[i]);
    r.setExtU8(X_MASTER_DST + i, dst[i]);
  }
  r.setExtU16(X_MASTER_SPORT, master.origSport);
  r.setExtU16(X_MASTER_DPORT, master.origDport);
  r.addExt(ExtFlag.Master);
  return r;
}

/** Split `bytes` into `n` pieces at arbitrary offsets (not on entry boundaries). */
function pieces(bytes: Uint8Array, n: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  const step = Math.ceil(bytes.length / n) + 7;
  for (let at = 0; at < bytes.length; at += step) out.push(bytes.subarray(at, Math.min(bytes.length, at + step)));
  return out;
}

describe('migration engine: B commits the snapshot chunk by chunk while it streams in', () => {
  const rogue = { host: '192.0.2.66', port: PORT };
  let clock: FakeClock;
  let net: FakeNetwork;
  let b: Host;
  let bBefore: string[];
  let conn: FakeConnection;

  /** B prepares for the VM; the test plays the source and offers `table`. */
  async function offer(table: ConnectionTable): Promise<void> {
    const accepted = new Promise<FakeConnection>((r) => net.listenRaw(rogue, r));
    const prepared = b.engine.prepareIncoming(vm, { source: `${rogue.host}:${rogue.port}` });
    conn = await accepted;
    const start = (await conn.receive()) as StartMessage;
    assert.equal(start.kind, MessageKind.Start);
    await conn.send({ ...start, kind: MessageKind.Offer, snapshotVersion: table.version, announcedEntries: table.size, resumeFrom: null });
    await prepared;
  }

  async function chunk(seq: number, bytes: Uint8Array, last: boolean): Promise<void> {
    await conn.send({ kind: MessageKind.SnapshotChunk, seq, last, bytes });
    await clock.run(0);
  }

  beforeEach(async () => {
    clock = new FakeClock();
    net = new FakeNetwork(clock);
    b = await startHost(net, clock, 'B', '192.0.2.20');
    put(b, [tcp('198.51.100.9', 40100, '192.0.2.88', 22), tcp('198.51.100.9', 39999, VM_V4, 22, { timeout: 11 })]);
    bBefore = b.kernel.texts();
  });

  afterEach(async () => {
    await b.engine.stop();
  });

  /** Hold every create at B's kernel: `held` has one release per waiting create; `release` lets them and all later ones through. */
  function holdCreates(): { held: Array<() => void>; release: () => void } {
    const held: Array<() => void> = [];
    b.conntrack.gate = () => new Promise<void>((r) => held.push(r));
    return {
      held,
      release: () => {
        b.conntrack.gate = null;
        for (const letThrough of held) letThrough();
      },
    };
  }

  function bigTable(n: number): ConnectionTable {
    const t = ConnectionTable.create({ capacity: n + Math.ceil(n / 50) + 16 });
    for (let i = 0; i < n; i++) {
      t.upsert(tcp('198.51.100.9', 10000 + i, VM_V4, 22));
      // A foreign entry now and then: refused, never written.
      if (i % 50 === 0) t.upsert(udp('198.51.100.66', 10000 + i, '192.0.2.88', 53));
    }
    return t;
  }

  it('entries of the first chunks are in the kernel before the last chunk arrives; refused ones never are', async () => {
    const table = bigTable(600);
    await offer(table);
    const snap = encodeTableToBuffer(table, { scan: Scan.Snapshot, from: 0, to: table.version });
    const parts = pieces(snap.bytes, 4);
    assert.equal(parts.length, 4);
    const seen: number[] = [];
    for (let i = 0; i < parts.length - 1; i++) {
      await chunk(i, parts[i], false);
      seen.push(b.kernel.texts(vmOnly).length);
      assert.equal(sessionOf(b).state, 'precopy', sessionOf(b).error);
    }
    assert.ok(seen[0] > 100, `the first chunk is committed at once (${seen[0]} entries)`);
    assert.ok(seen[2] > seen[1] && seen[1] > seen[0], `every chunk adds entries (${seen.join(', ')})`);
    assert.ok(seen[2] < 600, 'the last chunk still has entries to bring');
    assert.equal(sessionOf(b).committed, seen[2] - 1, 'committed counts what this session created (B had one VM entry of its own)');
    await chunk(parts.length - 1, parts[parts.length - 1], true);
    const s = sessionOf(b);
    assert.equal(s.state, 'streaming', s.error);
    assert.equal(s.committed, 600);
    assert.equal(s.refused, 12);
    assert.equal(s.received, 612);
    assert.equal(b.kernel.texts(vmOnly).length, 601);
    assert.equal(b.kernel.others(vmOnly).length, 1, 'no foreign entry reached the kernel');
    assert.ok(b.blocker.isBlocked(VM_UUID), 'policy complete: still blocked');
    assert.equal(b.log.at('warn').filter((m) => /refused 12 entries that do not belong to the VM/.test(m)).length, 1, 'one warning for the whole snapshot');
  });

  it('queues the next chunk for the kernel while the one before is still being written, never more than two at once', async () => {
    const table = bigTable(900);
    await offer(table);
    const snap = encodeTableToBuffer(table, { scan: Scan.Snapshot, from: 0, to: table.version });
    const parts = pieces(snap.bytes, 4);
    assert.equal(parts.length, 4);
    // Every create waits until the test lets it through.
    const { held, release } = holdCreates();
    await chunk(0, parts[0], false);
    assert.equal(held.length, 1, 'the first part is on its way in');
    await chunk(1, parts[1], false);
    assert.equal(held.length, 2, 'the second part is queued while the first is still being written');
    assert.equal(b.kernel.texts(vmOnly).length, 1, 'nothing of the session is in yet (B had one VM entry of its own)');
    await chunk(2, parts[2], false);
    assert.equal(held.length, 2, 'the third part waits until the first is in');
    held[0]();
    await clock.run(0);
    assert.equal(held.length, 3, 'the first is in: the third goes');
    assert.equal(sessionOf(b).state, 'precopy', sessionOf(b).error);
    release();
    await clock.run(0);
    await chunk(3, parts[3], true);
    const s = sessionOf(b);
    assert.equal(s.state, 'streaming', s.error);
    assert.equal(s.committed, 900);
    assert.equal(b.kernel.texts(vmOnly).length, 901);
  });

  it('a session that fails while two parts are on their way in removes both once they have landed', async () => {
    const table = bigTable(600);
    await offer(table);
    const snap = encodeTableToBuffer(table, { scan: Scan.Snapshot, from: 0, to: table.version });
    const bytes = Uint8Array.from(snap.bytes);
    bytes[bytes.length - 1] ^= 0xff; // the trailer's CRC: the last chunk fails the session
    const parts = pieces(bytes, 3);
    const { held, release } = holdCreates();
    await chunk(0, parts[0], false);
    await chunk(1, parts[1], false);
    assert.equal(held.length, 2);
    // The last chunk comes while both parts are still being written.
    await conn.send({ kind: MessageKind.SnapshotChunk, seq: 2, last: true, bytes: parts[2] });
    await clock.run(0);
    release();
    await clock.run(0);
    const s = sessionOf(b);
    assert.equal(s.state, 'failed');
    assert.match(s.error, /checksum mismatch/);
    assert.deepEqual(b.kernel.texts(), bBefore, 'both parts landed and were removed again; B keeps its own entry');
    assert.ok(!b.blocker.isBlocked(VM_UUID));
  });

  it('an abort while two parts are on their way in removes both once they have landed', async () => {
    const table = bigTable(600);
    await offer(table);
    const snap = encodeTableToBuffer(table, { scan: Scan.Snapshot, from: 0, to: table.version });
    const parts = pieces(snap.bytes, 3);
    const { held, release } = holdCreates();
    await chunk(0, parts[0], false);
    await chunk(1, parts[1], false);
    assert.equal(held.length, 2);
    const aborted = b.engine.abort(VM_UUID);
    await clock.run(0);
    assert.equal(sessionOf(b).state, 'failed');
    // The rollback waits for the writes in flight, then removes them with the rest.
    release();
    await aborted;
    await clock.run(0);
    assert.deepEqual(b.kernel.texts(), bBefore, 'both parts were taken out again; B keeps its own entry');
    assert.ok(!b.blocker.isBlocked(VM_UUID));
  });

  it('a last part that fails while the one before is still being written fails the session, and nothing is left behind', async () => {
    const table = bigTable(600);
    await offer(table);
    const snap = encodeTableToBuffer(table, { scan: Scan.Snapshot, from: 0, to: table.version });
    // The last chunk carries entries (as an older source sends it), and its write fails.
    const parts = pieces(snap.bytes, 3);
    const held: Array<() => void> = [];
    let calls = 0;
    // The first part goes in, the second is held, the last fails at once.
    b.conntrack.gate = () => {
      calls++;
      if (calls === 1) return Promise.resolve();
      if (calls === 3) return Promise.reject(new Error('writer job failed'));
      return new Promise<void>((r) => held.push(r));
    };
    const unhandled: unknown[] = [];
    const onUnhandled = (e: unknown): void => void unhandled.push(e);
    process.on('unhandledRejection', onUnhandled);
    try {
      await chunk(0, parts[0], false);
      await chunk(1, parts[1], false);
      await chunk(2, parts[2], true);
      assert.equal(calls, 3, 'the last part went out while the one before was held');
      assert.equal(held.length, 1);
      for (const letThrough of held) letThrough();
      await clock.run(0);
      await new Promise((r) => setImmediate(r));
    } finally {
      process.off('unhandledRejection', onUnhandled);
      b.conntrack.gate = null;
    }
    assert.deepEqual(unhandled, [], 'no rejection goes unhandled (the daemon would exit)');
    const s = sessionOf(b);
    assert.equal(s.state, 'failed');
    assert.match(s.error, /writer job failed/);
    assert.deepEqual(b.kernel.texts(), bBefore);
    assert.ok(!b.blocker.isBlocked(VM_UUID));
  });

  it('refuses a delta where the snapshot should be: nothing imported, the drop lifted', async () => {
    const table = bigTable(200);
    await offer(table);
    const delta = encodeTableToBuffer(table, { scan: Scan.Delta, from: 0, to: table.version });
    await chunk(0, delta.bytes, true);
    const s = sessionOf(b);
    assert.equal(s.state, 'failed');
    assert.match(s.error, /expected a snapshot, the header says delta/);
    assert.deepEqual(b.kernel.texts(), bBefore);
    assert.ok(!b.blocker.isBlocked(VM_UUID));
  });

  it('a snapshot whose checksum does not match at its end fails the session and removes what the earlier chunks committed', async () => {
    const table = bigTable(400);
    await offer(table);
    const snap = encodeTableToBuffer(table, { scan: Scan.Snapshot, from: 0, to: table.version });
    const bytes = Uint8Array.from(snap.bytes);
    bytes[bytes.length - 1] ^= 0xff; // the trailer's CRC
    const parts = pieces(bytes, 3);
    await chunk(0, parts[0], false);
    await chunk(1, parts[1], false);
    assert.ok(b.kernel.texts(vmOnly).length > 100, 'the first chunks were committed');
    await chunk(2, parts[2], true);
    const s = sessionOf(b);
    assert.equal(s.state, 'failed');
    assert.match(s.error, /checksum mismatch/);
    assert.deepEqual(b.kernel.texts(), bBefore, "B is back where it was, its own entry for the VM's address included");
    assert.ok(!b.blocker.isBlocked(VM_UUID));
    assert.ok(conn.other.sent.some((m) => m.kind === MessageKind.Close), 'B tells the source');
  });

  it('a malformed entry in a later chunk is refused before it is committed, and the session rolls back', async () => {
    const table = bigTable(300);
    await offer(table);
    const snap = encodeTableToBuffer(table, { scan: Scan.Snapshot, from: 0, to: table.version });
    const bytes = Uint8Array.from(snap.bytes);
    const at = Math.floor(bytes.length * 0.75);
    const parts = [bytes.subarray(0, Math.floor(bytes.length / 2)), bytes.subarray(Math.floor(bytes.length / 2))];
    parts[1][at - parts[0].length] = 0xee; // garbage somewhere in the second half
    await chunk(0, parts[0], false);
    assert.ok(b.kernel.texts(vmOnly).length > 100);
    await chunk(1, parts[1], true);
    assert.equal(sessionOf(b).state, 'failed');
    assert.deepEqual(b.kernel.texts(), bBefore);
    assert.ok(!b.blocker.isBlocked(VM_UUID));
  });

  it('defers related entries to the end of the snapshot: a master in a later chunk still goes first', async () => {
    const table = ConnectionTable.create({ capacity: 512 });
    const master = tcp('198.51.100.9', 40021, VM_V4, 21);
    // The related entry is encoded first (table order), its master only after 300 others.
    table.upsert(related(master, 40020));
    for (let i = 0; i < 300; i++) table.upsert(tcp('198.51.100.9', 10000 + i, VM_V4, 22));
    table.upsert(master);
    await offer(table);
    const snap = encodeTableToBuffer(table, { scan: Scan.Snapshot, from: 0, to: table.version });
    const parts = pieces(snap.bytes, 2);
    await chunk(0, parts[0], false);
    assert.ok(b.kernel.texts(vmOnly).length > 50, 'plain entries of the first chunk are in');
    assert.ok(!b.kernel.has(related(master, 40020)), 'the related entry waits for the end of the snapshot');
    assert.ok(!b.kernel.has(master));
    await chunk(1, parts[1], true);
    const s = sessionOf(b);
    assert.equal(s.state, 'streaming', s.error);
    assert.ok(b.kernel.has(master));
    assert.ok(b.kernel.has(related(master, 40020)), 'created after its master');
    assert.equal(s.committed, 302);
    assert.ok(!b.log.at('warn').some((m) => /kernel refused/.test(m)), b.log.at('warn').join('\n'));
  });

  it('an abort between chunks removes exactly what the earlier chunks committed, and the rest never comes in', async () => {
    const table = bigTable(300);
    await offer(table);
    const snap = encodeTableToBuffer(table, { scan: Scan.Snapshot, from: 0, to: table.version });
    const parts = pieces(snap.bytes, 3);
    await chunk(0, parts[0], false);
    assert.ok(b.kernel.texts(vmOnly).length > 50);
    await b.engine.abort(VM_UUID);
    await clock.run(0);
    await conn.send({ kind: MessageKind.SnapshotChunk, seq: 1, last: false, bytes: parts[1] }).catch(() => undefined);
    await clock.run(0);
    assert.equal(sessionOf(b).state, 'failed');
    assert.deepEqual(b.kernel.texts(), bBefore, 'nothing of the session is left, everything of B is');
    assert.ok(!b.blocker.isBlocked(VM_UUID));
  });
});
