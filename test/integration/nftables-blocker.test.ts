// The nftables blocker against the real kernel: real packets are dropped
// from and to a VM's addresses by the blocker's own tables, in a router
// (routed VM) and in a switch (bridged VM), and foreign tables stay
// byte-identical through every operation. Every namespace is fresh and
// removed by the after hook (and by the lab's exit handler on a crash).

import { strict as assert } from 'node:assert';
import { NftablesBlocker } from '../../adapters/nftables/nftables-blocker';
import { parseAddress } from '../../plugin/address';
import { Lab, LabProcess, NetNs, reapStaleNamespaces } from './lab/netns';

const VM = '6f9619ff-8b86-d011-b42d-00c04fc964ff';
const OTHER_VM = '0b5f3a8e-1111-4222-8333-444455556666';
const TCP_PORT = 7000;
const UDP_PORT = 7002;
/** How long a probe waits for a TCP handshake: a dropped SYN never completes. */
const PROBE_MS = 1_500;

// TCP server on every address (dual stack): prints "ready", accepts and closes.
// Probes exit right after the handshake, so a reset must not end the server.
const SERVER = `const s=require('net').createServer(c=>{c.on('error',()=>{});c.end('hi\\n');});s.listen(${TCP_PORT},'::',()=>console.log('ready'));`;
// connect HOST [LOCAL]: exit 0 once the handshake completes, 1 on error or timeout.
const PROBE = `const [h,l]=process.argv.slice(1);const o={host:h,port:${TCP_PORT},timeout:${PROBE_MS}};if(l)o.localAddress=l;
const s=require('net').connect(o,()=>process.exit(0));s.on('timeout',()=>process.exit(1));s.on('error',()=>process.exit(1));`;
// UDP receiver: prints one line per datagram.
const UDP_SINK = `const s=require('dgram').createSocket('udp4');s.on('message',()=>console.log('got'));s.bind(${UDP_PORT},process.argv[1],()=>console.log('ready'));`;
// One datagram from source port 5555 to HOST.
const UDP_ONCE = `const s=require('dgram').createSocket('udp4');s.bind(5555,()=>s.send('x',${UDP_PORT},process.argv[1],()=>s.close()));`;
// UDP sender: one datagram per millisecond to HOST until killed.
const UDP_FLOOD = `const s=require('dgram').createSocket('udp4');const b=Buffer.from('x');setInterval(()=>s.send(b,${UDP_PORT},process.argv[1]),1);console.log('ready');`;

async function connects(from: NetNs, host: string, local?: string): Promise<boolean> {
  const r = await from.exec(process.execPath, ['-e', PROBE, host, ...(local === undefined ? [] : [local])], { timeoutMs: PROBE_MS + 5_000 });
  return r.code === 0;
}

/** Several probes at once (each blocked one costs PROBE_MS): name → connected? */
async function probe(cases: Record<string, [NetNs, string, string?]>): Promise<Record<string, boolean>> {
  const names = Object.keys(cases);
  const results = await Promise.all(names.map((n) => connects(...(cases[n] as [NetNs, string, string?]))));
  return Object.fromEntries(names.map((n, i) => [n, results[i] as boolean]));
}

/**
 * Waits until every path carries a handshake: the first IPv6 packet to an
 * address waits for neighbour discovery, which can outlast one probe.
 */
async function warmUp(cases: Record<string, [NetNs, string, string?]>): Promise<void> {
  const deadline = Date.now() + 15_000;
  for (const [name, c] of Object.entries(cases)) {
    while (!(await connects(...c))) {
      if (Date.now() > deadline) throw new Error(`lab path never carried a handshake: ${name}`);
    }
  }
}

function all(cases: Record<string, unknown>, value: boolean): Record<string, boolean> {
  return Object.fromEntries(Object.keys(cases).map((k) => [k, value]));
}

async function tableNames(ns: NetNs): Promise<string[]> {
  const r = await ns.execOk('nft', ['list', 'tables']);
  return r.stdout.split('\n').filter((l) => l !== '').sort();
}

async function dropCount(ns: NetNs, family: string): Promise<number> {
  const r = await ns.execOk('nft', ['-j', 'list', 'table', family, 'ctmigrate']);
  return [...r.stdout.matchAll(/"packets": (\d+)/g)].reduce((n, m) => n + Number(m[1]), 0);
}

// A foreign table that uses conntrack (so the router tracks flows) without
// counters: its listing must not change unless someone changes it.
const FOREIGN = `table inet ctm_foreign {
  set allowed { type ipv4_addr; elements = { 198.51.100.2 } }
  chain forward {
    type filter hook forward priority filter; policy accept;
    ct state established,related accept
    ct state new ip saddr @allowed accept
    ct state new accept
  }
}
`;

describe('nftables blocker in network namespaces', function () {
  this.timeout(120_000);
  const lab = new Lab();
  before(() => reapStaleNamespaces());
  after(() => lab.cleanup());

  describe('routed VM: router between a client and the VM', () => {
    // client  eth0 198.51.100.2/24  2001:db8:2::2/64
    // router  wan0 198.51.100.1/24  2001:db8:2::1/64 — lan0 192.0.2.1/24 2001:db8:1::1/64
    // vm      eth0 192.0.2.10 (the VM's), 192.0.2.20 (another host on the link), same for v6
    let client: NetNs;
    let router: NetNs;
    let vm: NetNs;
    let blocker: NftablesBlocker;
    let foreign: string;
    const vm4 = '192.0.2.10';
    const vm6 = '2001:db8:1::10';
    const other4 = '192.0.2.20';
    const other6 = '2001:db8:1::20';
    const client4 = '198.51.100.2';
    const client6 = '2001:db8:2::2';

    const cases = (): Record<string, [NetNs, string, string?]> => ({
      'client → VM v4': [client, vm4],
      'client → VM v6': [client, vm6],
      'VM v4 → client': [vm, client4, vm4],
      'VM v6 → client': [vm, client6, vm6],
    });
    const others = (): Record<string, [NetNs, string, string?]> => ({
      'client → other v4': [client, other4],
      'client → other v6': [client, other6],
      'other v4 → client': [vm, client4, other4],
      'other v6 → client': [vm, client6, other6],
    });

    async function foreignListing(): Promise<string> {
      return (await router.execOk('nft', ['-j', 'list', 'table', 'inet', 'ctm_foreign'])).stdout;
    }

    before(async () => {
      [client, router, vm] = await Promise.all([lab.netns('client'), lab.netns('router'), lab.netns('vm')]);
      await lab.link(client, router, { ifname: 'eth0', addrs: [`${client4}/24`, `${client6}/64`] }, { ifname: 'wan0', addrs: ['198.51.100.1/24', '2001:db8:2::1/64'] });
      await lab.link(vm, router, { ifname: 'eth0', addrs: [`${vm4}/24`, `${other4}/24`, `${vm6}/64`, `${other6}/64`] }, { ifname: 'lan0', addrs: ['192.0.2.1/24', '2001:db8:1::1/64'] });
      await client.addRoute('default', '198.51.100.1');
      await client.addRoute('default', '2001:db8:2::1');
      await vm.addRoute('default', '192.0.2.1');
      await vm.addRoute('default', '2001:db8:1::1');
      await router.enableForwarding();
      await router.nft(FOREIGN);
      foreign = await foreignListing();
      await Promise.all([lab.spawn(client, process.execPath, ['-e', SERVER]).waitFor(/ready/), lab.spawn(vm, process.execPath, ['-e', SERVER]).waitFor(/ready/)]);
      blocker = new NftablesBlocker({ execPrefix: ['ip', 'netns', 'exec', router.name] });
      await warmUp({ ...cases(), ...others() });
    });

    it('passes the VM\'s traffic before any block', async () => {
      assert.deepEqual(await probe({ ...cases(), ...others() }), all({ ...cases(), ...others() }, true));
    });

    it('drops packets from and to the VM\'s v4 and v6 addresses once blocked, and only those', async () => {
      await blocker.block(VM, [vm4, vm6].map(parseAddress));
      assert.deepEqual(await probe(cases()), all(cases(), false));
      assert.deepEqual(await probe(others()), all(others(), true));
      assert.deepEqual((await blocker.blocked()).map((b) => b.vm), [VM]);
      assert.ok((await dropCount(router, 'inet')) > 0, 'the drop rules counted the packets');
      assert.equal(await foreignListing(), foreign);
    });

    it('leaves no conntrack entry on the router for the blocked VM\'s attempts', async () => {
      await router.execOk('conntrack', ['-F']);
      await probe({ ...cases(), ...others() });
      const listed = async (addr: string): Promise<string> => {
        const [src, dst] = await Promise.all([router.exec('conntrack', ['-L', '-s', addr]), router.exec('conntrack', ['-L', '-d', addr])]);
        return src.stdout + dst.stdout;
      };
      assert.equal(await listed(vm4), '');
      assert.equal(await listed(vm6), '');
      assert.notEqual(await listed(other4), '', 'conntrack does track here (the unblocked host has entries)');
    });

    it('drops before conntrack looks the packet up: an imported entry is not refreshed by the VM\'s packets', async () => {
      // An entry as an import would create it, with a timeout far above UDP's 30 s for unreplied flows:
      // a packet that reached conntrack would reset it to 30 s.
      const tuple = ['-p', 'udp', '-s', client4, '-d', vm4, '--sport', '5555', '--dport', String(UDP_PORT)];
      await router.execOk('conntrack', ['-I', ...tuple, '-t', '600']);
      await client.execOk(process.execPath, ['-e', UDP_ONCE, vm4]);
      const r = await router.execOk('conntrack', ['-L', ...tuple]);
      const timeout = Number(/^udp\s+\d+\s+(\d+)/m.exec(r.stdout)?.[1]);
      assert.ok(timeout > 500, `entry refreshed to ${timeout} s: conntrack saw a dropped packet\n${r.stdout}`);
      assert.ok((await dropCount(router, 'inet')) > 0);
      await router.execOk('conntrack', ['-D', ...tuple]);
    });

    it('never opens a gap while another VM\'s drop is added and lifted (atomic table replacement)', async () => {
      const sink = lab.spawn(vm, process.execPath, ['-e', UDP_SINK, vm4]);
      await sink.waitFor(/ready/);
      const flood: LabProcess = lab.spawn(client, process.execPath, ['-e', UDP_FLOOD, vm4]);
      await flood.waitFor(/ready/);
      for (let i = 0; i < 10; i++) {
        await blocker.block(OTHER_VM, [parseAddress('203.0.113.7')]);
        await blocker.unblock(OTHER_VM);
      }
      assert.doesNotMatch(sink.stdout, /got/, 'a datagram reached the blocked VM during a rewrite');
      await blocker.unblock(VM);
      await sink.waitFor(/got/, 5_000);
      await flood.stop();
      await sink.stop();
      await blocker.block(VM, [vm4, vm6].map(parseAddress));
    });

    it('keeps the drop through a foreign table\'s reload (firewalld replaces only its own table)', async () => {
      await router.execOk('nft', ['delete', 'table', 'inet', 'ctm_foreign']);
      await router.nft(FOREIGN);
      foreign = await foreignListing();
      assert.deepEqual(await blocker.reconcile(), { repaired: false, differences: [] });
      assert.deepEqual(await probe(cases()), all(cases(), false));
    });

    it('passes the traffic again after unblock, foreign table untouched', async () => {
      await blocker.unblock(VM);
      assert.deepEqual(await probe(cases()), all(cases(), true));
      assert.deepEqual(await tableNames(router), ['table inet ctm_foreign']);
      assert.equal(await foreignListing(), foreign);
      await blocker.unblock(VM);
    });

    it('re-creates the drop after nft flush ruleset on reconcile()', async () => {
      await blocker.block(VM, [vm4, vm6].map(parseAddress));
      await router.execOk('nft', ['flush', 'ruleset']);
      assert.deepEqual(await probe(cases()), all(cases(), true), 'the flush really removed the drop');
      await router.nft(FOREIGN);
      foreign = await foreignListing();
      const report = await blocker.reconcile();
      assert.equal(report.repaired, true);
      assert.deepEqual(report.differences, ['table inet ctmigrate is missing', 'table bridge ctmigrate is missing']);
      assert.deepEqual(await probe(cases()), all(cases(), false));
      assert.equal(await foreignListing(), foreign);
    });

    it('refuses nothing it needs from a flushed table: unblock after a flush works', async () => {
      await router.execOk('nft', ['delete', 'table', 'inet', 'ctmigrate']);
      await blocker.unblock(VM);
      assert.deepEqual(await tableNames(router), ['table inet ctm_foreign']);
    });

    it('clear() leaves no ctmigrate table and the foreign one byte-identical', async () => {
      await blocker.block(VM, [vm4, vm6].map(parseAddress));
      await blocker.block(OTHER_VM, [parseAddress('203.0.113.7')]);
      await blocker.clear();
      assert.deepEqual(await tableNames(router), ['table inet ctm_foreign']);
      assert.equal(await foreignListing(), foreign);
      assert.deepEqual(await blocker.blocked(), []);
      assert.deepEqual(await probe(cases()), all(cases(), true));
    });
  });

  describe('bridged VM: a switch namespace with a bridge and two ports', () => {
    // client 203.0.113.2 — [switch: br0] — vm 203.0.113.10 (VM) and .20 (other); v6 2001:db8:3::/64
    let client: NetNs;
    let sw: NetNs;
    let vm: NetNs;
    let blocker: NftablesBlocker;

    const cases = (): Record<string, [NetNs, string, string?]> => ({
      'client → VM v4': [client, '203.0.113.10'],
      'client → VM v6': [client, '2001:db8:3::10'],
      'VM v4 → client': [vm, '203.0.113.2', '203.0.113.10'],
      'VM v6 → client': [vm, '2001:db8:3::2', '2001:db8:3::10'],
    });
    const others = (): Record<string, [NetNs, string, string?]> => ({
      'client → other v4': [client, '203.0.113.20'],
      'other v6 → client': [vm, '2001:db8:3::2', '2001:db8:3::20'],
    });

    before(async () => {
      [client, sw, vm] = await Promise.all([lab.netns('bclient'), lab.netns('switch'), lab.netns('bvm')]);
      await sw.execOk('ip', ['link', 'add', 'br0', 'type', 'bridge']);
      await lab.link(client, sw, { ifname: 'eth0', addrs: ['203.0.113.2/24', '2001:db8:3::2/64'] }, { ifname: 'p-client' });
      await lab.link(vm, sw, { ifname: 'eth0', addrs: ['203.0.113.10/24', '203.0.113.20/24', '2001:db8:3::10/64', '2001:db8:3::20/64'] }, { ifname: 'p-vm' });
      for (const port of ['p-client', 'p-vm']) await sw.execOk('ip', ['link', 'set', port, 'master', 'br0']);
      await sw.execOk('ip', ['link', 'set', 'br0', 'up']);
      // Without br_netfilter's hand-over, bridged frames pass the bridge hooks only: the bridge table alone must drop them.
      await sw.exec('sysctl', ['-q', '-w', 'net.bridge.bridge-nf-call-iptables=0', 'net.bridge.bridge-nf-call-ip6tables=0']);
      await Promise.all([lab.spawn(client, process.execPath, ['-e', SERVER]).waitFor(/ready/), lab.spawn(vm, process.execPath, ['-e', SERVER]).waitFor(/ready/)]);
      blocker = new NftablesBlocker({ execPrefix: ['ip', 'netns', 'exec', sw.name] });
      await warmUp({ ...cases(), ...others() });
    });

    it('passes bridged traffic before the block', async () => {
      assert.deepEqual(await probe({ ...cases(), ...others() }), all({ ...cases(), ...others() }, true));
    });

    it('drops the VM\'s bridged frames in the bridge table, other hosts on the bridge pass', async () => {
      await blocker.block(VM, ['203.0.113.10', '2001:db8:3::10'].map(parseAddress));
      assert.deepEqual(await probe(cases()), all(cases(), false));
      assert.deepEqual(await probe(others()), all(others(), true));
      assert.ok((await dropCount(sw, 'bridge')) > 0, 'the bridge table counted the drops');
    });

    it('passes again after unblock and leaves no table after clear()', async () => {
      await blocker.unblock(VM);
      assert.deepEqual(await probe(cases()), all(cases(), true));
      await blocker.block(VM, ['203.0.113.10'].map(parseAddress));
      await blocker.clear();
      assert.deepEqual(await tableNames(sw), []);
    });
  });
});
