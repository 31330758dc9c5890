import 'reflect-metadata';
import assert from 'node:assert/strict';
import { parsePeerAddress } from '../../../plugin/daemon-config';
import { PeerAuthorization } from '../../../plugin/peer-authorization';
import { FakeClock } from './fakes/fake-clock';
import { FakeNetwork } from './fakes/fake-peer-network';
import { Host, put, startHost, vm, VM_UUID, vmFlows, vmOnly } from './lab';

describe('migration engine: only the configured peers may open a session', () => {
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

  it('refuses a host with the key that is not a configured peer; the real destination then migrates the VM', async () => {
    const a = await host('A', '192.0.2.10', ['192.0.2.20:7471']);
    put(a, vmFlows());
    await a.engine.register(vm);
    const intruder = await host('X', '192.0.2.66');
    await assert.rejects(intruder.engine.prepareIncoming(vm, { source: a.peerText }), /peer 192\.0\.2\.66 is not a configured peer of this host \(configured: 192\.0\.2\.20:7471\)/);
    assert.deepEqual(a.engine.sessions(), [], 'no source session for the intruder');
    assert.ok(a.log.at('warn').some((l) => /refused peer 192\.0\.2\.66:\d+: peer 192\.0\.2\.66 is not a configured peer/.test(l)), a.log.at('warn').join('\n'));
    assert.ok(!intruder.blocker.isBlocked(VM_UUID));

    const b = await host('B', '192.0.2.20', [a.peerText]);
    await b.engine.prepareIncoming(vm, { source: a.peerText });
    await clock.run(0);
    assert.deepEqual(b.kernel.texts(vmOnly), a.kernel.texts(vmOnly));
  });

  it('does not tell a stranger which VMs run here', async () => {
    const a = await host('A', '192.0.2.10', ['192.0.2.20:7471']);
    await a.engine.register(vm);
    const intruder = await host('X', '192.0.2.66', [a.peerText]);
    await assert.rejects(intruder.engine.prepareIncoming(vm, {}), /none of the peers \(192\.0\.2\.10:7471\) runs VM/);
  });

  it('lets any host with the key in when no peer is configured, and warns about it at start', async () => {
    const a = await host('A', '192.0.2.10');
    assert.ok(a.log.at('warn').some((l) => /no peers configured: any host with the cluster key may start a session/.test(l)));
    put(a, vmFlows());
    await a.engine.register(vm);
    const b = await host('B', '192.0.2.20');
    await b.engine.prepareIncoming(vm, { source: a.peerText });
    await clock.run(0);
    assert.deepEqual(b.kernel.texts(vmOnly), a.kernel.texts(vmOnly));
  });

  it('compares addresses by their bytes: any spelling of IPv6, IPv4 as a dual-stack socket shows it', () => {
    const auth = new PeerAuthorization([parsePeerAddress('[2001:db8::20]:7471'), parsePeerAddress('198.51.100.2:7471')]);
    assert.ok(auth.allows('2001:0db8:0:0::20'));
    assert.ok(auth.allows('::ffff:198.51.100.2'));
    assert.ok(!auth.allows('2001:db8::21'));
    assert.ok(!auth.allows('198.51.100.3'));
    assert.ok(!auth.allows('not-an-address'));
  });
});
