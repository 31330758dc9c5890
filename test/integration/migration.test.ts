// Live migration of a real QEMU VM between two hosts with strict firewalls
// (lab: test/integration/lab/migration-lab.ts), with busy TCP flows through
// the VM, checked the way a user would: do the flows keep working, what do
// `conntrack -L` and `nft list tables` show on each host, what do the
// programs exit with and print.

import { strict as assert } from 'node:assert';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ADDR, MigrationLab, MIGRATION_PORT, PEER_PORT, VM_UUID } from './lab/migration-lab';
import { reapStaleNamespaces } from './lab/netns';
import { setTimeout as sleep } from 'node:timers/promises';

const K = 200;

function isRoot(): boolean {
  return process.getuid?.() === 0;
}

/** Build a lab for one test; closed in afterEach whatever happened. */
let current: MigrationLab | null = null;
async function lab(options?: Parameters<typeof MigrationLab.build>[0]): Promise<MigrationLab> {
  current = await MigrationLab.build(options);
  return current;
}

describe('live migration through strict firewalls (real QEMU, namespaces)', function () {
  this.timeout(300_000);

  before(async function () {
    if (!isRoot()) this.skip();
    await reapStaleNamespaces();
  });

  afterEach(async () => {
    const l = current;
    current = null;
    await l?.close();
  });

  it(`keeps all ${K} flows via dbus-vmstate while flows open and close during pre-copy`, async () => {
    const m = await lab();
    const out = await m.migrate({ mode: 'vmstate', flows: K, churn: 20 });
    assert.ok(out.flows.flows >= K, `${out.flows.flows} flows tracked`);
    assert.equal(out.flows.kept, out.flows.flows, `broken: ${JSON.stringify(out.flows.reasons)}`);
    assert.equal(out.flows.closed, 20);
    assert.ok(out.flows.maxStallMs < 5_000);
    assert.equal(out.destination?.state, 'ready');
    assert.equal(out.destination?.blocked, false);
    assert.equal(out.destination?.refused, 0);
    assert.ok((out.destination?.committed ?? 0) >= K + 20, `committed ${out.destination?.committed}`);
    assert.equal(out.source?.state, 'migrated');
    // finish --result migrated on A deleted the VM's entries there; B holds them.
    assert.equal(out.entriesA, 0);
    assert.ok(out.entriesB >= K, `B has ${out.entriesB} entries of the VM`);
    assert.ok(!(await m.nftTables(m.b)).includes('table inet ctmigrate'), 'the drop table is gone on B');
  });

  it(`keeps all ${K} flows via the fallback (ctmigratectl cutover at STOP, no dbus-vmstate)`, async () => {
    const m = await lab();
    const out = await m.migrate({ mode: 'fallback', flows: K, churn: 20 });
    assert.ok(out.flows.flows >= K);
    assert.equal(out.flows.kept, out.flows.flows, `broken: ${JSON.stringify(out.flows.reasons)}`);
    assert.notEqual(out.cutoverMs, null);
    assert.equal(out.destination?.state, 'ready');
    assert.equal(out.destination?.blocked, false);
    assert.ok((out.destination?.committed ?? 0) >= K + 20);
    assert.equal(out.source?.state, 'migrated');
    assert.equal(out.entriesA, 0);
    assert.ok(out.entriesB >= K);
  });

  it(`breaks the flows without ctmigrate (control: same move, no prepare-incoming)`, async () => {
    const m = await lab();
    const out = await m.migrate({ mode: 'control', flows: K });
    assert.equal(out.flows.flows, K);
    assert.equal(out.flows.kept, 0, `kept ${out.flows.kept}: the strict firewall on B should drop mid-stream packets`);
    assert.equal(out.entriesB, 0, 'B never learnt the flows');
  });

  it('drops the VM traffic on the destination until cut-over in the fallback', async () => {
    const m = await lab();
    await m.register(m.a);
    const [qa, qb] = await Promise.all([m.startQemu(m.a), m.startQemu(m.b)]);
    const flows = await m.startFlows(50, 15_000);
    await m.prepareIncoming();
    await m.waitSession(m.b, (s) => s.state === 'streaming', 'streaming');
    await qa.migrate(`tcp:${ADDR.peerB}:${MIGRATION_PORT}`);
    assert.equal((await qa.waitMigration()).status, 'completed');
    await qb.qmp.waitEvent('RESUME');
    const dropsBefore = await m.dropCounter(m.b);
    // The VM runs on B and its network is there, but A has not cut over yet.
    await m.moveVmToB();
    await sleep(500);
    const blocked = await flows.report();
    await sleep(1_500);
    const stillBlocked = await flows.report();
    assert.equal(stillBlocked.echoes, blocked.echoes, 'no echo passes B before the cut-over');
    assert.ok((await m.dropCounter(m.b)) > dropsBefore, 'the ctmigrate drop rules on B count the VM traffic');
    const session = await m.session(m.b);
    assert.equal(session?.blocked, true);
    assert.notEqual(session?.state, 'ready');

    const r = await m.ctlOk(m.a, ['cutover', '--vm', VM_UUID]);
    assert.match(r.stdout, /cutover/);
    await m.waitSession(m.b, (s) => s.state === 'ready' && !s.blocked, 'ready and unblocked');
    // TCP backs off while dropped: give the retransmissions time to get through.
    const deadline = Date.now() + 10_000;
    let after = await flows.report();
    while (after.echoes - stillBlocked.echoes < 50 * 3 && Date.now() < deadline) {
      await sleep(250);
      after = await flows.report();
    }
    assert.equal(after.kept, after.flows, `broken: ${JSON.stringify(after.reasons)}`);
    assert.ok(after.echoes - stillBlocked.echoes >= 150, 'the flows echo again after the cut-over');
    await m.ctlOk(m.a, ['finish', '--vm', VM_UUID, '--result', 'migrated']);
    await m.ctlOk(m.b, ['finish', '--vm', VM_UUID, '--result', 'migrated']);
    assert.ok(!(await m.nftTables(m.b)).includes('table inet ctmigrate'));
  });

  it('leaves both hosts as they were after a cancelled QEMU migration (abort on B, finish failed on A)', async () => {
    const m = await lab();
    const objA = await m.register(m.a);
    const objB = await m.register(m.b);
    const [qa, qb] = await Promise.all([m.startQemu(m.a, objA), m.startQemu(m.b, objB)]);
    const flows = await m.startFlows(50);
    const tablesB = await m.nftTables(m.b);
    const entriesB = await m.conntrack(m.b);
    await m.prepareIncoming();
    await m.waitSession(m.b, (s) => s.state === 'streaming', 'streaming');
    assert.ok((await m.conntrack(m.b)).length >= 50, 'B imported the pre-copy');
    const entriesA = await m.conntrack(m.a);
    // Slow the memory copy to a crawl so the cancel lands mid-way.
    await qa.setMaxBandwidth(4096);
    await qa.migrate(`tcp:${ADDR.peerB}:${MIGRATION_PORT}`);
    await sleep(500);
    assert.equal((await qa.migrationStatus()).status, 'active');
    await qa.cancelMigration();
    const st = await qa.waitMigration();
    assert.equal(st.status, 'cancelled');
    assert.equal(await qa.runState(), 'running');

    const abort = await m.ctl(m.b, ['abort', '--vm', VM_UUID]);
    assert.equal(abort.code, 0, abort.stderr);
    const finish = await m.ctl(m.a, ['finish', '--vm', VM_UUID, '--result', 'failed']);

    assert.deepEqual(await m.nftTables(m.b), tablesB, 'no ctmigrate drop left on B');
    assert.deepEqual(await m.conntrack(m.b), entriesB, 'nothing of the VM left imported on B');
    assert.deepEqual(await m.conntrack(m.a), entriesA, "A's entries untouched");
    const report = await flows.report();
    assert.equal(report.kept, report.flows, 'the VM still runs on A and its flows work');
    assert.equal((await m.session(m.a))?.state, 'failed');
    await qb.quit();
    // The hook (or an operator) closing the failed migration on the source must succeed,
    // even though the source already ended its side when B aborted.
    assert.equal(finish.code, 0, `finish --result failed on A after abort on B: exit ${finish.code}: ${finish.stderr.trim()}`);
  });

  describe('hostile peers against a running ctmigrated', () => {
    it('refuses no key, wrong key, garbage, oversized frames and 300 idle sockets, stays up, and still migrates', async () => {
      const m = await lab();
      const target = [ADDR.peerA, String(PEER_PORT)];
      const wrongKey = join(m.dir, 'wrong.psk');
      await writeFile(wrongKey, randomBytes(32).toString('hex'), { mode: 0o600 });

      const noKey = await m.hostile(m.b, ['no-key', ...target]);
      assert.equal(noKey.closed, true, `no key: ${JSON.stringify(noKey)}`);
      const wrong = await m.hostile(m.b, ['wrong-key', ...target, wrongKey]);
      assert.ok(wrong.handshake === false || (wrong.closed === true && wrong.received === 0), `wrong key: ${JSON.stringify(wrong)}`);
      const garbage = await m.hostile(m.b, ['garbage', ...target, m.pskFile]);
      assert.equal(garbage.closed, true, `garbage: ${JSON.stringify(garbage)}`);
      const oversize = await m.hostile(m.b, ['oversize', ...target, m.pskFile]);
      assert.equal(oversize.closed, true, `oversize: ${JSON.stringify(oversize)}`);

      const idle = m.lab.spawn(m.b.ns, process.execPath, [join(__dirname, 'lab', 'hostile-peer.js'), 'idle', ...target, '300', '4000']);
      await idle.waitFor(/^opened 300$/m, 15_000);
      const st = await m.ctl(m.a, ['status']);
      assert.equal(st.code, 0, st.stderr);
      assert.match(st.stdout, /^ctmigrated /);
      const idleResult = await idle.waitFor(/^result (\{.*\})$/m, 15_000);
      const counts = JSON.parse(idleResult[1] as string) as { closedByServer: number };
      assert.ok(counts.closedByServer >= 300 - 64, `the daemon dropped only ${counts.closedByServer} of 300 idle sockets`);

      assert.ok(m.a.daemon?.running, 'ctmigrated on A still runs');
      assert.equal((await m.ctl(m.a, ['status', '--json'])).code, 0);
      const out = await m.migrate({ mode: 'vmstate', flows: 50 });
      assert.equal(out.flows.kept, out.flows.flows, `broken: ${JSON.stringify(out.flows.reasons)}`);
      assert.equal(out.destination?.state, 'ready');
    });

    it("carries only the VM's entries from a source kernel that holds crafted ones, and leaves B's own colliding flow alone", async () => {
      const m = await lab();
      const EST = ['--state', 'ESTABLISHED', '-u', 'SEEN_REPLY,ASSURED', '-t', '3600'];
      const insert = (ns: typeof m.a.ns, args: string[]) => ns.execOk('conntrack', ['-I', ...args]);
      // The VM's own flow: it is the original destination.
      await insert(m.a.ns, ['-p', 'tcp', '-s', '203.0.113.100', '-d', ADDR.vm, '--sport', '41000', '--dport', '7000', ...EST]);
      // Foreign: the VM only as the reply source, with no NAT that explains it (the finding's UDP flow).
      await insert(m.a.ns, ['-p', 'udp', '-s', '198.51.100.66', '-d', '203.0.113.5', '--sport', '5555', '--dport', '3306', '-r', ADDR.vm, '-q', '198.51.100.66', '--reply-port-src', '3306', '--reply-port-dst', '5555', '-t', '60']);
      // The VM's addresses, but a zone in one direction only: never the VM's (its zone is the same both ways).
      await insert(m.a.ns, ['-p', 'tcp', '-s', ADDR.vm, '-d', '203.0.113.9', '--sport', '43000', '--dport', '443', ...EST, '--orig-zone', '7']);
      // The VM's through SNAT (the VM is the SNAT address), with the same original tuple as a flow B holds itself.
      const hostTuple = ['-p', 'tcp', '-s', '198.51.100.20', '-d', '203.0.113.30', '--sport', '50022', '--dport', '22'];
      await insert(m.a.ns, [...hostTuple, ...EST, '--src-nat', `${ADDR.vm}:61000`]);
      await insert(m.b.ns, [...hostTuple, ...EST]);
      const hostFlow = async (): Promise<string[]> =>
        (await m.b.ns.execOk('conntrack', ['-L', '-s', '198.51.100.20'])).stdout.split('\n').filter((l) => l.includes('sport=50022')).map((l) => l.replace(/^(\S+\s+\d+\s+)\d+\s+/, '$1').replace(/\s+(use|id)=\d+/g, ''));
      const hostBefore = await hostFlow();
      assert.equal(hostBefore.length, 1, hostBefore.join('\n'));

      await m.register(m.a);
      await m.prepareIncoming(['--source', `${ADDR.peerA}:${PEER_PORT}`]);
      const s = await m.waitSession(m.b, (x) => (x.state === 'streaming' && x.committed + x.refused >= 4) || x.state === 'failed', 'snapshot imported');
      assert.equal(s.state, 'streaming', s.error);
      assert.equal(s.refused, 3, `refused ${s.refused}, committed ${s.committed}`);
      const onB = await m.conntrack(m.b);
      assert.equal(onB.length, 1, onB.join('\n'));
      assert.match(onB[0] as string, /sport=41000 dport=7000/);
      assert.deepEqual(await m.conntrack(m.b, '198.51.100.66'), [], 'the foreign flow never reached B');
      assert.deepEqual(await hostFlow(), hostBefore, "B's own flow is untouched");
      const log = m.b.daemon?.stderr ?? '';
      assert.match(log, /refused 2 entries that do not belong to the VM: /);
      assert.match(log, /refused 1 entries whose original tuple an entry that is not the VM's already holds; those entries are left alone/);

      await m.ctlOk(m.b, ['abort', '--vm', VM_UUID]);
      assert.deepEqual(await m.conntrack(m.b), [], 'abort removes what the session imported');
      assert.deepEqual(await hostFlow(), hostBefore, "and nothing else: B's own flow is still there");
    });

    it('lets only configured peers start a session, and a peer that floods frames after Start neither grows the daemon nor keeps the VM from migrating', async () => {
      const m = await lab();
      // A as an operator sets it up: B is the host it migrates with.
      await m.a.daemon?.stop();
      await m.startDaemon(m.a, ['--peer', `${ADDR.peerB}:${PEER_PORT}`]);
      await m.register(m.a);
      const target = [ADDR.peerA, String(PEER_PORT), m.pskFile, VM_UUID];
      // A host on the same network with the cluster key, but not a configured peer.
      await m.b.ns.execOk('ip', ['addr', 'add', '198.51.100.66/24', 'dev', 'peer']);
      const hijack = await m.hostile(m.b, ['start-flood', ...target, '0', '198.51.100.66']);
      assert.equal(hijack.closed, true, JSON.stringify(hijack));
      assert.match(String(hijack.errorText), /peer 198\.51\.100\.66 is not a configured peer of this host \(configured: 198\.51\.100\.2:7471\)/);
      assert.equal((await m.status(m.a)).sessions.length, 0, 'no session for the stranger');

      const rss = async (): Promise<number> => {
        const st = await m.a.ns.execOk('cat', [`/proc/${m.a.daemon?.pid}/status`]);
        return Number(/VmRSS:\s+(\d+) kB/.exec(st.stdout)?.[1] ?? NaN) * 1024;
      };
      const before = await rss();
      // 40 MiB of WhoHas after a Start from a configured peer: once took a daemon from 123 MB to 836 MB.
      const flood = await m.hostile(m.b, ['start-flood', ...target, '40']);
      const after = await rss();
      assert.ok(after - before < 64 * 1024 * 1024, `RSS grew by ${Math.round((after - before) / 1048576)} MiB (${JSON.stringify(flood)})`);
      assert.ok(m.a.daemon?.running, 'ctmigrated on A still runs');

      const out = await m.migrate({ mode: 'vmstate', flows: 20 });
      assert.equal(out.flows.kept, out.flows.flows, `broken: ${JSON.stringify(out.flows.reasons)}`);
      assert.equal(out.destination?.state, 'ready');
      assert.equal(out.source?.state, 'migrated');
    });

    it('refuses every bad shape a crafted peer sends, in the snapshot and in a delta, and counts each', async () => {
      const m = await lab();
      const fake = m.lab.spawn(m.a.ns, process.execPath, [join(__dirname, 'lab', 'hostile-peer.js'), 'crafted-source', ADDR.peerA, '7601', m.pskFile]);
      await fake.waitFor(/^ready 7601$/m);
      await m.prepareIncoming(['--source', `${ADDR.peerA}:7601`, '--zone', '0']);
      await fake.waitFor(/^offered 5\+5$/m);
      const s = await m.waitSession(m.b, (x) => (x.state === 'streaming' && x.committed + x.refused >= 10) || x.state === 'failed', 'snapshot and delta imported');
      assert.equal(s.state, 'streaming', s.error);
      assert.equal(s.committed, 2, `committed ${s.committed}`);
      assert.equal(s.refused, 8, `refused ${s.refused}`);
      const onB = await m.conntrack(m.b);
      assert.equal(onB.length, 2, onB.join('\n'));
      assert.match(onB.join('\n'), /sport=41000 dport=443/);
      assert.match(onB.join('\n'), /sport=42000 dport=443/);
      assert.deepEqual(await m.conntrack(m.b, '198.51.100.66'), [], 'no foreign flow');
      const log = m.b.daemon?.stderr ?? '';
      assert.match(log, /refused \d+ entries that do not belong to the VM: /);
      await m.ctlOk(m.b, ['abort', '--vm', VM_UUID]);
      assert.deepEqual(await m.conntrack(m.b), []);
    });

    it("imports only the VM's entry from a source that offers entries for foreign addresses", async () => {
      const m = await lab();
      const foreign = ['192.0.2.99', '198.51.100.77', '203.0.113.5'];
      const fake = m.lab.spawn(m.a.ns, process.execPath, [join(__dirname, 'lab', 'hostile-peer.js'), 'fake-source', ADDR.peerA, '7600', m.pskFile, ...foreign]);
      await fake.waitFor(/^ready 7600$/m);
      const tablesBefore = await m.nftTables(m.b);
      await m.prepareIncoming(['--source', `${ADDR.peerA}:7600`]);
      await fake.waitFor(/^offered 4$/m);
      const s = await m.waitSession(m.b, (x) => x.state === 'streaming' || x.state === 'failed', 'snapshot imported');
      assert.equal(s.state, 'streaming', s.error);
      assert.equal(s.refused, 3);
      assert.equal(s.committed, 1);
      const vmEntries = await m.conntrack(m.b);
      assert.equal(vmEntries.length, 1, vmEntries.join('\n'));
      assert.match(vmEntries[0] as string, /sport=41000 dport=7000/);
      for (const f of foreign) assert.deepEqual(await m.conntrack(m.b, f), [], `nothing for ${f} on B`);
      const json = JSON.parse((await m.ctlOk(m.b, ['status', '--json'])).stdout) as { sessions: Array<{ refused: number }> };
      assert.ok((json.sessions[0]?.refused ?? 0) > 0);

      await m.ctlOk(m.b, ['abort', '--vm', VM_UUID]);
      assert.deepEqual(await m.conntrack(m.b), [], 'the imported entry is removed by abort');
      assert.deepEqual(await m.nftTables(m.b), tablesBefore.filter((t) => t !== 'table inet ctmigrate'));
    });
  });
});
