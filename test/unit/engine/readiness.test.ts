import 'reflect-metadata';
import assert from 'node:assert/strict';
import { FakeClock, settle } from './fakes/fake-clock';
import { FakeNetwork } from './fakes/fake-peer-network';
import { CHANGE_INTERVAL_MS, eventKinds, foreignFlows, Host, put, sessionOf, startHost, tcp, udp, vm, VM_UUID, VM_V4, VM_V6, vmFlows, vmOnly } from './lab';
import { RELEASE_AFTER_ANSWER_MS } from '../../../plugin/session';

describe('migration engine: readiness policies decide when B lifts the drop', () => {
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
    await a.engine.register(vm);
    await b.engine.register(vm);
  });

  afterEach(async () => {
    await a.engine.stop();
    await b.engine.stop();
  });

  it('precopy: unblocks as soon as the snapshot is committed', async () => {
    const info = await b.engine.prepareIncoming(vm, { source: a.peerText, readyWhen: 'precopy' });
    assert.equal(info.readyWhen, 'precopy');
    assert.ok(b.blocker.isBlocked(VM_UUID));
    await clock.run(0);
    assert.ok(!b.blocker.isBlocked(VM_UUID));
    const s = sessionOf(b);
    assert.equal(s.state, 'streaming');
    assert.equal(s.blocked, false);
    assert.ok(s.readyAt > 0);
    assert.deepEqual(eventKinds(b).filter((k) => k === 'ready'), ['ready']);
    assert.equal(b.kernel.texts(vmOnly).length, vmFlows().length);
  });

  it('fraction:0.5: unblocks after the snapshot when half of the announced entries are committed', async () => {
    await b.engine.prepareIncoming(vm, { source: a.peerText, readyWhen: 'fraction:0.5' });
    await clock.run(0);
    assert.ok(!b.blocker.isBlocked(VM_UUID));
    assert.equal(sessionOf(b).readyWhen, 'fraction:0.5');
  });

  it('fraction:0.5: stays blocked while the kernel refused too many, unblocks once changes bring it to half', async () => {
    // B's kernel takes only the IPv6 entries of the snapshot: 2 of 8.
    b.conntrack.refuse = (v) => v.family === 2 && v.origSport !== 7001 && v.origSport !== 7002;
    await b.engine.prepareIncoming(vm, { source: a.peerText, readyWhen: 'fraction:0.5' });
    await clock.run(0);
    assert.equal(sessionOf(b).committed, 2);
    assert.ok(b.blocker.isBlocked(VM_UUID), '2 of 8 committed: not ready');
    assert.ok(b.log.at('warn').some((m) => m.includes('kernel refused')), 'each refusal is reported');
    a.kernel.put(tcp('198.51.100.9', 7001, VM_V4, 22));
    a.kernel.put(tcp('198.51.100.9', 7002, VM_V4, 22));
    await clock.run(CHANGE_INTERVAL_MS);
    assert.equal(sessionOf(b).committed, 4);
    assert.ok(!b.blocker.isBlocked(VM_UUID), '4 of 8 committed: ready before the cut-over');
    assert.equal(sessionOf(b).state, 'streaming');
  });

  it('tcp-established: the established TCP entries of the final delta go first and the drop lifts before the rest', async () => {
    await b.engine.prepareIncoming(vm, { source: a.peerText, readyWhen: 'tcp-established' });
    await clock.run(CHANGE_INTERVAL_MS * 3);
    assert.ok(b.blocker.isBlocked(VM_UUID), 'pre-copied state is not enough for tcp-established');
    a.kernel.put(tcp('198.51.100.9', 45000, VM_V4, 22));
    a.kernel.put(tcp('2001:db8:99::9', 45001, VM_V6, 22));
    a.kernel.put(tcp('198.51.100.9', 45002, VM_V4, 25, { state: 1 /* SYN_SENT */ }));
    a.kernel.put(udp(VM_V4, 45003, '198.51.100.9', 53));
    await clock.run(0);
    b.trace.length = 0;
    await a.engine.cutover(VM_UUID);
    await clock.run(0);
    assert.deepEqual(b.trace, [
      'create tcp 198.51.100.9:45000 -> 192.0.2.50:22, tcp [2001:db8:99::9]:45001 -> [2001:db8:50::1]:22',
      `unblock ${VM_UUID}`,
      'create tcp 198.51.100.9:45002 -> 192.0.2.50:25, udp 192.0.2.50:45003 -> 198.51.100.9:53',
    ]);
    assert.deepEqual(b.kernel.texts(vmOnly), a.kernel.texts(vmOnly));
    assert.equal(sessionOf(b).state, 'ready');
  });

  it('complete: stays blocked through the snapshot and the changes, unblocks with the final delta', async () => {
    await b.engine.prepareIncoming(vm, { source: a.peerText });
    assert.equal(sessionOf(b).readyWhen, 'complete');
    await clock.run(0);
    assert.ok(b.blocker.isBlocked(VM_UUID));
    a.kernel.put(tcp('198.51.100.9', 46000, VM_V4, 22));
    await clock.run(CHANGE_INTERVAL_MS * 10);
    assert.ok(b.blocker.isBlocked(VM_UUID));
    assert.ok(!eventKinds(b).includes('ready'));
    const blob = await a.vmstate.save(VM_UUID);
    await b.vmstate.load(VM_UUID, blob);
    assert.ok(!b.blocker.isBlocked(VM_UUID));
    assert.ok(!eventKinds(b).includes('ready'), "QEMU's Load() answers before the session's signals go out");
    await clock.run(RELEASE_AFTER_ANSWER_MS);
    assert.ok(eventKinds(b).includes('ready'));
  });

  it('Load() returns only once the drop is lifted, so the VM never resumes behind it', async () => {
    await b.engine.prepareIncoming(vm, { source: a.peerText });
    await clock.run(0);
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    b.blocker.unblockGate = () => held;
    const blob = await a.vmstate.save(VM_UUID);
    let loaded = false;
    const load = b.vmstate.load(VM_UUID, blob).then(() => (loaded = true));
    await settle();
    await settle();
    assert.equal(loaded, false, 'Load() is still waiting while the drop is being lifted');
    assert.ok(b.blocker.isBlocked(VM_UUID));
    release();
    await load;
    assert.ok(!b.blocker.isBlocked(VM_UUID));
    assert.equal(sessionOf(b).state, 'ready');
  });
});
