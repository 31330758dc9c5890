// Containers through CRIU's action scripts (issue 10): the container's
// network namespace moves from host A to host B with live TCP flows through
// strict firewalls with a DNAT'd published port and SNAT'd egress, and
// `ctmigratectl criu-action` is run as CRIU runs it (lab/container-lab.ts).

import { strict as assert } from 'node:assert';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ContainerLab, CriuRun, CT } from './lab/container-lab';
import { reapStaleNamespaces } from './lab/netns';

const say = (line: string): void => {
  if (process.env.CTMIGRATE_LAB_VERBOSE) process.stderr.write(`      ${line}\n`);
};

describe('containers: ctmigratectl criu-action run by CRIU (DNAT published port, SNAT egress, strict firewalls)', function () {
  this.timeout(180_000);
  let lab: ContainerLab | undefined;

  before(async function () {
    if (process.getuid?.() !== 0) this.skip();
    await reapStaleNamespaces();
    lab = await ContainerLab.build();
  });

  after(async () => {
    await lab?.close();
  });

  afterEach(async () => {
    await lab?.reset();
  });

  it('every flow survives the move, NAT\'d ones included; nothing is forwarded on B before the import; A is clean afterwards', async () => {
    const m = lab as ContainerLab;
    const K = 40;
    const out = await m.migrate({ flows: K, run: 'ok', progress: say });
    say(`published ${out.published.kept}/${K} kept (longest stall ${out.published.maxStallMs} ms), egress ${out.egress.kept}/${K} (${out.egress.maxStallMs} ms); ${out.manifest?.entries} entries carried; frozen ${out.frozenMs} ms`);
    say(`forwarding on B: ${JSON.stringify(out.forwarding)}`);
    for (const l of [...out.dumpLog, ...out.restoreLog]) say(`  ${l}`);
    assert.equal(out.published.broken, 0, JSON.stringify(out.published.reasons));
    assert.equal(out.egress.broken, 0, JSON.stringify(out.egress.reasons));
    assert.equal(out.published.kept, K);
    assert.equal(out.egress.kept, K);
    // The checkpoint holds the container's entries, both kinds.
    assert.ok(out.manifest, 'no ctmigrate.json in the image directory');
    assert.deepEqual(out.manifest.addresses, [CT.container]);
    assert.ok(out.manifest.entries >= 2 * K, `only ${out.manifest.entries} entries packed`);
    // B held the drop while the container's packets were arriving, and forwarded none of them until it was lifted.
    assert.ok(out.forwarding.blockedSamples > 0, 'B never showed the drop');
    assert.ok(out.forwarding.droppedWhileBlocked > 0, 'no packet of the container reached B while it was blocked');
    assert.equal(out.forwarding.forwardedWhileBlocked, 0, 'B forwarded packets of the container before the import');
    assert.ok(out.forwarding.forwarded > 0, 'B forwarded nothing after the import');
    // B has the flows with their NAT bindings; A has nothing left; no drop anywhere.
    const dnat = out.entriesB.filter((l) => l.includes(`dst=${CT.published} `) && l.includes(`dport=${CT.publishedPort} `));
    const snat = out.entriesB.filter((l) => l.includes(`src=${CT.container} `) && l.includes(`dst=${CT.published} `) && l.includes(`sport=${CT.egressPort} `));
    assert.ok(dnat.length >= K, `B holds ${dnat.length} DNAT'd entries`);
    assert.ok(snat.length >= K, `B holds ${snat.length} SNAT'd entries`);
    assert.deepEqual(out.entriesA, [], 'A kept entries of the container');
    assert.ok(!out.tablesA.some((t) => t.includes('ctmigrate')), out.tablesA.join(', '));
    assert.ok(!out.tablesB.some((t) => t.includes('ctmigrate')), out.tablesB.join(', '));
    assert.ok(Object.values(out.codes).every((c) => c === 0), JSON.stringify(out.codes));
    assert.ok(out.restoreLog.some((l) => /network-unlock: container \S+: imported \d+ of \d+ entries/.test(l)), out.restoreLog.join('\n'));
  });

  it('without the action script the same move breaks the flows (what users see today)', async () => {
    const m = lab as ContainerLab;
    const out = await m.migrate({ flows: 10, run: 'control', withoutCtmigrate: true, breakMs: 3000, progress: say });
    say(`without ctmigrate: published ${out.published.kept}/10 kept, egress ${out.egress.kept}/10`);
    assert.equal(out.published.kept, 0, JSON.stringify(out.published));
    assert.equal(out.egress.kept, 0, JSON.stringify(out.egress));
    assert.equal(out.manifest, null);
  });

  it('a restore that fails (CRIU exits after post-setup-namespaces) leaves both hosts clean: the drop is lifted, nothing imported, A empty', async () => {
    const m = lab as ContainerLab;
    const out = await m.migrate({ flows: 10, run: 'fail', failAfter: 'post-setup-namespaces', progress: say });
    // The watcher started at pre-restore lifts the drop once CRIU is gone.
    const deadline = Date.now() + 5_000;
    let tables = out.tablesB;
    while (tables.some((t) => t.includes('ctmigrate_containers')) && Date.now() < deadline) {
      await sleep(100);
      tables = await m.tables(m.b);
    }
    assert.ok(!tables.some((t) => t.includes('ctmigrate')), `B still has ${tables.join(', ')}`);
    assert.deepEqual(out.entriesB, [], 'B imported entries for a restore that failed');
    assert.deepEqual(await m.entries(m.b), []);
    assert.deepEqual(out.entriesA, []);
    assert.ok(!out.tablesA.some((t) => t.includes('ctmigrate')));
    // The entries live on in the checkpoint, for a restore anywhere.
    assert.ok((out.manifest?.entries ?? 0) >= 20);
  });

  it('a restore that fails while CRIU lives on (its restored init killed) has its drop lifted too: B is clean, CRIU still running', async () => {
    const m = lab as ContainerLab;
    const out = await m.migrate({ flows: 5, run: 'init-dies', failAfter: 'post-setup-namespaces', failBy: 'init-dies', progress: say });
    assert.equal(out.liftedWhileCriuRuns, true, 'the drop was not lifted while CRIU lived on');
    assert.ok(!out.tablesB.some((t) => t.includes('ctmigrate')), `B still has ${out.tablesB.join(', ')}`);
    assert.deepEqual(out.entriesB, []);
  });

  it('after a failed restore on B the same checkpoint restored back on A brings every entry back there, and every flow survives', async () => {
    const m = lab as ContainerLab;
    const out = await m.migrate({ flows: 10, run: 'back', failAfter: 'post-setup-namespaces', thenRestoreOnA: true, breakMs: 10_000, progress: say });
    assert.match(out.backLog.join('\n'), /network-unlock: container \S+: imported 20 of 20 entries/);
    assert.equal(out.published.kept, 10, JSON.stringify(out.published));
    assert.equal(out.egress.kept, 10, JSON.stringify(out.egress));
    assert.ok(out.entriesA.length >= 20, `A holds ${out.entriesA.length} entries`);
    // The watcher lifted B's drop once CRIU there was gone; B imported nothing.
    const deadline = Date.now() + 5_000;
    let tables = out.tablesB;
    while (tables.some((t) => t.includes('ctmigrate')) && Date.now() < deadline) {
      await sleep(100);
      tables = await m.tables(m.b);
    }
    assert.ok(!tables.some((t) => t.includes('ctmigrate')), tables.join(', '));
    assert.deepEqual(out.entriesB, []);
    assert.ok(!out.tablesA.some((t) => t.includes('ctmigrate')), out.tablesA.join(', '));
  });

  it('a dump that leaves the container running (--leave-running: network-unlock on the source) puts A\'s entries back and keeps every flow on A', async () => {
    const m = lab as ContainerLab;
    const pid = await m.initPid();
    const flows = await m.startFlows(10);
    await sleep(300);
    await Promise.all([flows.published.mark(), flows.egress.mark()]);
    const before = await m.entries(m.a);
    const dir = await m.imageDir('leave-running');
    const dump = await CriuRun.start(m.lab, m.a, dir);
    assert.equal(await dump.step('pre-dump'), 0);
    await m.freeze();
    assert.equal(await dump.step('network-lock', pid), 0, dump.log.join('\n'));
    await m.lockNetwork();
    assert.equal(await dump.step('post-dump', pid), 0, dump.log.join('\n'));
    assert.deepEqual(await m.entries(m.a), [], 'post-dump left entries on A');
    // The tasks go on running here: CRIU unlocks the network on the source.
    assert.equal(await dump.step('network-unlock', pid), 0, dump.log.join('\n'));
    await m.unlockNetwork();
    await m.thaw();
    await dump.end();
    assert.deepEqual(await m.entries(m.a), before, 'A did not get its entries back as they were');
    await sleep(1_500);
    const [p, e] = await Promise.all([flows.published.report(), flows.egress.report()]);
    assert.equal(p.kept, 10, JSON.stringify(p));
    assert.equal(e.kept, 10, JSON.stringify(e));
    assert.match(dump.log.join('\n'), /network-unlock: container \S+: imported 20 of 20 entries \(created 20, replaced 0, failed 0\)/);
    await flows.published.stop();
    await flows.egress.stop();
  });

  it('a damaged checkpoint stops the restore at pre-restore with nothing changed, and says how to go on', async () => {
    const m = lab as ContainerLab;
    const pid = await m.initPid();
    const dir = await m.imageDir('damaged');
    const dump = await CriuRun.start(m.lab, m.a, dir);
    assert.equal(await dump.step('network-lock', pid), 0, dump.log.join('\n'));
    await dump.end();
    const snapshot = join(dir, 'ctmigrate.ctm');
    const bytes = await readFile(snapshot);
    bytes[bytes.length - 1] ^= 0xff;
    await writeFile(snapshot, bytes);
    const restore = await CriuRun.start(m.lab, m.b, dir);
    assert.equal(await restore.step('pre-restore'), 1);
    assert.match(restore.log.join('\n'), /ctmigrate\.ctm in the checkpoint does not match the manifest's SHA-256; nothing done \(remove ctmigrate\.json and ctmigrate\.ctm to restore without connection state\)/);
    await restore.die();
    assert.ok(!(await m.tables(m.b)).some((t) => t.includes('ctmigrate')));
    // A manifest that is not one.
    await writeFile(join(dir, 'ctmigrate.json'), '{"format":"ctmigrate-checkpoint/1","container":"x","addresses":["127.0.0.1"]}');
    const again = await CriuRun.start(m.lab, m.b, dir);
    assert.equal(await again.step('pre-restore'), 1);
    assert.match(again.log.join('\n'), /ctmigrate\.json in the checkpoint: address 127\.0\.0\.1 is a loopback address/);
    await again.die();
    // Without ctmigrate's files the steps do nothing and never fail.
    const empty = await m.imageDir('empty');
    const plain = await CriuRun.start(m.lab, m.b, empty);
    for (const a of ['pre-restore', 'setup-namespaces', 'network-unlock', 'post-resume']) assert.equal(await plain.step(a, a === 'pre-restore' ? undefined : pid), 0, plain.log.join('\n'));
    await plain.end();
    assert.ok(!(await m.tables(m.b)).some((t) => t.includes('ctmigrate')));
  });
});

describe('containers over the peer channel (CTMIGRATE_DESTINATION at the dump, images streamed to B without ctmigrate files)', function () {
  this.timeout(180_000);
  let lab: ContainerLab | undefined;

  before(async function () {
    if (process.getuid?.() !== 0) this.skip();
    await reapStaleNamespaces();
    lab = await ContainerLab.build({ daemons: true });
  });

  after(async () => {
    await lab?.close();
  });

  it('network-lock sends the state to B\'s daemon; pre-restore takes it from there; every flow survives, A is clean', async () => {
    const m = lab as ContainerLab;
    const K = 20;
    const out = await m.migrate({
      flows: K,
      run: 'peer',
      streamed: true,
      dumpEnv: { CTMIGRATE_DESTINATION: `${CT.peerB}:${CT.peerPort}`, CTMIGRATE_CONTAINER: 'web1' },
      restoreEnv: { CTMIGRATE_CONTAINER: 'web1' },
      progress: say,
    });
    for (const l of [...out.dumpLog, ...out.restoreLog]) say(`  ${l}`);
    assert.match(out.dumpLog.join('\n'), new RegExp(`network-lock: container web1: packed \\d+ entries .* into the checkpoint; sent to ${CT.peerB}:${CT.peerPort}`));
    assert.match(out.restoreLog.join('\n'), /pre-restore: container web1: traffic of 192\.0\.2\.10 dropped until network-unlock .*\(the state a peer sent this host\)/);
    assert.equal(out.published.kept, K, JSON.stringify(out.published));
    assert.equal(out.egress.kept, K, JSON.stringify(out.egress));
    assert.equal(out.forwarding.forwardedWhileBlocked, 0);
    assert.ok(out.forwarding.blockedSamples > 0);
    assert.ok(out.entriesB.length >= 2 * K, `B holds ${out.entriesB.length} entries`);
    assert.deepEqual(out.entriesA, []);
    assert.ok(!out.tablesB.some((t) => t.includes('ctmigrate')), out.tablesB.join(', '));
  });
});
