// The containers' drop (adapters/nftables/container-drops.ts) against the
// real kernel: real packets from and to the addresses stop and pass again,
// two containers' drops stay apart, the table goes with the last element,
// and an element the kernel expires lifts the drop with nobody running.

import { strict as assert } from 'node:assert';
import { setTimeout as sleep } from 'node:timers/promises';
import { CONTAINER_TABLE, NftContainerDrops } from '../../adapters/nftables/container-drops';
import { parseAddress } from '../../plugin/address';
import { Lab, NetNs, reapStaleNamespaces } from './lab/netns';

const PORT = 7010;
const SERVER = `const s=require('net').createServer(c=>{c.on('error',()=>{});c.end('hi\\n');});s.listen(${PORT},'::',()=>console.log('ready'));`;
const PROBE = `const s=require('net').connect({host:process.argv[1],port:${PORT},timeout:1200},()=>process.exit(0));s.on('timeout',()=>process.exit(1));s.on('error',()=>process.exit(1));`;

describe('containers\' drop (table inet ctmigrate_containers, elements with timeouts)', function () {
  this.timeout(60_000);
  let lab: Lab | undefined;
  let host: NetNs;
  let ctr: NetNs;
  let client: NetNs;
  let drops: NftContainerDrops;
  const C4 = '192.0.2.10';
  const C6 = '2001:db8:c::10';
  const OTHER = '192.0.2.11';

  const reaches = async (addr: string): Promise<boolean> => (await client.exec(process.execPath, ['-e', PROBE, addr], { timeoutMs: 6_000 })).code === 0;

  before(async function () {
    if (process.getuid?.() !== 0) this.skip();
    await reapStaleNamespaces();
    lab = new Lab();
    [host, ctr, client] = await Promise.all([lab.netns('host'), lab.netns('ctr'), lab.netns('client')]);
    await lab.link(ctr, host, { ifname: 'eth0', addrs: [`${C4}/24`, `${OTHER}/24`, `${C6}/64`] }, { ifname: 'ctr', addrs: ['192.0.2.1/24', '2001:db8:c::1/64'] });
    await lab.link(client, host, { ifname: 'eth0', addrs: ['203.0.113.2/30', '2001:db8:f::2/64'] }, { ifname: 'client', addrs: ['203.0.113.1/30', '2001:db8:f::1/64'] });
    await host.enableForwarding();
    await ctr.addRoute('default', '192.0.2.1');
    await ctr.addRoute('default', '2001:db8:c::1');
    await client.addRoute('default', '203.0.113.1');
    await client.addRoute('default', '2001:db8:f::1');
    const srv = lab.spawn(ctr, process.execPath, ['-e', SERVER]);
    await srv.waitFor(/ready/);
    const deadline = Date.now() + 10_000;
    while (!((await reaches(C4)) && (await reaches(C6)) && (await reaches(OTHER)))) if (Date.now() > deadline) throw new Error('the lab never carried a handshake');
    drops = new NftContainerDrops({ execPrefix: ['ip', 'netns', 'exec', host.name], lockFile: `/run/lock/ctmigrate-containers-test-${process.pid}.lock` });
  });

  after(async () => {
    await lab?.cleanup();
  });

  it('drops both families of one container, leaves another\'s addresses alone, and lifts without trace', async () => {
    await drops.block('web1', [parseAddress(C4), parseAddress(C6)], 60);
    await drops.block('web2', [parseAddress(OTHER)], 60);
    assert.equal(await reaches(C4), false);
    assert.equal(await reaches(C6), false);
    assert.equal(await reaches(OTHER), false);
    assert.equal(await drops.blocked('web1', [parseAddress(C4)]), true);
    // Blocking again (pre-restore run twice) keeps one copy of the rules.
    await drops.block('web1', [parseAddress(C4), parseAddress(C6)], 60);
    const rules = (await host.execOk('nft', ['list', 'table', 'inet', CONTAINER_TABLE])).stdout;
    assert.equal(rules.match(/ip saddr @drop4 counter/g)?.length, 3, rules);
    assert.match(rules, /192\.0\.2\.10 timeout 1m expires \S+ comment "web1"/);
    await drops.lift('web1', [parseAddress(C4), parseAddress(C6)]);
    assert.equal(await drops.blocked('web1', [parseAddress(C4), parseAddress(C6)]), false);
    assert.equal(await reaches(C4), true);
    assert.equal(await reaches(C6), true);
    assert.equal(await reaches(OTHER), false, 'lifting web1 lifted web2');
    await drops.lift('web2', [parseAddress(OTHER)]);
    assert.equal(await reaches(OTHER), true);
    const tables = (await host.execOk('nft', ['list', 'tables'])).stdout;
    assert.ok(!tables.includes(CONTAINER_TABLE), 'the emptied table stayed');
    // Lifting what is not there is nothing to do.
    await drops.lift('web1', [parseAddress(C4)]);
  });

  it('an element the kernel expires lifts the drop by itself', async () => {
    const t0 = Date.now();
    await drops.block('web3', [parseAddress(C4)], 3);
    assert.equal(await reaches(C4), false);
    await sleep(Math.max(0, t0 + 3_500 - Date.now()));
    assert.equal(await drops.blocked('web3', [parseAddress(C4)]), false);
    assert.equal(await reaches(C4), true);
    // The empty table is tidied by the next lift.
    await drops.lift('web3', [parseAddress(C4)]);
    assert.ok(!(await host.execOk('nft', ['list', 'tables'])).stdout.includes(CONTAINER_TABLE));
  });
});
