import 'reflect-metadata';
import assert from 'node:assert/strict';
import { parsePeerAddress } from '../../../plugin/daemon-config';
import { FakeClock } from './fakes/fake-clock';
import { FakeNetwork } from './fakes/fake-peer-network';
import { Host, put, sessionOf, startHost, vm, VM_UUID, vmFlows, vmOnly } from './lab';

describe('migration engine: the destination finds the source among its peers', () => {
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

  async function host(name: string, ip: string, peers: string[] = []): Promise<Host> {
    const h = await startHost(net, clock, name, ip, { peers: peers.map((p) => parsePeerAddress(p)) });
    hosts.push(h);
    return h;
  }

  it('picks the peer that runs the VM', async () => {
    const c = await host('C', '192.0.2.30');
    const a = await host('A', '192.0.2.10');
    put(a, vmFlows());
    await a.engine.register(vm);
    const b = await host('B', '192.0.2.20', [c.peerText, a.peerText]);
    const info = await b.engine.prepareIncoming(vm, {});
    assert.equal(info.peer, a.peerText);
    await clock.run(0);
    assert.deepEqual(b.kernel.texts(vmOnly), a.kernel.texts(vmOnly));
    assert.deepEqual(c.engine.sessions(), [], 'the peer without the VM starts nothing');
  });

  it('says clearly when no peer runs the VM, and lifts the drop', async () => {
    const c = await host('C', '192.0.2.30');
    const b = await host('B', '192.0.2.20', [c.peerText, '192.0.2.40:7471']);
    await assert.rejects(
      b.engine.prepareIncoming(vm, {}),
      /none of the peers \(192\.0\.2\.30:7471, 192\.0\.2\.40:7471\) runs VM 6f1c2a3e-9b4d-4c5e-8f70-112233445566: 192\.0\.2\.30:7471 does not run VM 6f1c2a3e-9b4d-4c5e-8f70-112233445566; connect ECONNREFUSED 192\.0\.2\.40:7471; the drop was lifted, nothing imported/,
    );
    assert.ok(!b.blocker.isBlocked(VM_UUID));
  });

  it('says so when there is neither a source nor a peer to ask', async () => {
    const b = await host('B', '192.0.2.20');
    await assert.rejects(b.engine.prepareIncoming(vm, {}), /no source given for VM .* and no peers configured to ask/);
    assert.ok(!b.blocker.isBlocked(VM_UUID));
  });

  it('a host the VM has migrated away from no longer claims it', async () => {
    const a = await host('A', '192.0.2.10');
    const b = await host('B', '192.0.2.20');
    put(a, vmFlows());
    await a.engine.register(vm);
    await b.engine.prepareIncoming(vm, { source: a.peerText });
    await clock.run(0);
    await a.engine.cutover(VM_UUID);
    await a.engine.finish(VM_UUID, 'migrated');
    await a.engine.unregister(VM_UUID);
    assert.equal(sessionOf(a).state, 'migrated');

    const d = await host('D', '192.0.2.40', [a.peerText]);
    await assert.rejects(d.engine.prepareIncoming(vm, {}), /none of the peers \(192\.0\.2\.10:7471\) runs VM/);
    await b.engine.register(vm);
    const e = await host('E', '192.0.2.60', [a.peerText, b.peerText]);
    const info = await e.engine.prepareIncoming(vm, {});
    assert.equal(info.peer, b.peerText, 'the host that runs it now is the source');
  });
});
