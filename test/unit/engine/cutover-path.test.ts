import 'reflect-metadata';
import assert from 'node:assert/strict';
import { FakeClock } from './fakes/fake-clock';
import { CHANGE_INTERVAL_MS, foreignFlows, Host, hostPair, Pair, put, sessionOf, stopPair, tcp, vm, VM_UUID, VM_V4, vmFlows, vmOnly } from './lab';

describe('migration engine: the source chooses its cut-over path before the offer', () => {
  let pair: Pair | undefined;
  let clock: FakeClock;
  let a: Host;
  let b: Host;

  async function hosts(settingsA: { hotAttach?: boolean } = {}): Promise<void> {
    pair = await hostPair({ settingsA });
    ({ clock, a, b } = pair);
    put(a, foreignFlows());
  }

  afterEach(() => stopPair(pair));

  it('vmstate: a QEMU started with the object keeps it; nothing is added, no events followed', async () => {
    await hosts();
    const info = await b.engine.prepareIncoming(vm, { source: a.peerText });
    assert.equal(info.path, 'vmstate', 'the destination learns the path from the offer');
    assert.equal(sessionOf(a).path, 'vmstate');
    assert.deepEqual(a.hypervisor.calls, [`present ${VM_UUID}`]);
  });

  it('vmstate-hot: the object is added before the offer, and taken out again when the migration fails', async () => {
    await hosts();
    a.hypervisor.everyVmHasObject = false;
    const info = await b.engine.prepareIncoming(vm, { source: a.peerText });
    assert.equal(info.path, 'vmstate-hot');
    assert.ok(a.hypervisor.attached.has(VM_UUID), "the object is in A's QEMU when prepare returns (before libvirt's Perform)");
    await clock.run(0);
    await b.engine.abort(VM_UUID);
    await clock.run(0);
    assert.equal(sessionOf(a).state, 'failed');
    assert.ok(!a.hypervisor.attached.has(VM_UUID), "A's QEMU keeps running without the object");
    assert.deepEqual(a.hypervisor.calls, [`present ${VM_UUID}`, `add ${VM_UUID}`, `remove ${VM_UUID}`]);
  });

  it('vmstate-hot: a destination that rolls back after the cut-over ends the source session too, and the object goes', async () => {
    await hosts();
    a.hypervisor.everyVmHasObject = false;
    await b.engine.prepareIncoming(vm, { source: a.peerText });
    await clock.run(0);
    const blob = await a.vmstate.save(VM_UUID);
    await b.vmstate.load(VM_UUID, blob);
    assert.equal(sessionOf(a).state, 'cutover');
    // libvirt failed the migration after QEMU's last copy: B's QEMU stopped, its hook finishes as failed.
    await b.engine.finish(VM_UUID, 'failed');
    await clock.run(0);
    assert.equal(sessionOf(a).state, 'failed');
    assert.match(sessionOf(a).error, /the destination ended the session/);
    assert.ok(!a.hypervisor.attached.has(VM_UUID), "A's QEMU runs on without the object");
    assert.equal(a.kernel.texts(vmOnly).length, vmFlows().length, 'A keeps every entry');
  });

  it('vmstate-hot: a daemon that stops mid-session takes the object out of the QEMU before it goes', async () => {
    await hosts();
    a.hypervisor.everyVmHasObject = false;
    await b.engine.prepareIncoming(vm, { source: a.peerText });
    assert.ok(a.hypervisor.attached.has(VM_UUID));
    await a.engine.stop();
    assert.ok(!a.hypervisor.attached.has(VM_UUID), "A's QEMU keeps running without the object");
  });

  it('vmstate-hot: after a migration that succeeded nothing is sent to the QEMU that is gone', async () => {
    await hosts();
    a.hypervisor.everyVmHasObject = false;
    await b.engine.prepareIncoming(vm, { source: a.peerText });
    await clock.run(0);
    await b.vmstate.load(VM_UUID, await a.vmstate.save(VM_UUID));
    await a.engine.finish(VM_UUID, 'migrated');
    await clock.run(0);
    assert.deepEqual(a.hypervisor.calls, [`present ${VM_UUID}`, `add ${VM_UUID}`]);
    assert.equal(sessionOf(b).state, 'ready');
  });

  it('event: with the object refused, the source cuts over at libvirt\'s "suspended for migration", and B lifts its drop once the delta is in', async () => {
    await hosts();
    a.hypervisor.everyVmHasObject = false;
    a.hypervisor.refuseAdd = "QEMU refused object-add: Invalid parameter type for 'qom-type'";
    const info = await b.engine.prepareIncoming(vm, { source: a.peerText });
    assert.equal(info.path, 'event');
    assert.equal(a.hypervisor.following(VM_UUID), 1);
    await clock.run(CHANGE_INTERVAL_MS * 3);
    a.kernel.put(tcp('198.51.100.9', 40300, VM_V4, 22));
    a.kernel.delete(tcp('198.51.100.9', 40005, VM_V4, 80));
    assert.ok(b.blocker.isBlocked(VM_UUID));
    const atStop = a.kernel.texts(vmOnly);
    a.hypervisor.pause(VM_UUID);
    await clock.run(0);
    assert.equal(sessionOf(a).state, 'cutover');
    assert.ok(!b.blocker.isBlocked(VM_UUID), 'the delta landed: B lifts the drop with no Load() and no stopped hook');
    assert.deepEqual(b.kernel.texts(vmOnly), atStop);
    const cutAt = sessionOf(a).version;
    // The stopped hook's cut-over later is a no-op.
    assert.equal((await a.engine.cutover(VM_UUID)).version, cutAt);
    await a.engine.finish(VM_UUID, 'migrated');
    assert.equal(a.hypervisor.following(VM_UUID), 0, 'events are no longer followed after the session');
    assert.ok(a.log.lines.some((l) => /cut-over path event: the dbus-vmstate object could not be added: QEMU refused object-add/.test(l.message)), a.log.lines.map((l) => l.message).join('\n'));
  });

  it('event: hot attach turned off (hot-attach = no) goes straight to the events', async () => {
    await hosts({ hotAttach: false });
    a.hypervisor.everyVmHasObject = false;
    const info = await b.engine.prepareIncoming(vm, { source: a.peerText });
    assert.equal(info.path, 'event');
    assert.deepEqual(a.hypervisor.calls, [`present ${VM_UUID}`, `follow ${VM_UUID}`]);
  });

  it('hook: neither object nor events; the cut-over waits for the stopped hook', async () => {
    await hosts();
    a.hypervisor.everyVmHasObject = false;
    a.hypervisor.refuseAdd = 'libvirt: cannot connect';
    a.hypervisor.refuseEvents = 'virsh event exited 1: failed to connect to the hypervisor';
    const info = await b.engine.prepareIncoming(vm, { source: a.peerText });
    assert.equal(info.path, 'hook');
    await clock.run(CHANGE_INTERVAL_MS * 3);
    assert.ok(b.blocker.isBlocked(VM_UUID));
    await a.engine.cutover(VM_UUID);
    await clock.run(0);
    assert.ok(!b.blocker.isBlocked(VM_UUID));
  });
});
