import 'reflect-metadata';
import assert from 'node:assert/strict';
import sinon from 'sinon';
import { RETRACK_AFTER_MS } from '../../../plugin/migration-engine';
import { MessageKind, PeerMessage, PeerRole } from '../../../plugin/peer-protocol';
import { decodeReference, encodeReference } from '../../../plugin/vmstate-reference';
import { FakeClock } from './fakes/fake-clock';
import { FakeNetwork } from './fakes/fake-peer-network';
import { BLOCK_TIMEOUT_MS, CHANGE_INTERVAL_MS, eventKinds, foreignFlows, Host, put, sessionOf, startHost, tcp, vm, VM_UUID, VM_V4, vmFlows, vmOnly } from './lab';

describe('migration engine: a failed or cancelled migration leaves both hosts as they were', () => {
  let clock: FakeClock;
  let net: FakeNetwork;
  let a: Host;
  let b: Host;
  let aBefore: string[];
  let bBefore: string[];

  beforeEach(async () => {
    clock = new FakeClock();
    net = new FakeNetwork(clock);
    a = await startHost(net, clock, 'A', '192.0.2.10');
    b = await startHost(net, clock, 'B', '192.0.2.20');
    put(a, vmFlows());
    put(a, foreignFlows());
    // B already has an entry for the VM's address (left from before) and one of its own.
    put(b, [tcp('198.51.100.9', 39999, VM_V4, 22, { timeout: 11 }), tcp('198.51.100.9', 40100, '192.0.2.88', 22)]);
    await a.engine.register(vm);
    await b.engine.register(vm);
    aBefore = a.kernel.texts();
    bBefore = b.kernel.texts();
  });

  afterEach(async () => {
    sinon.restore();
    await a.engine.stop();
    await b.engine.stop();
  });

  /** Both kernels as they were, no drop left, B's session failed with `why`. */
  function assertRolledBack(why: RegExp): void {
    assert.deepEqual(b.kernel.texts(), bBefore, 'B holds none of the imported entries and keeps its own');
    assert.deepEqual(a.kernel.texts(), aBefore, "A's kernel is untouched");
    assert.ok(!b.blocker.isBlocked(VM_UUID), 'no drop left behind on B');
    const s = sessionOf(b);
    assert.equal(s.state, 'failed');
    assert.equal(s.blocked, false);
    assert.match(s.error, why);
    assert.ok(eventKinds(b).includes('failed'));
  }

  it('abort on B during pre-copy removes what was imported, lifts the drop, and fails A', async () => {
    await b.engine.prepareIncoming(vm, { source: a.peerText });
    await clock.run(0);
    a.kernel.put(tcp('198.51.100.9', 40400, VM_V4, 22));
    aBefore = a.kernel.texts();
    await clock.run(CHANGE_INTERVAL_MS);
    assert.ok(b.kernel.texts(vmOnly).length > 1, 'something was imported');
    await b.engine.abort(VM_UUID);
    await clock.run(0);
    assertRolledBack(/aborted/);
    assert.equal(sessionOf(a).state, 'failed');
    assert.ok(a.feeds.started.every((f) => !f.stopped), "A keeps tracking the VM, which still runs there");
    await assert.rejects(b.engine.abort(VM_UUID), /no open session/);
  });

  it('abort while a commit is on its way into the kernel still leaves nothing behind', async () => {
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    b.conntrack.gate = () => held;
    await b.engine.prepareIncoming(vm, { source: a.peerText });
    await clock.run(0);
    // The abort returns only once the rollback is done: after the held write has landed and been removed.
    let returned = false;
    const aborted = b.engine.abort(VM_UUID).then(() => (returned = true));
    await clock.run(0);
    assert.equal(returned, false, 'abort waits for the write in flight');
    release();
    b.conntrack.gate = null;
    await aborted;
    await clock.run(0);
    assertRolledBack(/aborted/);
  });

  it('a connection drop before cut-over that is never resumed rolls B back and fails A without touching its entries', async () => {
    await b.engine.prepareIncoming(vm, { source: a.peerText });
    await clock.run(CHANGE_INTERVAL_MS * 2);
    // The cable stays pulled: B's tries to resume fail until its block timeout.
    net.partition(a.ip, b.ip);
    await clock.run(BLOCK_TIMEOUT_MS + 1000);
    assertRolledBack(/not resumed within/);
    await clock.run(10_000);
    assert.equal(sessionOf(a).state, 'failed');
    assert.match(sessionOf(a).error, /peer connection lost before cut-over/);
    // QEMU may still finish the migration: A has nothing to hand over, and B imports nothing.
    const blob = await a.vmstate.save(VM_UUID);
    assert.deepEqual(decodeReference(blob), { kind: 'none' });
    await b.vmstate.load(VM_UUID, blob);
    assertRolledBack(/not resumed within/);
  });

  it('a migration that fails after the cut-over: finish(failed) keeps A and rolls B back', async () => {
    await b.engine.prepareIncoming(vm, { source: a.peerText });
    await clock.run(CHANGE_INTERVAL_MS);
    await a.engine.cutover(VM_UUID);
    await clock.run(0);
    assert.equal(sessionOf(b).state, 'ready');
    await a.engine.finish(VM_UUID, 'failed');
    await b.engine.finish(VM_UUID, 'failed');
    await clock.run(0);
    assertRolledBack(/migration failed/);
    assert.equal(sessionOf(a).state, 'failed');
  });

  it('the source refuses a VM that already has a session there: prepare-incoming says so and lifts the drop', async () => {
    const c = await startHost(net, clock, 'C', '192.0.2.30');
    try {
      await c.engine.prepareIncoming(vm, { source: a.peerText });
      await clock.run(0);
      await assert.rejects(b.engine.prepareIncoming(vm, { source: a.peerText }), (e: Error) => {
        assert.match(e.message, /source refused: VM 6f1c2a3e-9b4d-4c5e-8f70-112233445566 already has a source session here \(streaming\)/);
        assert.match(e.message, /the drop was lifted, nothing imported/);
        return true;
      });
      assert.ok(!b.blocker.isBlocked(VM_UUID));
      assert.equal(sessionOf(b).state, 'failed');
      assert.deepEqual(b.kernel.texts(), bBefore);
      assert.equal(sessionOf(c).state, 'streaming', "the running session is not disturbed");
    } finally {
      await c.engine.stop();
    }
  });

  it('the source refuses a VM that is not registered there, whatever addresses the request names', async () => {
    const other = '0b7e6c2a-1111-4222-8333-444455556666';
    const conn = net.dial('192.0.2.99', a.address, PeerRole.Destination);
    await conn.send({ kind: MessageKind.Start, sessionId: 'abc', vm: other, addresses: ['203.0.113.9'], zone: undefined, mark: undefined });
    const answer: PeerMessage = await conn.receive(1000);
    assert.equal(answer.kind, MessageKind.Error);
    assert.match(answer.kind === MessageKind.Error ? answer.text : '', /is not registered on this host/);
    assert.deepEqual(a.engine.sessions(), []);
    assert.deepEqual(a.kernel.texts(), aBefore);
  });

  it('a refused block starts nothing: no session on A, no connection', async () => {
    sinon.stub(b.blocker, 'block').rejects(new Error('nft: Operation not permitted'));
    await assert.rejects(b.engine.prepareIncoming(vm, { source: a.peerText }), /Operation not permitted; no session started/);
    assert.deepEqual(net.pairs, []);
    // The failed session is removed again, so no D-Bus object outlives it.
    assert.deepEqual(eventKinds(b), ['session-added', 'state-changed', 'failed', 'session-removed']);
    assert.deepEqual(a.engine.sessions(), []);
  });

  it('an unreachable source: prepare-incoming fails clearly and lifts the drop', async () => {
    await assert.rejects(b.engine.prepareIncoming(vm, { source: '192.0.2.222:7471' }), /ECONNREFUSED 192.0.2.222:7471; the drop was lifted, nothing imported/);
    assert.ok(!b.blocker.isBlocked(VM_UUID));
    const failed = b.events.find((e) => e.kind === 'failed');
    assert.ok(failed && failed.kind === 'failed');
    assert.match(failed.reason, /ECONNREFUSED/);
    assert.equal(b.feeds.started.filter((f) => !f.stopped).length, 0, 'tracking paused for the attempt');
    await clock.run(RETRACK_AFTER_MS);
    assert.equal(b.feeds.started.filter((f) => !f.stopped).length, 1, 'B tracks the VM again after the failed attempt');
  });

  it('a second prepare-incoming for a VM whose session runs is refused', async () => {
    await b.engine.prepareIncoming(vm, { source: a.peerText });
    await assert.rejects(b.engine.prepareIncoming(vm, { source: a.peerText }), /already has a destination session/);
    assert.ok(b.blocker.isBlocked(VM_UUID), 'the running session keeps its drop');
  });

  it('Load() of a reference that names another session fails (policy block); the VM does not resume on stale state', async () => {
    await b.engine.stop();
    b = await startHost(net, clock, 'B2', '192.0.2.20', { onBlockTimeout: 'block' });
    await b.engine.register(vm);
    await b.engine.prepareIncoming(vm, { source: a.peerText });
    await clock.run(0);
    const blob = encodeReference({ kind: 'session', sessionId: 'feedfeedfeedfeed', finalVersion: 9, digest: new Uint8Array(32) });
    await assert.rejects(b.vmstate.load(VM_UUID, blob), /names session feedfeedfeedfeed/);
    assert.ok(b.blocker.isBlocked(VM_UUID));
  });

  it('Save() never throws: when the delta cannot be shipped it hands QEMU a reference that makes Load() refuse and B roll back', async () => {
    await b.engine.prepareIncoming(vm, { source: a.peerText });
    await clock.run(0);
    for (const f of a.feeds.started) sinon.stub(f, 'sync').rejects(new Error('feed worker gone'));
    const blob = await a.vmstate.save(VM_UUID);
    const ref = decodeReference(blob);
    assert.equal(ref.kind, 'failed');
    await assert.rejects(b.vmstate.load(VM_UUID, blob), /could not ship the residual delta: feed worker gone; the VM must not run here/);
    await clock.run(0);
    assert.deepEqual(b.kernel.texts(), bBefore, 'B holds none of the imported entries');
    assert.ok(!b.blocker.isBlocked(VM_UUID));
    assert.equal(sessionOf(b).state, 'failed');
  });

  it('Load() answers within its bound when the final is late (the VM resumes blocked), but never for a reference to another session', async () => {
    await b.engine.prepareIncoming(vm, { source: a.peerText });
    await clock.run(0);
    const wrong = encodeReference({ kind: 'session', sessionId: 'feedfeedfeedfeed', finalVersion: 9, digest: new Uint8Array(32) });
    await assert.rejects(b.vmstate.load(VM_UUID, wrong), /names session feedfeedfeedfeed/);
    const late = encodeReference({ kind: 'session', sessionId: sessionOf(b).id, finalVersion: 1e6, digest: new Uint8Array(32) });
    const loading = b.vmstate.load(VM_UUID, late);
    await clock.run(b.config.loadTimeoutMs);
    await loading;
    assert.ok(b.log.at('warn').some((m) => /QEMU resumes the VM before its state is in \(Load\(\) answered after 50 ms\): its traffic stays blocked/.test(m)));
    assert.ok(b.blocker.isBlocked(VM_UUID), 'the VM runs, its traffic still dropped');
    await clock.run(30);
    assert.ok(sessionOf(b).resumedAt > 0);
  });

  it('block timeout, policy open: lifts the drop, says so (event and warning), and keeps importing', async () => {
    await b.engine.prepareIncoming(vm, { source: a.peerText });
    await clock.run(BLOCK_TIMEOUT_MS - 1);
    assert.ok(b.blocker.isBlocked(VM_UUID));
    assert.ok(!eventKinds(b).includes('fail-open'));
    await clock.run(1);
    assert.ok(!b.blocker.isBlocked(VM_UUID), 'fail-open: the drop is lifted');
    const open = b.events.find((e) => e.kind === 'fail-open');
    assert.ok(open && open.kind === 'fail-open');
    assert.match(open.reason, /not ready after 30 s; traffic unblocked without it \(policy: open\)/);
    assert.ok(b.log.at('warn').some((m) => /block timeout: traffic unblocked/.test(m)));
    const s = sessionOf(b);
    assert.equal(s.state, 'streaming');
    assert.equal(s.blocked, false);
    await a.engine.cutover(VM_UUID);
    await clock.run(0);
    assert.equal(sessionOf(b).state, 'ready');
    const onB = b.kernel.texts(vmOnly);
    for (const t of a.kernel.texts(vmOnly)) assert.ok(onB.includes(t), `B has ${t}`);
  });

  it('block timeout, policy block: the drop stays, with a warning, until the state is in', async () => {
    await a.engine.stop();
    await b.engine.stop();
    a = await startHost(net, clock, 'A2', '192.0.2.10');
    b = await startHost(net, clock, 'B2', '192.0.2.20', { onBlockTimeout: 'block' });
    put(a, vmFlows());
    await a.engine.register(vm);
    await b.engine.register(vm);
    await b.engine.prepareIncoming(vm, { source: a.peerText });
    await clock.run(BLOCK_TIMEOUT_MS * 2);
    assert.ok(b.blocker.isBlocked(VM_UUID), 'policy block: still dropping');
    assert.ok(!eventKinds(b).includes('fail-open'));
    assert.ok(b.log.at('warn').some((m) => /traffic stays blocked \(policy: block\)/.test(m)));
    assert.equal(sessionOf(b).state, 'streaming');
    const blob = await a.vmstate.save(VM_UUID);
    await b.vmstate.load(VM_UUID, blob);
    assert.ok(!b.blocker.isBlocked(VM_UUID));
  });
});
