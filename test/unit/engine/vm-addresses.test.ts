import 'reflect-metadata';
import assert from 'node:assert/strict';
import { VmSpecError, vmSpec } from '../../../plugin/vm';
import { FakeClock } from './fakes/fake-clock';
import { FakeNetwork } from './fakes/fake-peer-network';
import { Host, startHost, VM_UUID } from './lab';

describe('VM addresses: never the host\'s, never every address', () => {
  const refused: [string, RegExp][] = [
    ['127.0.0.1', /127\.0\.0\.1 is a loopback address, never a VM's own address/],
    ['127.12.0.9', /is a loopback address/],
    ['::1', /::1 is the loopback address/],
    ['0.0.0.0', /0\.0\.0\.0 is the unspecified address/],
    ['::', /:: is the unspecified address/],
    ['0.1.2.3', /"this network"/],
    ['224.0.0.251', /is a multicast address/],
    ['239.255.255.250', /is a multicast address/],
    ['ff02::1', /is a multicast address/],
    ['255.255.255.255', /is the broadcast address/],
    ['::ffff:127.0.0.1', /is a loopback address/],
  ];
  for (const [address, why] of refused)
    it(`refuses ${address} with a clear error`, () => {
      assert.throws(() => vmSpec(VM_UUID, ['192.0.2.10', address]), (e: Error) => e instanceof VmSpecError && why.test(e.message));
    });

  it('takes documentation, private and global unicast addresses', () => {
    for (const a of ['192.0.2.10', '198.51.100.7', '10.1.2.3', '2001:db8::10', 'fe80::1', '::ffff:192.0.2.10']) assert.equal(vmSpec(VM_UUID, [a]).addresses.length, 1);
  });

  describe('the host\'s own addresses', () => {
    let hosts: Host[] = [];
    afterEach(async () => {
      for (const h of hosts) await h.engine.stop();
      hosts = [];
    });

    it('refuses to register or prepare for a VM named with an address of this host, and blocks nothing', async () => {
      const clock = new FakeClock();
      const b = await startHost(new FakeNetwork(clock), clock, 'B', '192.0.2.20');
      hosts.push(b);
      const own = vmSpec(VM_UUID, ['192.0.2.77', '192.0.2.20']);
      await assert.rejects(b.engine.register(own), /VM .*: 192\.0\.2\.20 is an address of this host, never a VM's own address/);
      await assert.rejects(b.engine.prepareIncoming(own, { source: '192.0.2.10:7471' }), /192\.0\.2\.20 is an address of this host/);
      assert.ok(!b.blocker.isBlocked(VM_UUID));
      assert.deepEqual(b.engine.sessions(), []);
      assert.deepEqual(b.engine.registered(), []);
    });
  });
});
