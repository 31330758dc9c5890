import 'reflect-metadata';
import assert from 'node:assert/strict';
import { ConnectionTable, Scan } from '../../../plugin/connection-table';
import { FlowRecord } from '../../../plugin/flow-view';
import { MessageKind, StartMessage } from '../../../plugin/peer-protocol';
import { encodeTableToBuffer } from '../../../plugin/snapshot-encoder';
import { FakeClock } from './fakes/fake-clock';
import { entryText } from './fakes/fake-kernel';
import { FakeConnection, FakeNetwork } from './fakes/fake-peer-network';
import { Host, PORT, put, sessionOf, startHost, tcp, udp, vm, VM_UUID, VM_V4, VM_V6, vmOnly } from './lab';

/** What the rogue source announces for the VM: two of its own entries. */
const vmEntries = (): FlowRecord[] => [tcp('198.51.100.9', 40001, VM_V4, 22), udp(VM_V6, 123, '2001:db8:99::123', 123)];
/** Holes it tries to open for others: another guest on B, and B itself. */
const holes = (): FlowRecord[] => [tcp('198.51.100.66', 1234, '192.0.2.88', 22), tcp('198.51.100.66', 1235, '192.0.2.20', 7471)];
/** B's own entry for another guest. */
const bOwn = (): FlowRecord => tcp('198.51.100.9', 40100, '192.0.2.88', 22);
/** An entry for the VM's address B had before the session. */
const bStale = (): FlowRecord => tcp('198.51.100.9', 39999, VM_V4, 22, { timeout: 11 });

describe('migration engine: a hostile source cannot reach beyond the VM on B', () => {
  const rogue = { host: '192.0.2.66', port: PORT };
  let clock: FakeClock;
  let net: FakeNetwork;
  let b: Host;
  let bBefore: string[];
  let table: ConnectionTable;
  let conn: FakeConnection;
  let start: StartMessage;

  beforeEach(async () => {
    clock = new FakeClock();
    net = new FakeNetwork(clock);
    b = await startHost(net, clock, 'B', '192.0.2.20');
    put(b, [bOwn(), bStale()]);
    bBefore = b.kernel.texts();
    table = ConnectionTable.create({ capacity: 64 });
    for (const f of [...vmEntries(), ...holes()]) table.upsert(f);
    const accepted = new Promise<FakeConnection>((r) => net.listenRaw(rogue, r));
    const prepared = b.engine.prepareIncoming(vm, { source: `${rogue.host}:${rogue.port}` });
    conn = await accepted;
    const first = await conn.receive();
    assert.equal(first.kind, MessageKind.Start);
    start = first as StartMessage;
    await conn.send({ ...start, kind: MessageKind.Offer, snapshotVersion: table.version, announcedEntries: table.size, resumeFrom: null });
    await prepared;
    const snap = encodeTableToBuffer(table, { scan: Scan.Snapshot, from: 0, to: table.version });
    await conn.send({ kind: MessageKind.SnapshotChunk, seq: 0, last: true, bytes: snap.bytes });
    await clock.run(0);
  });

  afterEach(async () => {
    await b.engine.stop();
  });

  it('refuses snapshot and change entries for foreign addresses, counts them, and never writes them', async () => {
    assert.deepEqual(b.kernel.texts(vmOnly), [...vmEntries(), bStale()].map(entryText).sort(), 'only the VM entries are imported');
    for (const h of holes()) assert.ok(!b.kernel.has(h), 'no hole opened on B');
    assert.equal(sessionOf(b).refused, 2);
    assert.equal(sessionOf(b).committed, 2);
    assert.ok(b.log.at('warn').some((m) => /refused 2 entries that do not belong to the VM/.test(m)));

    const v0 = table.version;
    table.upsert(tcp('198.51.100.66', 1236, '192.0.2.88', 80));
    table.upsert(tcp('198.51.100.9', 40500, VM_V4, 443));
    // Deletions too: B's own entry for another guest, and the VM-address entry B had before.
    table.upsert(bOwn());
    table.remove(bOwn());
    table.upsert(bStale());
    table.remove(bStale());
    const delta = encodeTableToBuffer(table, { scan: Scan.Delta, from: v0, to: table.version });
    await conn.send({ kind: MessageKind.Changes, from: v0, to: table.version, bytes: delta.bytes });
    await clock.run(0);

    assert.ok(b.kernel.has(bOwn()), "a foreign tombstone does not delete B's entry");
    assert.ok(b.kernel.has(bStale()), 'a tombstone deletes only what this session imported');
    assert.ok(b.kernel.has(tcp('198.51.100.9', 40500, VM_V4, 443)));
    assert.ok(!b.kernel.has(tcp('198.51.100.66', 1236, '192.0.2.88', 80)));
    assert.equal(sessionOf(b).refused, 4);
    assert.equal(sessionOf(b).state, 'streaming');
    assert.ok(b.blocker.isBlocked(VM_UUID));
  });

  it('a final delta whose digest does not match fails the session and rolls B back', async () => {
    const v0 = table.version;
    table.upsert(tcp('198.51.100.9', 40600, VM_V4, 22));
    const delta = encodeTableToBuffer(table, { scan: Scan.Delta, from: v0, to: table.version });
    await conn.send({ kind: MessageKind.Final, from: v0, to: table.version, digest: new Uint8Array(32).fill(7), bytes: delta.bytes });
    await clock.run(0);
    const s = sessionOf(b);
    assert.equal(s.state, 'failed');
    assert.match(s.error, /final delta does not match its digest; nothing of it imported/);
    assert.deepEqual(b.kernel.texts(), bBefore, 'B is back where it was');
    assert.ok(!b.blocker.isBlocked(VM_UUID));
    const close = conn.other.sent.find((m) => m.kind === MessageKind.Close);
    assert.ok(close, 'B tells the source the session failed');
  });

  it('a malformed change frame fails the session and rolls B back; the daemon stays up', async () => {
    await conn.send({ kind: MessageKind.Changes, from: 1, to: 2, bytes: new Uint8Array([1, 2, 3, 4, 5]) });
    await clock.run(0);
    assert.equal(sessionOf(b).state, 'failed');
    assert.deepEqual(b.kernel.texts(), bBefore);
    assert.ok(!b.blocker.isBlocked(VM_UUID));
  });
});
