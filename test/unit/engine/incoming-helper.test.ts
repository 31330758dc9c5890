import 'reflect-metadata';
import assert from 'node:assert/strict';
import { FakeClock } from './fakes/fake-clock';
import { FakeNetwork } from './fakes/fake-peer-network';
import { CHANGE_INTERVAL_MS, Host, put, sessionOf, startHost, vm, VM_UUID, vmFlows } from './lab';

describe('migration engine: prepare-incoming makes the host ready for the incoming QEMU', () => {
  let clock: FakeClock;
  let a: Host;
  let b: Host;

  beforeEach(async () => {
    clock = new FakeClock();
    const net = new FakeNetwork(clock);
    a = await startHost(net, clock, 'A', '192.0.2.10');
    b = await startHost(net, clock, 'B', '192.0.2.20');
    put(a, vmFlows());
    await a.engine.register(vm);
  });

  afterEach(async () => {
    await a.engine.stop();
    await b.engine.stop();
  });

  it("starts the VM's dbus-vmstate helper without a register, and QEMU's Load() there waits for the state", async () => {
    assert.equal(b.vmstate.attached(VM_UUID), false);
    await b.engine.prepareIncoming(vm, { source: a.peerText });
    assert.equal(b.vmstate.attached(VM_UUID), true, 'the helper is up for QEMU -incoming');
    await clock.run(CHANGE_INTERVAL_MS);
    const blob = await a.vmstate.save(VM_UUID);
    await clock.run(0);
    await b.vmstate.load(VM_UUID, blob);
    assert.equal(sessionOf(b).state, 'ready');
    assert.equal(b.registry.saved.length, 0, 'prepare-incoming does not register the VM');
  });

  it('stops that helper with the daemon', async () => {
    await b.engine.prepareIncoming(vm, { source: a.peerText });
    await b.engine.stop();
    assert.deepEqual(b.vmstate.detached, [VM_UUID]);
  });
});
