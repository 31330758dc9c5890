import 'reflect-metadata';
import assert from 'node:assert/strict';
import { parsePeerAddress } from '../../../plugin/daemon-config';
import { FakeClock } from './fakes/fake-clock';
import { FakeNetwork } from './fakes/fake-peer-network';
import { Host, put, startHost, vm, VM_UUID, vmFlows, vmOnly } from './lab';

describe('migration engine: the VM registry outlives a daemon restart', () => {
  let clock: FakeClock;
  let net: FakeNetwork;
  let hosts: Host[];

  beforeEach(() => {
    clock = new FakeClock();
    net = new FakeNetwork(clock);
    hosts = [];
  });

  afterEach(async () => {
    for (const h of hosts) await h.engine.stop();
  });

  it('saves every registration and unregistration', async () => {
    const a = await startHost(net, clock, 'A', '192.0.2.10');
    hosts.push(a);
    await a.engine.register(vm);
    assert.deepEqual(
      a.registry.saved.map((v) => v.uuid),
      [VM_UUID],
    );
    await a.engine.unregister(VM_UUID);
    assert.deepEqual(a.registry.saved, []);
  });

  it('a restarted source registers its VMs again and still serves a migration', async () => {
    const a = await startHost(net, clock, 'A', '192.0.2.10');
    await a.engine.register(vm);
    await a.engine.stop();
    const again = await startHost(net, clock, 'A2', '192.0.2.11', {}, a.registry);
    hosts.push(again);
    put(again, vmFlows());
    assert.equal(await again.engine.restore(), 1);
    assert.deepEqual(
      again.engine.registered().map((r) => r.vm.uuid),
      [VM_UUID],
    );
    const b = await startHost(net, clock, 'B', '192.0.2.20', { peers: [parsePeerAddress(again.peerText)] });
    hosts.push(b);
    const info = await b.engine.prepareIncoming(vm, {});
    assert.equal(info.peer, again.peerText);
    await clock.run(0);
    assert.deepEqual(b.kernel.texts(vmOnly), again.kernel.texts(vmOnly));
  });
});
