import 'reflect-metadata';
import assert from 'node:assert/strict';
import { MessageKind, SnapshotChunkMessage } from '../../../plugin/peer-protocol';
import { decodeReference } from '../../../plugin/vmstate-reference';
import { RETRACK_AFTER_MS } from '../../../plugin/migration-engine';
import { RELEASE_AFTER_ANSWER_MS } from '../../../plugin/session';
import { FakeClock } from './fakes/fake-clock';
import { FakeNetwork } from './fakes/fake-peer-network';
import { CHANGE_INTERVAL_MS, eventKinds, foreignFlows, Host, put, sessionOf, startHost, statePath, tcp, udp, vm, VM_UUID, VM_V4, VM_V6, vmFlows, vmOnly } from './lab';

describe('migration engine: a VM migrates from host A to host B', () => {
  let clock: FakeClock;
  let net: FakeNetwork;
  let a: Host;
  let b: Host;

  beforeEach(async () => {
    clock = new FakeClock();
    net = new FakeNetwork(clock);
    a = await startHost(net, clock, 'A', '192.0.2.10');
    b = await startHost(net, clock, 'B', '192.0.2.20');
    put(a, vmFlows());
    put(a, foreignFlows());
    put(b, [tcp('198.51.100.9', 40100, '192.0.2.88', 22)]);
    await a.engine.register(vm);
    await b.engine.register(vm);
  });

  afterEach(async () => {
    await a.engine.stop();
    await b.engine.stop();
  });

  it('pre-copies the snapshot and the changes, then carries the residual delta through vmstate', async () => {
    const bForeign = b.kernel.others(vmOnly);
    const info = await b.engine.prepareIncoming(vm, { source: a.peerText });
    assert.equal(info.role, 'destination');
    assert.equal(info.peer, a.peerText);
    assert.ok(b.blocker.isBlocked(VM_UUID), 'B drops the VM traffic before any state arrives');

    await clock.run(0);
    assert.deepEqual(b.kernel.texts(vmOnly), a.kernel.texts(vmOnly), 'after the snapshot B holds exactly the VM entries of A');
    assert.equal(b.kernel.texts(vmOnly).length, vmFlows().length);
    assert.ok(b.blocker.isBlocked(VM_UUID), 'policy complete: still blocked after the snapshot');
    assert.equal(sessionOf(a).state, 'streaming');
    assert.equal(sessionOf(b).state, 'streaming');

    // Churn while the VM runs: a new flow, an update, a close.
    a.kernel.put(tcp('198.51.100.9', 40200, VM_V4, 22));
    a.kernel.put(tcp('198.51.100.9', 40001, VM_V4, 22, { timeout: 7 }));
    a.kernel.delete(udp(VM_V4, 5353, '198.51.100.53', 53));
    await clock.run(CHANGE_INTERVAL_MS);
    assert.deepEqual(b.kernel.texts(vmOnly), a.kernel.texts(vmOnly), 'the change stream carries new, updated and deleted entries');
    assert.ok(b.blocker.isBlocked(VM_UUID));

    // Changes the ticks have not shipped yet when the VM stops.
    a.kernel.put(udp(VM_V6, 9999, '2001:db8:99::9', 53));
    a.kernel.delete(tcp('2001:db8:99::9', 40002, VM_V6, 443));
    a.kernel.put(tcp(VM_V4, 41000, '203.0.113.5', 80, { state: 7, timeout: 10 }));
    await clock.run(0);
    const atStop = a.kernel.texts(vmOnly);

    const blob = await a.vmstate.save(VM_UUID);
    assert.ok(blob.length < 200, `the vmstate blob is a reference (${blob.length} bytes), not the state`);
    const ref = decodeReference(blob);
    assert.equal(ref.kind, 'session');
    await b.vmstate.load(VM_UUID, blob);

    assert.ok(!b.blocker.isBlocked(VM_UUID), 'B lifts the drop once the state is in');
    assert.deepEqual(b.kernel.texts(vmOnly), atStop, 'B holds the VM entries of A at stop, deletions included');
    assert.deepEqual(b.kernel.others(vmOnly), bForeign, "B's other entries are untouched");
    const bi = sessionOf(b);
    assert.equal(bi.state, 'ready');
    assert.equal(bi.refused, 0);
    assert.ok(bi.readyAt > 0 && bi.cutoverAt > 0);
    assert.equal(bi.version, ref.kind === 'session' ? ref.finalVersion : -1);
    assert.equal(sessionOf(a).state, 'cutover');
    assert.equal(sessionOf(a).sent, bi.received);

    const foreignOnA = a.kernel.others(vmOnly);
    await a.engine.finish(VM_UUID, 'migrated');
    // B reports what happened during Load() a moment after answering it.
    await clock.run(RELEASE_AFTER_ANSWER_MS);
    assert.deepEqual(a.kernel.texts(vmOnly), [], "A deletes the VM's entries after the migration");
    assert.deepEqual(a.kernel.others(vmOnly), foreignOnA, "A keeps everyone else's entries");
    assert.deepEqual(b.kernel.texts(vmOnly), atStop, "deleting A's entries does not reach B");

    assert.deepEqual(statePath(a, 'source'), ['preparing', 'precopy', 'streaming', 'cutover', 'migrated']);
    assert.deepEqual(statePath(b, 'destination'), ['preparing', 'precopy', 'streaming', 'cutover', 'ready']);
    assert.equal(eventKinds(b).filter((k) => k === 'ready').length, 1);
    assert.ok(!eventKinds(a).includes('failed') && !eventKinds(b).includes('failed'));
    assert.equal(a.feeds.started.length, 1, "A tracks the VM with one feed from registration on");
    assert.ok(a.feeds.started.every((f) => !f.stopped), "the feed belongs to the registration, not the session");
    await a.engine.unregister(VM_UUID);
    assert.ok(a.feeds.started.every((f) => f.stopped), "unregistering stops it");
  });

  it("B does not follow the VM's entries while it imports them, and does again a moment after the migration", async () => {
    assert.equal(b.feeds.started.filter((f) => !f.stopped).length, 1, 'B tracks the registered VM');
    await b.engine.prepareIncoming(vm, { source: a.peerText });
    assert.equal(b.feeds.started.filter((f) => !f.stopped).length, 0, 'no feed on B while the session imports');
    await b.engine.register(vm);
    assert.equal(b.feeds.started.filter((f) => !f.stopped).length, 0, "libvirt's registration during the import starts none either");
    await clock.run(CHANGE_INTERVAL_MS * 3);
    await b.vmstate.load(VM_UUID, await a.vmstate.save(VM_UUID));
    await clock.run(RETRACK_AFTER_MS / 2);
    assert.equal(b.feeds.started.filter((f) => !f.stopped).length, 0, 'none right after the resume');
    await clock.run(RETRACK_AFTER_MS);
    assert.equal(b.feeds.started.filter((f) => !f.stopped).length, 1, 'B tracks the VM again: it runs here now');
  });

  it('without vmstate, cut-over ships the delta on the peer channel and B stays blocked until it lands', async () => {
    await b.engine.prepareIncoming(vm, { source: a.peerText });
    await clock.run(CHANGE_INTERVAL_MS * 5);
    a.kernel.put(tcp('198.51.100.9', 40300, VM_V4, 22));
    a.kernel.delete(tcp('198.51.100.9', 40005, VM_V4, 80));
    await clock.run(CHANGE_INTERVAL_MS * 5);
    assert.ok(b.blocker.isBlocked(VM_UUID), 'still blocked while pre-copy runs');
    a.kernel.put(udp(VM_V4, 6000, '198.51.100.9', 6000));
    await clock.run(0);
    assert.ok(b.blocker.isBlocked(VM_UUID));

    const atStop = a.kernel.texts(vmOnly);
    const cut = await a.engine.cutover(VM_UUID);
    assert.equal(cut.state, 'cutover');
    await clock.run(0);
    assert.ok(!b.blocker.isBlocked(VM_UUID), 'the delta landed: drop lifted without any Load()');
    assert.deepEqual(b.kernel.texts(vmOnly), a.kernel.texts(vmOnly));
    assert.equal(sessionOf(b).state, 'ready');
    assert.deepEqual(await a.engine.cutover(VM_UUID).then((s) => s.version), cut.version, 'a second cut-over is a no-op');

    await a.engine.finish(VM_UUID, 'migrated');
    await b.engine.finish(VM_UUID, 'migrated');
    assert.equal(sessionOf(a).state, 'migrated');
    assert.equal(sessionOf(b).state, 'ready');
    assert.deepEqual(a.kernel.texts(vmOnly), []);
    assert.deepEqual(b.kernel.texts(vmOnly), atStop);
    assert.ok(!b.blocker.isBlocked(VM_UUID));
  });

  it('a cut-over that comes while the snapshot is still on the wire waits for it', async () => {
    // A slow link: every frame from A takes a turn of the event loop.
    const slow = (): Promise<void> => new Promise((r) => setImmediate(r));
    const prep = b.engine.prepareIncoming(vm, { source: a.peerText });
    await Promise.resolve();
    for (const c of net.connectionsOf(a.ip)) c.beforeSend = slow;
    await prep;
    assert.equal(sessionOf(b).state, 'precopy', 'the snapshot is still on its way');
    const ref = await a.vmstate.save(VM_UUID);
    await b.vmstate.load(VM_UUID, ref);
    assert.equal(sessionOf(b).state, 'ready', sessionOf(b).error);
    assert.deepEqual(b.kernel.texts(vmOnly), a.kernel.texts(vmOnly));
    assert.ok(!b.blocker.isBlocked(VM_UUID));
  });

  it('keeps every frame within the limit the destination announced: snapshot chunks, split changes, split residual delta', async () => {
    const small = new FakeNetwork(clock, 64 * 1024);
    const a2 = await startHost(small, clock, 'A2', '192.0.2.11');
    const b2 = await startHost(small, clock, 'B2', '192.0.2.21');
    try {
      for (let i = 0; i < 2000; i++) a2.kernel.put(tcp('198.51.100.9', 10000 + i, VM_V4, 22));
      await a2.engine.register(vm);
      await b2.engine.register(vm);
      await b2.engine.prepareIncoming(vm, { source: a2.peerText });
      await clock.run(0);
      assert.equal(sessionOf(b2).state, 'streaming', sessionOf(b2).error);
      assert.equal(b2.kernel.texts(vmOnly).length, 2000);
      for (let i = 0; i < 1500; i++) a2.kernel.put(tcp('198.51.100.9', 10000 + i, VM_V4, 22, { timeout: 99 }));
      await clock.run(CHANGE_INTERVAL_MS);
      assert.deepEqual(b2.kernel.texts(vmOnly), a2.kernel.texts(vmOnly));
      for (let i = 0; i < 1500; i++) a2.kernel.put(tcp('198.51.100.9', 10000 + i, VM_V4, 22, { timeout: 42 }));
      await clock.run(0);
      const blob = await a2.vmstate.save(VM_UUID);
      await b2.vmstate.load(VM_UUID, blob);
      assert.deepEqual(b2.kernel.texts(vmOnly), a2.kernel.texts(vmOnly));
      assert.equal(sessionOf(b2).state, 'ready');
      const [link] = small.connectionsOf(a2.ip);
      const kinds = link.sent.map((m) => m.kind);
      assert.ok(kinds.filter((k) => k === MessageKind.SnapshotChunk).length > 1, 'the snapshot went in several chunks');
      const chunks = link.sent.filter((m): m is SnapshotChunkMessage => m.kind === MessageKind.SnapshotChunk);
      const last = chunks[chunks.length - 1];
      assert.ok(last.last && last.bytes.length === 0 && chunks.slice(0, -1).every((c) => !c.last && c.bytes.length > 0), 'each chunk went out when full; an empty one says last');
      assert.ok(chunks[0].bytes.length <= 64 * 1024, 'the first chunk is small');
      assert.ok(kinds.filter((k) => k === MessageKind.Changes).length > 2, 'big change sets went in several frames');
    } finally {
      await a2.engine.stop();
      await b2.engine.stop();
    }
  });

  it("restarting B's daemon after the migration keeps the VM's entries", async () => {
    await b.engine.prepareIncoming(vm, { source: a.peerText });
    await clock.run(0);
    await a.vmstate.save(VM_UUID).then((blob) => b.vmstate.load(VM_UUID, blob));
    await a.engine.finish(VM_UUID, 'migrated');
    const migrated = b.kernel.texts(vmOnly);
    assert.equal(migrated.length, vmFlows().length);
    await b.engine.stop();
    assert.deepEqual(b.kernel.texts(vmOnly), migrated, 'the VM runs on B now: its entries stay');
    assert.ok(!b.blocker.isBlocked(VM_UUID));
  });

  it('stopping B during pre-copy rolls the incoming session back', async () => {
    const before = b.kernel.texts();
    await b.engine.prepareIncoming(vm, { source: a.peerText });
    await clock.run(0);
    await b.engine.stop();
    assert.deepEqual(b.kernel.texts(), before);
    assert.ok(!b.blocker.isBlocked(VM_UUID));
    assert.equal(sessionOf(b).error, 'daemon stopping');
  });
});
