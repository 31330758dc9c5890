import 'reflect-metadata';
import assert from 'node:assert/strict';
import { ConnectionTable, Scan } from '../../../plugin/connection-table';
import { isEstablishedTcp } from '../../../plugin/established-tcp';
import { FlowRecord } from '../../../plugin/flow-view';
import { MessageKind, PeerMessage, StartMessage } from '../../../plugin/peer-protocol';
import { encodeTableToBuffer } from '../../../plugin/snapshot-encoder';
import { SnapshotDecoder } from '../../../plugin/snapshot-decoder';
import { SnapshotKind } from '../../../plugin/snapshot-format';
import { SAVE_BOUND_MS } from '../../../plugin/source-migration';
import { flowMatches } from '../../../plugin/flow-filter';
import { FakeClock } from './fakes/fake-clock';
import { entryText } from './fakes/fake-kernel';
import { FakeConnection, FakeNetwork } from './fakes/fake-peer-network';
import { Host, hostPair, Pair, PORT, put, sessionOf, startHost, stopPair, tcp, udp, vm, VM_UUID, VM_V4, vmOnly } from './lab';

/** Entries of the VM on A besides the lab's own: UDP and established TCP, one after the other in A's table. */
const EXTRA = 3000;
/** How long each snapshot chunk with entries takes on the wire (a slow link; the kernel here is instant). */
const CHUNK_MS = 200;

const udpFlow = (i: number): FlowRecord => udp(VM_V4, 10_000 + i, '198.51.100.60', 53, { timeout: 30 });
const tcpFlow = (i: number, state?: number): FlowRecord => tcp('198.51.100.61', 10_000 + i, VM_V4, 443, state === undefined ? {} : { state });

/** What one message on the source's side of the link carried. */
interface Sent {
  kind: MessageKind;
  established?: boolean;
  /** Entries in a snapshot chunk, and how many of them are established TCP. */
  entries?: number;
  establishedEntries?: number;
}

describe('migration engine: a switchover during the snapshot sends what matters first (import order)', () => {
  let pair: Pair;
  let clock: FakeClock;
  let net: FakeNetwork;
  let a: Host;
  let b: Host;
  let wire: Sent[];

  beforeEach(async () => {
    pair = await hostPair({ registerOnB: true });
    ({ clock, net, a, b } = pair);
    for (let i = 0; i < EXTRA; i++) a.kernel.put(i % 2 === 0 ? udpFlow(i) : tcpFlow(i));
    wire = [];
    net.listenerBeforeSend = (m: PeerMessage) => {
      wire.push(sentOf(m));
      if (m.kind !== MessageKind.SnapshotChunk || m.bytes.length === 0) return Promise.resolve();
      return new Promise((r) => clock.after(CHUNK_MS, r));
    };
  });

  afterEach(() => stopPair(pair));

  it('the changes since the snapshot go first, then its established TCP entries (tcp-established lifts the drop), then the rest; B ends exact', async () => {
    await b.engine.prepareIncoming(vm, { source: a.peerText, readyWhen: 'tcp-established' });
    await clock.run(CHUNK_MS / 2);
    assert.equal(sessionOf(b).state, 'precopy');
    // After the snapshot's version: an entry the first chunk carried changes
    // (no longer established), one of the snapshot's tail goes, one is new.
    a.kernel.put(tcpFlow(1, 5));
    assert.ok(a.kernel.delete(udpFlow(EXTRA - 2)));
    a.kernel.put(tcpFlow(EXTRA + 1));

    // QEMU's switchover: the VM pauses on A, the snapshot is not across.
    const blob = a.vmstate.save(VM_UUID);
    await clock.run(SAVE_BOUND_MS);
    const loading = b.vmstate.load(VM_UUID, await blob);
    await clock.run(b.config.loadTimeoutMs);
    await loading;
    assert.ok(b.blocker.isBlocked(VM_UUID), 'the VM resumed on B with its traffic dropped');

    for (let i = 0; i < 100 && b.blocker.isBlocked(VM_UUID); i++) await clock.run(10);
    assert.ok(!b.blocker.isBlocked(VM_UUID), 'the drop lifted');
    // Lifted before the snapshot's tail is in: the established flows are, exactly as on A.
    assert.equal(sessionOf(b).state, 'precopy', 'the drop lifted only once the whole snapshot was in');
    const established = (h: Host): string[] => {
      const out: string[] = [];
      h.kernel.forEach((r) => {
        if (flowMatches(vmOnly, r) && isEstablishedTcp(r)) out.push(entryText(r));
      });
      return out.sort();
    };
    assert.ok(established(a).length >= EXTRA / 2, `A holds ${established(a).length} established TCP entries`);
    assert.deepEqual(established(b), established(a), 'B holds every established TCP entry of the VM when the drop lifts');
    assert.ok(b.kernel.texts(vmOnly).length < a.kernel.texts(vmOnly).length, 'the snapshot\'s rest was still on its way');

    for (let i = 0; i < 100 && sessionOf(b).state !== 'ready'; i++) await clock.run(50);
    assert.equal(sessionOf(b).state, 'ready');
    assert.deepEqual(b.kernel.texts(vmOnly), a.kernel.texts(vmOnly), 'B ends exact: the change, the deletion and the new entry included');

    // On the wire: chunks, the changes, the snapshot's established entries, the mark, the rest, its end, the Final.
    const kinds = wire.map((w) => (w.established ? 'mark' : MessageKind[w.kind]));
    const changes = kinds.indexOf('Changes');
    const mark = kinds.indexOf('mark');
    const last = wire.findIndex((w) => w.kind === MessageKind.SnapshotChunk && w.entries === -1);
    const final = kinds.indexOf('Final');
    assert.ok(changes > 0 && mark > changes && last > mark && final > last, kinds.join(' '));
    const between = wire.slice(changes + 1, mark).filter((w) => (w.entries ?? 0) > 0);
    assert.ok(between.length > 0 && between.every((w) => w.entries === w.establishedEntries), 'only established TCP entries between the changes and the mark');
    const after = wire.slice(mark + 1, last + 1).filter((w) => (w.entries ?? 0) > 0);
    assert.ok(after.length > 0 && after.every((w) => w.establishedEntries === 0), 'no established TCP entry after the mark');
    assert.ok(a.log.at('info').some((m) => /switchover before the snapshot ended/.test(m)));
    assert.ok(b.log.at('info').some((m) => /established TCP entries imported ahead/.test(m)));
  });

  it('with the snapshot across before the switchover, nothing changes: no mark, the Final after the snapshot', async () => {
    net.listenerBeforeSend = (m: PeerMessage) => {
      wire.push(sentOf(m));
      return Promise.resolve();
    };
    await b.engine.prepareIncoming(vm, { source: a.peerText, readyWhen: 'tcp-established' });
    await clock.run(0);
    assert.equal(sessionOf(b).state, 'streaming');
    await b.vmstate.load(VM_UUID, await a.vmstate.save(VM_UUID));
    assert.ok(!b.blocker.isBlocked(VM_UUID));
    assert.ok(!wire.some((w) => w.established));
    assert.deepEqual(b.kernel.texts(vmOnly), a.kernel.texts(vmOnly));
  });
});

/** The snapshot as the source sent it so far, decoded, to count what each chunk carried. */
let staging: ConnectionTable | null = null;
let decoder: SnapshotDecoder | null = null;
function sentOf(m: PeerMessage): Sent {
  if (m.kind !== MessageKind.SnapshotChunk) return { kind: m.kind };
  if (m.established) return { kind: m.kind, established: true };
  if (m.last) {
    decoder = staging = null;
    return { kind: m.kind, entries: -1 };
  }
  if (!decoder || !staging) {
    staging = ConnectionTable.create({ capacity: 4 * EXTRA, extCapacity: 4 * EXTRA });
    decoder = new SnapshotDecoder({ maxEntries: 4 * EXTRA, staging, kind: SnapshotKind.Snapshot });
  }
  const from = staging.version;
  decoder.write(m.bytes);
  let entries = 0;
  let establishedEntries = 0;
  const cur = staging.cursor().reset(Scan.Delta, from, staging.version);
  while (cur.next()) {
    entries++;
    if (isEstablishedTcp(cur.view)) establishedEntries++;
  }
  return { kind: m.kind, entries, establishedEntries };
}

describe('migration engine: a hostile source cannot misuse the hand-over inside the snapshot', () => {
  const rogue = { host: '192.0.2.66', port: PORT };
  let clock: FakeClock;
  let b: Host;
  let bBefore: string[];
  let table: ConnectionTable;
  let conn: FakeConnection;

  beforeEach(async () => {
    clock = new FakeClock();
    const net = new FakeNetwork(clock);
    b = await startHost(net, clock, 'B', '192.0.2.20');
    put(b, [tcp('198.51.100.9', 40100, '192.0.2.88', 22)]);
    bBefore = b.kernel.texts();
    table = ConnectionTable.create({ capacity: 64 });
    table.upsert(tcp('198.51.100.9', 40001, VM_V4, 22));
    const accepted = new Promise<FakeConnection>((r) => net.listenRaw(rogue, r));
    const prepared = b.engine.prepareIncoming(vm, { source: `${rogue.host}:${rogue.port}` });
    conn = await accepted;
    const start = (await conn.receive()) as StartMessage;
    await conn.send({ ...start, kind: MessageKind.Offer, snapshotVersion: table.version, announcedEntries: table.size, resumeFrom: null });
    await prepared;
    // The snapshot's first chunk: the whole entry set, but no trailer yet (the snapshot goes on).
    const snap = encodeTableToBuffer(table, { scan: Scan.Snapshot, from: 0, to: table.version });
    await conn.send({ kind: MessageKind.SnapshotChunk, seq: 0, last: false, bytes: snap.bytes.subarray(0, snap.bytes.length - 9) });
    await clock.run(0);
  });

  afterEach(() => b.engine.stop());

  const changes = (from: number, entries: FlowRecord[]): { kind: MessageKind.Changes; from: number; to: number; bytes: Uint8Array } => {
    for (const f of entries) table.upsert(f);
    return { kind: MessageKind.Changes, from, to: table.version, bytes: encodeTableToBuffer(table, { scan: Scan.Delta, from, to: table.version }).bytes };
  };

  it('changes inside the snapshot that do not start at its version fail the session and roll B back', async () => {
    await conn.send(changes(0, [tcp('198.51.100.9', 40002, VM_V4, 22)]));
    await clock.run(0);
    assert.equal(sessionOf(b).state, 'failed');
    assert.match(sessionOf(b).error, /during the snapshot of version/);
    assert.deepEqual(b.kernel.texts(), bBefore, 'B is back where it was');
    assert.ok(!b.blocker.isBlocked(VM_UUID));
  });

  it('a second hand-over after more of the snapshot fails the session and rolls B back', async () => {
    const v0 = table.version;
    await conn.send(changes(v0, [tcp('198.51.100.9', 40003, VM_V4, 22)]));
    await conn.send({ kind: MessageKind.SnapshotChunk, seq: 1, last: false, established: true, bytes: new Uint8Array(0) });
    const v1 = table.version;
    await conn.send(changes(v1, [tcp('198.51.100.9', 40004, VM_V4, 22)]));
    await clock.run(0);
    assert.equal(sessionOf(b).state, 'failed');
    assert.match(sessionOf(b).error, /during the snapshot of version/);
    assert.deepEqual(b.kernel.texts(), bBefore);
    assert.ok(!b.blocker.isBlocked(VM_UUID));
  });

  it('the hand-over is confined like any change: a foreign entry in it is refused and never written', async () => {
    const foreign = tcp('198.51.100.66', 1234, '192.0.2.88', 22);
    await conn.send(changes(table.version, [foreign, tcp('198.51.100.9', 40005, VM_V4, 22)]));
    await clock.run(0);
    assert.equal(sessionOf(b).state, 'precopy');
    assert.ok(!b.kernel.has(foreign));
    assert.ok(b.kernel.has(tcp('198.51.100.9', 40005, VM_V4, 22)));
    assert.equal(sessionOf(b).refused, 1);
    assert.ok(b.blocker.isBlocked(VM_UUID), 'the drop stays: readiness is not met');
  });
});
