// The CRIU action steps (plugin/criu-action.ts) with every port faked at its
// token: the kernel's conntrack table, the image directory, the container's
// network namespace, the drops and the restore watcher.

import 'reflect-metadata';
import { strict as assert } from 'node:assert';
import { container, DependencyContainer } from 'tsyringe';
import { Address, formatAddress, parseAddress } from '../../../plugin/address';
import { containerIdFromCgroup } from '../../../plugin/container-id';
import { encodeManifest, MANIFEST_FORMAT, parseManifest } from '../../../plugin/checkpoint-manifest';
import { CriuAction, CriuStep, CriuStepError } from '../../../plugin/criu-action';
import { Status } from '../../../plugin/flow';
import { CheckpointStore } from '../../../plugin/ports/checkpoint-store';
import { Clock } from '../../../plugin/ports/clock';
import { ConnectionFeed } from '../../../plugin/ports/connection-feed';
import { ContainerDropsPort } from '../../../plugin/ports/container-drops-port';
import { ContainerNetwork, ContainerNetworkPort } from '../../../plugin/ports/container-network-port';
import { ConntrackPort } from '../../../plugin/ports/conntrack-port';
import { Log } from '../../../plugin/ports/log-port';
import { RestoreWatchPort } from '../../../plugin/ports/restore-watch-port';
import { globalAddresses } from '../../../adapters/host/container-network';
import { FakeClock } from '../engine/fakes/fake-clock';
import { FakeConntrack, FakeFeed, FakeKernel } from '../engine/fakes/fake-kernel';
import { RecordingLog } from '../engine/fakes/recording-log';
import { tcp } from '../engine/lab';
import { fakeManager, FakeManager } from '../libvirt/fake-manager';
import { ManagerClient } from '../../../plugin/ports/manager-client';
import { HostAddressesPort } from '../../../plugin/ports/host-addresses-port';
import { providePort } from '../../../plugin/ports/port-token';

const CTR = '192.0.2.10';
const DIR = '/proc/4242/fd/7';

class MemoryStore implements CheckpointStore {
  readonly files = new Map<string, Uint8Array>();
  async read(dir: string, name: string, maxBytes: number): Promise<Uint8Array | null> {
    const b = this.files.get(`${dir}/${name}`);
    if (b && b.length > maxBytes) throw new Error(`${name} too big`);
    return b ?? null;
  }
  async write(dir: string, files: ReadonlyArray<{ name: string; bytes: Uint8Array }>): Promise<void> {
    for (const f of files) this.files.set(`${dir}/${f.name}`, f.bytes);
  }
}

class FakeNetns implements ContainerNetworkPort {
  constructor(public net: ContainerNetwork, public id: string | null = 'c0ffee') {}
  async network(): Promise<ContainerNetwork> {
    return this.net;
  }
  async containerId(): Promise<string | null> {
    return this.id;
  }
}

class FakeDrops implements ContainerDropsPort {
  readonly held = new Map<string, { container: string; expiresS: number }>();
  readonly calls: string[] = [];
  async block(container: string, addresses: readonly Address[], expiresS: number): Promise<void> {
    this.calls.push(`block ${container}`);
    for (const a of addresses) this.held.set(text(a), { container, expiresS });
  }
  async lift(container: string, addresses: readonly Address[]): Promise<void> {
    this.calls.push(`lift ${container}`);
    for (const a of addresses) this.held.delete(text(a));
  }
  async blocked(_c: string, addresses: readonly Address[]): Promise<boolean> {
    return addresses.some((a) => this.held.has(text(a)));
  }
}

class FakeWatch implements RestoreWatchPort {
  readonly watched: Array<{ container: string; pid: number }> = [];
  async watch(container: string, _a: readonly Address[], pid: number): Promise<void> {
    this.watched.push({ container, pid });
  }
}

function text(a: Address): string {
  return formatAddress(a.bytes, 0, a.bytes.length);
}

interface Host {
  daemon: FakeManager;
  kernel: FakeKernel;
  drops: FakeDrops;
  watch: FakeWatch;
  netns: FakeNetns;
  action: CriuAction;
  c: DependencyContainer;
}

/** This host's own addresses, as the fake HostAddressesPort reports them (a test may add to it). */
let hostAddresses: string[] = ['198.51.100.1', '2001:db8:ffff::1'];

function host(store: MemoryStore, net: ContainerNetwork = { sharesHostNetwork: false, addresses: [parseAddress(CTR)] }): Host {
  const kernel = new FakeKernel();
  const c = container.createChildContainer();
  const drops = new FakeDrops();
  const watch = new FakeWatch();
  const netns = new FakeNetns(net);
  const daemon = fakeManager();
  providePort(c, ManagerClient, { useValue: daemon.client });
  providePort(c, HostAddressesPort, { useValue: { addresses: () => [...hostAddresses] } });
  providePort(c, ConntrackPort, { useValue: new FakeConntrack(kernel) });
  providePort(c, ConnectionFeed, { useValue: new FakeFeed(kernel, false) });
  providePort(c, CheckpointStore, { useValue: store });
  providePort(c, ContainerNetworkPort, { useValue: netns });
  providePort(c, ContainerDropsPort, { useValue: drops });
  providePort(c, RestoreWatchPort, { useValue: watch });
  providePort(c, Clock, { useValue: new FakeClock(1_700_000_000_000) });
  providePort(c, Log, { useValue: new RecordingLog() });
  return { daemon, kernel, drops, watch, netns, action: c.resolve(CriuAction), c };
}

const step = (action: string, o: Partial<CriuStep> = {}): CriuStep => ({ action, imageDir: DIR, initPid: 100, criuPid: 4242, container: null, ...o });
const opts = { tableCapacity: 1024, host: 'host-a' };

/** The container's flows: a published port (DNAT), masqueraded egress (SNAT), and a plain one. */
function containerFlows(): ReturnType<typeof tcp>[] {
  return [
    tcp('203.0.113.100', 50000, '198.51.100.80', 8080, { status: Status.Confirmed | Status.SeenReply | Status.Assured | Status.DstNat | Status.DstNatDone, reply: { src: CTR, sport: 7000, dst: '203.0.113.100', dport: 50000 } }),
    tcp(CTR, 41000, '203.0.113.100', 7001, { status: Status.Confirmed | Status.SeenReply | Status.Assured | Status.SrcNat | Status.SrcNatDone, reply: { src: '203.0.113.100', sport: 7001, dst: '198.51.100.80', dport: 41000 } }),
    tcp(CTR, 41001, '203.0.113.7', 443),
  ];
}

describe('criu-action steps (plugin/criu-action.ts)', () => {
  it('network-lock packs the host entries of the container\'s addresses into the image directory, and only those', async () => {
    const store = new MemoryStore();
    const a = host(store);
    for (const f of [...containerFlows(), tcp('198.51.100.9', 1, '192.0.2.77', 22)]) a.kernel.put(f);
    const out = await a.action.run(step('network-lock'), opts);
    assert.equal(out.container, 'c0ffee');
    assert.match(out.summary, /^packed 3 entries of 192\.0\.2\.10 \(\d+ bytes\) into the checkpoint$/);
    const m = parseManifest(Buffer.from(store.files.get(`${DIR}/ctmigrate.json`) as Uint8Array).toString());
    assert.equal(m.format, MANIFEST_FORMAT);
    assert.equal(m.entries, 3);
    assert.deepEqual(m.addresses.map(text), [CTR]);
    assert.equal(m.host, 'host-a');
    assert.equal(a.kernel.texts().length, 4, 'packing changed the kernel');
  });

  it('a container on the host\'s network, or one without a global address, packs nothing and never fails', async () => {
    const store = new MemoryStore();
    const shared = host(store, { sharesHostNetwork: true, addresses: [] });
    assert.match((await shared.action.run(step('network-lock'), opts)).summary, /uses the host's network/);
    const bare = host(store, { sharesHostNetwork: false, addresses: [] });
    assert.match((await bare.action.run(step('network-lock'), opts)).summary, /no global address/);
    assert.equal(store.files.size, 0);
  });

  it('post-dump removes the container\'s entries from the source; network-unlock after a dump (it runs on) puts them back', async () => {
    const store = new MemoryStore();
    const a = host(store);
    for (const f of [...containerFlows(), tcp('198.51.100.9', 1, '192.0.2.77', 22)]) a.kernel.put(f);
    const before = a.kernel.texts();
    await a.action.run(step('network-lock'), opts);
    const out = await a.action.run(step('post-dump'), opts);
    assert.match(out.summary, /^removed 3 entries of 192\.0\.2\.10 from this host/);
    assert.equal(a.kernel.texts().length, 1);
    const back = await a.action.run(step('network-unlock'), opts);
    assert.match(back.summary, /^imported 3 of 3 entries \(created 3, replaced 0, failed 0\)$/);
    assert.deepEqual(a.kernel.texts(), before);
  });

  it('pre-restore drops the manifest\'s addresses and starts a watcher on CRIU; network-unlock imports, confined, then lifts', async () => {
    const store = new MemoryStore();
    const a = host(store);
    for (const f of containerFlows()) a.kernel.put(f);
    await a.action.run(step('network-lock'), opts);
    const b = host(store);
    const hold = await b.action.run(step('pre-restore', { initPid: null }), { ...opts, dropExpiryS: 60 });
    assert.match(hold.summary, /dropped until network-unlock \(at most 60 s\)/);
    assert.deepEqual([...b.drops.held.entries()], [[CTR, { container: 'c0ffee', expiresS: 60 }]]);
    assert.deepEqual(b.watch.watched, [{ container: 'c0ffee', pid: 4242 }]);
    assert.equal(b.kernel.texts().length, 0);
    assert.match((await b.action.run(step('setup-namespaces', { initPid: 555 }), opts)).summary, /watching the restored init \(process 555\)/);
    assert.deepEqual(b.watch.watched[1], { container: 'c0ffee', pid: 555 });
    const done = await b.action.run(step('network-unlock'), opts);
    assert.match(done.summary, /^imported 3 of 3 entries/);
    assert.deepEqual(b.kernel.texts(), a.kernel.texts());
    assert.equal(b.drops.held.size, 0);
    assert.equal(await b.action.abandon('c0ffee', [parseAddress(CTR)], 'CRIU exited'), false, 'nothing left to abandon');
  });

  it('the import takes only what the restored namespace really owns: a doctored snapshot\'s foreign entry is refused', async () => {
    const store = new MemoryStore();
    const a = host(store, { sharesHostNetwork: false, addresses: [parseAddress(CTR), parseAddress('192.0.2.11')] });
    for (const f of [...containerFlows(), tcp('192.0.2.11', 9, '203.0.113.7', 443)]) a.kernel.put(f);
    await a.action.run(step('network-lock'), opts);
    // Restored with only one of the two addresses: entries of the other stay out.
    const b = host(store);
    await b.action.run(step('pre-restore', { initPid: null }), opts);
    const done = await b.action.run(step('network-unlock'), opts);
    assert.match(done.summary, /^imported 3 of 4 entries .*; refused 1: /);
    assert.equal(b.kernel.texts().length, 3);
    assert.equal(b.drops.held.size, 0);
  });

  it('a damaged checkpoint stops pre-restore before any drop, and says how to restore without state', async () => {
    const store = new MemoryStore();
    const a = host(store);
    for (const f of containerFlows()) a.kernel.put(f);
    await a.action.run(step('network-lock'), opts);
    const snap = store.files.get(`${DIR}/ctmigrate.ctm`) as Uint8Array;
    const bad = Uint8Array.from(snap);
    bad[bad.length - 1] ^= 1;
    store.files.set(`${DIR}/ctmigrate.ctm`, bad);
    const b = host(store);
    await assert.rejects(b.action.run(step('pre-restore', { initPid: null }), opts), (e: Error) => e instanceof CriuStepError && /does not match the manifest's SHA-256; nothing done \(remove ctmigrate\.json and ctmigrate\.ctm/.test(e.message));
    assert.equal(b.drops.calls.length, 0);
    store.files.delete(`${DIR}/ctmigrate.ctm`);
    await assert.rejects(b.action.run(step('pre-restore', { initPid: null }), opts), /ctmigrate\.ctm in the checkpoint is missing/);
    store.files.set(`${DIR}/ctmigrate.json`, Buffer.from('{"format":"other"}'));
    await assert.rejects(b.action.run(step('pre-restore', { initPid: null }), opts), /ctmigrate\.json in the checkpoint: format is "other"/);
    assert.equal(b.drops.calls.length, 0);
  });

  it('a manifest that claims more entries than the table holds is refused at pre-restore, nothing allocated for its count', async () => {
    const store = new MemoryStore();
    const a = host(store);
    for (const f of containerFlows()) a.kernel.put(f);
    await a.action.run(step('network-lock'), opts);
    const manifest = JSON.parse(Buffer.from(store.files.get(`${DIR}/ctmigrate.json`) as Uint8Array).toString());
    manifest.entries = 2 ** 40;
    store.files.set(`${DIR}/ctmigrate.json`, Buffer.from(JSON.stringify(manifest)));
    const b = host(store);
    const small = { ...opts, tableCapacity: 2 };
    await assert.rejects(b.action.run(step('pre-restore', { initPid: null }), small), (e: Error) => e instanceof CriuStepError && /ctmigrate\.ctm in the checkpoint is unreadable: .*; nothing done/.test(e.message));
    assert.equal(b.drops.calls.length, 0);
  });

  it('network-unlock lifts the drop even when the import fails', async () => {
    const store = new MemoryStore();
    const a = host(store);
    for (const f of containerFlows()) a.kernel.put(f);
    await a.action.run(step('network-lock'), opts);
    const b = host(store);
    await b.action.run(step('pre-restore', { initPid: null }), opts);
    b.netns.network = async () => {
      throw new Error('nsenter: no such process');
    };
    await assert.rejects(b.action.run(step('network-unlock'), opts), /no such process/);
    assert.equal(b.drops.held.size, 0);
  });

  it('the watcher\'s abandon lifts a drop still in place, once', async () => {
    const store = new MemoryStore();
    const a = host(store);
    a.kernel.put(containerFlows()[0]);
    await a.action.run(step('network-lock'), opts);
    const b = host(store);
    await b.action.run(step('pre-restore', { initPid: null }), opts);
    assert.equal(await b.action.abandon('c0ffee', [parseAddress(CTR)], 'CRIU exited'), true);
    assert.equal(b.drops.held.size, 0);
    assert.equal(b.kernel.texts().length, 0);
    assert.equal(await b.action.abandon('c0ffee', [parseAddress(CTR)], 'CRIU exited'), false);
  });

  it('an address of this host is never the container\'s: left out of the pack, never dropped, never imported for', async () => {
    const store = new MemoryStore();
    const a = host(store, { sharesHostNetwork: false, addresses: [parseAddress(CTR), parseAddress('198.51.100.1')] });
    for (const f of containerFlows()) a.kernel.put(f);
    a.kernel.put(tcp('198.51.100.1', 22, '203.0.113.7', 50022));
    const out = await a.action.run(step('network-lock'), opts);
    assert.match(out.summary, /^packed 3 entries of 192\.0\.2\.10 \(/);
    await a.action.run(step('post-dump'), opts);
    assert.equal(a.kernel.texts().length, 1, 'the host\'s own flow was removed');
    // A manifest that names this host's address (tampered with): B drops only the container's.
    const manifest = JSON.parse(Buffer.from(store.files.get(`${DIR}/ctmigrate.json`) as Uint8Array).toString());
    manifest.addresses = [CTR, '198.51.100.7'];
    store.files.set(`${DIR}/ctmigrate.json`, Buffer.from(JSON.stringify(manifest)));
    hostAddresses = [...hostAddresses, '198.51.100.7'];
    try {
      const b = host(store);
      await b.action.run(step('pre-restore', { initPid: null }), opts);
      assert.deepEqual([...b.drops.held.keys()], [CTR]);
      manifest.addresses = ['198.51.100.7'];
      store.files.set(`${DIR}/ctmigrate.json`, Buffer.from(JSON.stringify(manifest)));
      const c = host(store);
      assert.match((await c.action.run(step('pre-restore', { initPid: null }), opts)).summary, /names only addresses of this host: nothing to hold/);
      assert.equal(c.drops.calls.length, 0);
    } finally {
      hostAddresses = hostAddresses.filter((x) => x !== '198.51.100.7');
    }
  });

  it('steps without ctmigrate state, and steps it has no part in, do nothing and succeed', async () => {
    const b = host(new MemoryStore());
    for (const s of ['pre-dump', 'post-dump', 'pre-restore', 'setup-namespaces', 'post-restore', 'network-unlock', 'pre-resume', 'post-resume', 'orphan-pts-master'])
      assert.match((await b.action.run(step(s), opts)).summary, /nothing/);
    assert.equal(b.drops.calls.length, 0);
    await assert.rejects(b.action.run(step('network-lock', { imageDir: null }), opts), /CRIU did not set CRTOOLS_IMAGE_DIR$/);
    await assert.rejects(b.action.run(step('network-lock', { container: 'bad id!' }), opts), /CTMIGRATE_CONTAINER "bad id!" is not a container id/);
  });
});

describe('criu-action over the peer channel (CTMIGRATE_DESTINATION, CTMIGRATE_CONTAINER)', () => {
  it('network-lock also sends the packed state to a known destination, and a failure there costs only a line', async () => {
    const store = new MemoryStore();
    const a = host(store);
    for (const f of containerFlows()) a.kernel.put(f);
    const out = await a.action.run(step('network-lock', { destination: '198.51.100.2:7471' }), opts);
    assert.match(out.summary, /into the checkpoint; sent to 198\.51\.100\.2:7471$/);
    const [dest, state] = a.daemon.sendContainerState.firstCall.args as [string, { container: string; manifest: string; snapshot: Uint8Array }];
    assert.equal(dest, '198.51.100.2:7471');
    assert.equal(state.container, 'c0ffee');
    assert.equal(state.manifest, Buffer.from(store.files.get(`${DIR}/ctmigrate.json`) as Uint8Array).toString());
    assert.deepEqual(Buffer.from(state.snapshot), Buffer.from(store.files.get(`${DIR}/ctmigrate.ctm`) as Uint8Array));
    a.daemon.sendContainerState.rejects(new Error('ctmigrated is not running'));
    const again = await a.action.run(step('network-lock', { destination: '198.51.100.2:7471' }), opts);
    assert.match(again.summary, /; not sent to 198\.51\.100\.2:7471 \(ctmigrated is not running\), it travels in the checkpoint$/);
  });

  it('pre-restore with an image directory without ctmigrate\'s files takes the state a peer sent, writes it there, and the restore goes on from it', async () => {
    const source = new MemoryStore();
    const a = host(source);
    for (const f of containerFlows()) a.kernel.put(f);
    await a.action.run(step('network-lock'), opts);
    const state = {
      container: 'c0ffee',
      manifest: Buffer.from(source.files.get(`${DIR}/ctmigrate.json`) as Uint8Array).toString(),
      snapshot: source.files.get(`${DIR}/ctmigrate.ctm`) as Uint8Array,
    };
    const streamed = new MemoryStore();
    const b = host(streamed);
    b.daemon.takeContainerState.resolves(state);
    const hold = await b.action.run(step('pre-restore', { initPid: null, container: 'c0ffee' }), opts);
    assert.match(hold.summary, /dropped until network-unlock .*\(the state a peer sent this host\)$/);
    assert.deepEqual(b.daemon.takeContainerState.firstCall.args, ['c0ffee']);
    assert.ok(streamed.files.has(`${DIR}/ctmigrate.json`) && streamed.files.has(`${DIR}/ctmigrate.ctm`));
    const done = await b.action.run(step('network-unlock'), opts);
    assert.match(done.summary, /^imported 3 of 3 entries/);
    assert.equal(b.drops.held.size, 0);
    // Without CTMIGRATE_CONTAINER the daemon is not asked; with one it has nothing for, nothing happens.
    const c = host(new MemoryStore());
    assert.match((await c.action.run(step('pre-restore', { initPid: null }), opts)).summary, /nothing to hold/);
    assert.equal(c.daemon.takeContainerState.callCount, 0);
    assert.match((await c.action.run(step('pre-restore', { initPid: null, container: 'c0ffee' }), opts)).summary, /nothing to hold/);
  });

  it('a state from a peer that does not check out stops pre-restore with nothing written or dropped', async () => {
    const source = new MemoryStore();
    const a = host(source);
    for (const f of containerFlows()) a.kernel.put(f);
    await a.action.run(step('network-lock'), opts);
    const bad = Uint8Array.from(source.files.get(`${DIR}/ctmigrate.ctm`) as Uint8Array);
    bad[0] ^= 0xff;
    const b = host(new MemoryStore());
    b.daemon.takeContainerState.resolves({ container: 'c0ffee', manifest: Buffer.from(source.files.get(`${DIR}/ctmigrate.json`) as Uint8Array).toString(), snapshot: bad });
    await assert.rejects(b.action.run(step('pre-restore', { initPid: null, container: 'c0ffee' }), opts), /the state a peer sent for container c0ffee: the snapshot does not match the manifest's SHA-256; nothing done/);
    assert.equal(b.drops.calls.length, 0);
  });
});

describe('container id and addresses', () => {
  it('reads the runtime\'s id from a cgroup path', () => {
    const id = 'a'.repeat(64);
    assert.equal(containerIdFromCgroup(`0::/machine.slice/libpod-${id}.scope/container\n`), id);
    assert.equal(containerIdFromCgroup(`0::/system.slice/docker-${id}.scope\n`), id);
    assert.equal(containerIdFromCgroup(`0::/kubepods.slice/kubepods-besteffort.slice/crio-${id}.scope\n`), id);
    assert.equal(containerIdFromCgroup(`12:pids:/default/${id}\n0::/default/${id}\n`), id);
    assert.equal(containerIdFromCgroup('0::/lxc.payload.web1\n'), 'web1');
    assert.equal(containerIdFromCgroup('0::/user.slice/user-0.slice/session-3.scope\n'), null);
  });

  it('keeps the global addresses of an ip -j listing, once each', () => {
    const json = JSON.stringify([
      { ifname: 'lo', addr_info: [{ family: 'inet', local: '127.0.0.1', scope: 'host' }, { family: 'inet6', local: '::1', scope: 'host' }] },
      { ifname: 'eth0', addr_info: [{ family: 'inet', local: CTR, scope: 'global' }, { family: 'inet6', local: 'fe80::1', scope: 'link' }, { family: 'inet6', local: '2001:db8::10', scope: 'global' }] },
      { ifname: 'eth1', addr_info: [{ family: 'inet', local: CTR, scope: 'global' }] },
    ]);
    assert.deepEqual(globalAddresses(json).map(text), [CTR, '2001:db8::10']);
    assert.throws(() => globalAddresses('nope'), /no JSON/);
  });

  it('a manifest round-trips, and each bad field is named', () => {
    const m = { format: MANIFEST_FORMAT, container: 'web1', addresses: [parseAddress(CTR)], entries: 2, bytes: 10, sha256: 'ab'.repeat(32), host: 'h', packedAt: 1_700_000_000_000 } as const;
    const back = parseManifest(encodeManifest({ ...m, addresses: [...m.addresses] }));
    assert.equal(back.container, 'web1');
    assert.equal(back.packedAt, m.packedAt);
    const bad = (o: Record<string, unknown>): string => JSON.stringify({ ...JSON.parse(encodeManifest({ ...m, addresses: [...m.addresses] })), ...o });
    assert.throws(() => parseManifest('['), /not JSON/);
    assert.throws(() => parseManifest(bad({ container: '../x' })), /container "\.\.\/x" is not a container id/);
    assert.throws(() => parseManifest(bad({ addresses: [] })), /addresses must be a list of 1 to 64/);
    assert.throws(() => parseManifest(bad({ addresses: ['224.0.0.1'] })), /224\.0\.0\.1 is a multicast address/);
    assert.throws(() => parseManifest(bad({ entries: -1 })), /entries -1 is not a count/);
    assert.throws(() => parseManifest(bad({ sha256: 'x' })), /sha256 is not 64 hex digits/);
  });
});
