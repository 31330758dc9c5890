// A real libvirt live migration between two libvirtd "hosts" on this
// machine, each with its own system bus, ctmigrated and the project's hook
// (packaging/libvirt/qemu.d/ctmigrate) linked into its hooks/qemu.d/. The
// hosts, the client and the VM's network are built by lab/libvirt-hosts.ts.
//
// Needs root and the Debian packages libvirt-daemon,
// libvirt-daemon-driver-qemu, libvirt-clients and qemu-system-x86
// (--no-install-recommends); skipped, saying what is missing, without them.

import { strict as assert } from 'node:assert';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { insert } from './lab/conntrack-cli';
import { Flows } from './lab/flows';
import {
  abortedMigration,
  blockState,
  LAB_ADDR,
  LabVm,
  libvirtLabUnavailable,
  LibvirtMigrationLab,
  migrateWithNetwork,
  newLabVm,
  qemuObjects,
  qemuPidsOf,
  REPO_HOOK,
  startPlainVm,
  startLabVm,
  until,
  vmTraces,
  VmTraces,
} from './lab/libvirt-hosts';
import { Lab, reapStaleNamespaces, run } from './lab/netns';
import { join } from 'node:path';

/** Flows kept open through the migration. */
const FLOWS = 240;
/** Longest gap between two echoes of one flow that still counts as "no stall". */
const MAX_STALL_MS = 1000;
/** The same on the event path, which cuts over at the pause without QEMU waiting for it. */
const EVENT_MAX_STALL_MS = 1500;
/**
 * A probe's echo is stamped by the prober when it arrives; B's readyAt is
 * stamped by ctmigrated just after its nft transaction lifting the drop has
 * returned. An echo through the freshly opened path can be stamped a moment
 * before readyAt, never by more than this.
 */
const STAMP_SLACK_MS = 20;

const HOOK_PROGRAM = join(__dirname, '..', '..', 'adapters', 'cli', 'libvirt-hook.js');

/** A process's identity: pid plus its start time (a reused pid is another process). */
function processId(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Field 22 (starttime), counted after the parenthesised command name.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const comm = readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
    return `${pid}@${fields[19]} ${comm}`;
  } catch {
    return undefined;
  }
}

/** Live processes whose command line names one of `dirs`. */
function processesNaming(dirs: readonly string[]): string[] {
  const found: string[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8').replace(/\0/g, ' ');
      if (dirs.some((d) => cmdline.includes(d))) found.push(`${entry}: ${cmdline.slice(0, 160)}`);
    } catch {
      // exited meanwhile
    }
  }
  return found;
}

/** CTMIGRATE_LAB_VERBOSE=1 prints what the migrations did. */
const say = (line: string): void => {
  if (process.env.CTMIGRATE_LAB_VERBOSE) process.stderr.write(`      ${line}\n`);
};

function show(t: VmTraces): string {
  return JSON.stringify(t);
}

describe('live migration through libvirt (two libvirtd hosts, hook, ctmigrated, strict firewalls)', function () {
  this.timeout(300_000);
  let lab: Lab | undefined;
  let m: LibvirtMigrationLab;
  const madeNamespaces: string[] = [];
  const madeDirs: string[] = [];

  const logs = (): string => (m ? `${m.a.logs(40)}\n${m.b.logs(40)}` : '');

  before(async function () {
    const why = libvirtLabUnavailable();
    if (why) {
      process.stderr.write(`    libvirt lab skipped: ${why}\n`);
      this.skip();
    }
    assert.ok(existsSync(REPO_HOOK), `the hook ${REPO_HOOK} is missing`);
    assert.ok(existsSync(HOOK_PROGRAM), `the hook's program ${HOOK_PROGRAM} is missing (build first)`);
    await reapStaleNamespaces();
    lab = new Lab();
    m = await LibvirtMigrationLab.build(lab);
    madeNamespaces.push(m.client.name, m.vmNet.name, m.a.ns.name, m.b.ns.name);
    madeDirs.push(m.a.dir, m.b.dir);
  });

  after(async function () {
    if (!lab) return;
    // Every process of the lab (libvirtd, virtlogd, QEMU, the buses,
    // ctmigrated, the supervisors) runs in one of its namespaces.
    const ran: string[] = [];
    for (const ns of [m?.client, m?.vmNet, m?.a.ns, m?.b.ns]) {
      for (const pid of (await ns?.pids().catch(() => [])) ?? []) {
        const id = processId(pid);
        if (id) ran.push(id);
      }
    }
    await lab.cleanup();
    // Everything the run made is gone: namespaces, folders, processes; the
    // mounts lived only in the hosts' mount namespaces, which died with
    // their last process.
    const listed = (await run('ip', ['netns', 'list'])).stdout;
    for (const ns of madeNamespaces) assert.ok(!listed.includes(ns), `namespace ${ns} left behind`);
    for (const dir of madeDirs) assert.ok(!existsSync(dir), `folder ${dir} left behind`);
    const mounts = readFileSync('/proc/self/mountinfo', 'utf8');
    for (const dir of madeDirs) assert.ok(!mounts.includes(dir), `a mount of ${dir} is visible outside the lab`);
    // The Lab SIGKILLs what ran in the namespaces; give the kernel a moment to reap them.
    let left: string[] = [];
    for (let i = 0; i < 50; i++) {
      left = [...ran.filter((id) => processId(Number(id.split('@')[0])) === id), ...processesNaming(madeDirs)];
      if (left.length === 0) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.deepEqual(left, [], 'processes left behind');
  });

  it(`moves a VM whose ${FLOWS} TCP flows cross strict firewalls: none is lost or stalls over ${MAX_STALL_MS} ms, B drops its traffic until the state is in, A is left clean`, async function () {
    const vm: LabVm = newLabVm(LAB_ADDR.vm, 'vm');
    await startLabVm(m.a, vm);
    const onA = await until(() => vmTraces(m.a, vm), (t) => t.registered && t.domain === 'running', 10_000);
    assert.ok(onA.registered, `the hook did not register the VM with A's ctmigrated: ${show(onA)}\n${logs()}`);
    assert.equal(onA.domain, 'running');

    const flows = await m.startFlows(FLOWS);
    const start = await flows.report();
    assert.equal(start.kept, FLOWS, `flows did not all come up: ${JSON.stringify(start)}`);
    const entriesOnA = (await vmTraces(m.a, vm)).entries;
    assert.ok(entriesOnA >= FLOWS, `A tracks ${entriesOnA} entries of the VM, expected at least ${FLOWS}`);
    await flows.mark();

    const migration = await migrateWithNetwork(m, vm, say);
    say(
      `migration: ${migration.finishedAt - migration.startedAt} ms; B blocked ${migration.blockLastSeenAt - migration.blockSeenAt}+ ms, ` +
        `${migration.droppedWhileBlocked} packets dropped, probes ${migration.probes.fail.length} refused / ${migration.probes.ok.length} echoed`,
    );
    assert.equal(migration.exitCode, 0, `virsh migrate failed: ${migration.stderr}\n${logs()}`);
    assert.ok(migration.resumedAt > 0, `B never reported "Resumed Migrated"\n${logs()}`);

    // Every flow survives, none stalls.
    await new Promise((r) => setTimeout(r, 1500));
    const end = await flows.report();
    assert.equal(end.broken, 0, `flows broken: ${JSON.stringify(end.reasons)}\n${logs()}`);
    assert.equal(end.kept, FLOWS);
    say(`flows: ${end.kept}/${FLOWS} kept, longest stall ${end.maxStallMs} ms, median ${end.medianStallMs} ms`);
    assert.ok(end.maxStallMs < MAX_STALL_MS, `a flow stalled ${end.maxStallMs} ms (limit ${MAX_STALL_MS})`);

    // B kept the VM's traffic out until its state was in.
    const bStatus = await m.b.status();
    const incoming = bStatus.sessions.filter((s) => s.vm === vm.uuid && s.role === 'destination').pop();
    assert.ok(incoming, `B has no incoming session for the VM: ${JSON.stringify(bStatus)}`);
    assert.ok(incoming.committed >= FLOWS, `B committed ${incoming.committed} entries, expected at least ${FLOWS}`);
    assert.ok(incoming.cutoverAt > 0, "the residual delta (QEMU's Save() on A's helper) never reached B");
    assert.ok(incoming.readyAt > 0, 'B never lifted its drop');
    assert.ok(migration.blockSeenAt > 0, "B's drop set never held the VM's address during the migration");
    assert.ok(migration.droppedWhileBlocked > 0, "B's drop rules counted no packet while blocking");
    assert.ok(migration.probes.fail.length > 0, 'no probe was refused while B blocked the VM');
    const early = migration.probes.ok.filter((t) => t < incoming.readyAt - STAMP_SLACK_MS);
    assert.deepEqual(early, [], `probes echoed through B before its state was in (ready at ${incoming.readyAt})`);
    assert.ok(migration.probes.ok.length > 0, 'no probe passed through B after the migration');
    assert.ok(incoming.readyAt <= migration.movedAt, 'the VM network moved to B before B lifted its drop');

    // A is clean; B runs the VM with its entries and no drop.
    const aAfter = await until(
      () => vmTraces(m.a, vm),
      (t) => !t.registered && t.openSessions.length === 0 && t.entries === 0 && !t.blocked && t.domain === '' && t.qemu === 0,
      15_000,
    );
    assert.deepEqual(
      { registered: aAfter.registered, openSessions: aAfter.openSessions, entries: aAfter.entries, blocked: aAfter.blocked, domain: aAfter.domain, qemu: aAfter.qemu },
      { registered: false, openSessions: [], entries: 0, blocked: false, domain: '', qemu: 0 },
      `A is not clean after the migration: ${show(aAfter)}\n${logs()}`,
    );
    assert.equal((await blockState(m.a.ns)).exists, false, 'A holds a ctmigrate drop table');
    const bAfter = await vmTraces(m.b, vm);
    assert.equal(bAfter.domain, 'running');
    // B's migrate begin hook pointed the dbus-vmstate object at B's own helper.
    const [qemuB] = await qemuPidsOf(m.b, vm.name);
    assert.ok(qemuB, "B's QEMU for the VM is not running");
    const argv = readFileSync(`/proc/${qemuB}/cmdline`, 'utf8').split('\0');
    const object = argv.find((a) => a.startsWith('dbus-vmstate,'));
    assert.ok(object?.includes(`addr=unix:path=${m.b.runDir}/`), `B's QEMU runs with ${object}, not B's helper bus under ${m.b.runDir}`);
    assert.equal(bAfter.registered, true, `B does not have the VM registered: ${show(bAfter)}`);
    assert.equal(bAfter.blocked, false, 'B still blocks the VM');
    assert.ok(bAfter.entries >= FLOWS, `B tracks ${bAfter.entries} entries of the VM`);
    assert.equal(incoming.path, 'vmstate', `B's session took path ${incoming.path}`);
    await retire(vm, flows);
  });

  /** The next flow test's VM uses the same address: this one goes, with its flows. */
  async function retire(vm: LabVm, flows: Flows): Promise<void> {
    await flows.stop();
    await m.b.virsh(['destroy', vm.name]);
    await until(() => vmTraces(m.b, vm), (t) => !t.registered && t.domain === '', 10_000);
    await m.resetVmNetwork();
  }

  /**
   * A VM started from plain XML on A (no metadata, no qemu:commandline),
   * then enabled while it runs: `ctmigratectl enable-vm --live`.
   */
  async function startPlainEnabledVm(tag: string, address: string = LAB_ADDR.vm): Promise<LabVm> {
    const vm = newLabVm(address, tag);
    await startPlainVm(m.a, vm);
    const before = await until(() => vmTraces(m.a, vm), (t) => t.domain === 'running', 10_000);
    assert.equal(before.registered, false, 'a VM without metadata is not registered by the hook');
    const out = await m.a.ctlOk(['enable-vm', vm.name, '--live', '--address', address, '--connect', m.a.uri]);
    assert.match(out, /enabled live and registered/);
    const xml = await m.a.virshOk(['dumpxml', vm.name]);
    assert.match(xml, /<ctmigrate:address>/, 'the live XML carries our metadata');
    assert.doesNotMatch(xml, /qemu:commandline/, 'enable-vm --live adds no <qemu:commandline>');
    const onA = await vmTraces(m.a, vm);
    assert.ok(onA.registered, `enable-vm --live did not register the VM with A's ctmigrated: ${show(onA)}`);
    return vm;
  }

  /**
   * FLOWS busy flows through A, a live migration to B with the VM's network
   * moved at B's resume; asserts every flow kept, the longest stall under
   * `maxStallMs`, B dropping until its state was in, A clean, B running the
   * VM with our object; returns the figures.
   */
  async function carriesFlows(vm: LabVm, path: string, maxStallMs: number): Promise<{ maxStallMs: number; kept: number; blockedMs: number }> {
    const flows = await m.startFlows(FLOWS);
    try {
      const start = await flows.report();
      assert.equal(start.kept, FLOWS, `flows did not all come up: ${JSON.stringify(start)}`);
      await flows.mark();
      const migration = await migrateWithNetwork(m, vm, say);
      assert.equal(migration.exitCode, 0, `virsh migrate failed: ${migration.stderr}\n${logs()}`);
      assert.ok(migration.resumedAt > 0, `B never reported "Resumed Migrated"\n${logs()}`);
      await new Promise((r) => setTimeout(r, 1500));
      const end = await flows.report();
      say(`${path}: ${end.kept}/${FLOWS} kept, longest stall ${end.maxStallMs} ms, median ${end.medianStallMs} ms`);
      assert.equal(end.broken, 0, `flows broken: ${JSON.stringify(end.reasons)}\n${logs()}`);
      assert.equal(end.kept, FLOWS);
      assert.ok(end.maxStallMs < maxStallMs, `a flow stalled ${end.maxStallMs} ms (limit ${maxStallMs})`);

      const incoming = (await m.b.status()).sessions.filter((s) => s.vm === vm.uuid && s.role === 'destination').pop();
      assert.ok(incoming, 'B has no incoming session for the VM');
      const outgoing = (await m.a.status()).sessions.filter((s) => s.vm === vm.uuid && s.role === 'source').pop();
      assert.equal(incoming.path, path, `B's session took path ${incoming.path}\n${logs()}`);
      assert.equal(outgoing?.path, path, "A's status shows another path");
      assert.ok(incoming.committed >= FLOWS, `B committed ${incoming.committed} entries`);
      assert.ok(incoming.readyAt > 0, 'B never lifted its drop');
      assert.ok(migration.blockSeenAt > 0 && migration.droppedWhileBlocked > 0, "B's drop never held or dropped anything");
      const early = migration.probes.ok.filter((t) => t < incoming.readyAt - STAMP_SLACK_MS);
      assert.deepEqual(early, [], `probes echoed through B before its state was in (ready at ${incoming.readyAt})`);
      assert.ok(migration.probes.ok.length > 0, 'no probe passed through B after the migration');

      const aAfter = await until(
        () => vmTraces(m.a, vm),
        (t) => !t.registered && t.openSessions.length === 0 && t.entries === 0 && !t.blocked && t.domain === '' && t.qemu === 0,
        15_000,
      );
      assert.deepEqual(
        { registered: aAfter.registered, openSessions: aAfter.openSessions, entries: aAfter.entries, blocked: aAfter.blocked, domain: aAfter.domain, qemu: aAfter.qemu },
        { registered: false, openSessions: [], entries: 0, blocked: false, domain: '', qemu: 0 },
        `A is not clean after the migration: ${show(aAfter)}\n${logs()}`,
      );
      const bAfter = await vmTraces(m.b, vm);
      assert.equal(bAfter.domain, 'running');
      assert.equal(bAfter.registered, true);
      assert.equal(bAfter.blocked, false);
      // B's migrate begin hook gave the incoming QEMU our object: the next migration from B is a vmstate one.
      assert.ok((await qemuObjects(m.b, vm)).includes(`ctmigrate-${vm.uuid.slice(0, 8)} child<dbus-vmstate>`), "B's QEMU runs without our dbus-vmstate object");
      return { maxStallMs: end.maxStallMs, kept: end.kept, blockedMs: migration.blockLastSeenAt - migration.blockSeenAt };
    } finally {
      await retire(vm, flows);
    }
  }

  it(`moves a plain VM enabled while it runs (enable-vm --live, no restart) by hot attach: ${FLOWS} flows kept, none stalls over ${MAX_STALL_MS} ms`, async function () {
    const vm = await startPlainEnabledVm('hot');
    // `check` tells the operator which path the next migration takes.
    const check = await m.a.ctl(['check', '--config', '/dev/null', '--libvirt-uri', m.a.uri]);
    assert.match(check.stdout, new RegExp(`^OK   VM ${vm.name}: registered; next migration: vmstate-hot`, 'm'), check.stdout);
    const r = await carriesFlows(vm, 'vmstate-hot', MAX_STALL_MS);
    say(`vmstate-hot: ${r.kept}/${FLOWS} flows, longest stall ${r.maxStallMs} ms, B blocked ${r.blockedMs}+ ms`);
    assert.match(m.a.daemonLog(), /cut-over path vmstate-hot/);
  });

  it(`with the monitor command refused, the event fallback carries the state: ${FLOWS} flows kept, none stalls over ${EVENT_MAX_STALL_MS} ms`, async function () {
    const vm = await startPlainEnabledVm('event');
    // An object of another type holds our object's id: QEMU refuses object-add.
    const id = `ctmigrate-${vm.uuid.slice(0, 8)}`;
    const put = await m.a.virshOk(['qemu-monitor-command', vm.name, JSON.stringify({ execute: 'object-add', arguments: { 'qom-type': 'secret', id, data: 'x' } })]);
    assert.doesNotMatch(put, /error/);
    const r = await carriesFlows(vm, 'event', EVENT_MAX_STALL_MS);
    say(`event: ${r.kept}/${FLOWS} flows, longest stall ${r.maxStallMs} ms, B blocked ${r.blockedMs}+ ms`);
    assert.match(m.a.daemonLog(), /cut-over path event: the dbus-vmstate object could not be added: QEMU refused object-add: an object .* of type child<secret> is in the way/);
  });

  it('a migration libvirt aborts after the hot attach leaves both hosts clean and the source VM running, its QEMU as before', async function () {
    const vm = await startPlainEnabledVm('hotabort', '192.0.2.22');
    const ENTRIES = 40;
    for (let i = 0; i < ENTRIES; i++) {
      await insert(m.a.ns, ['-p', 'tcp', '-s', vm.address, '-d', '203.0.113.50', '--sport', String(40000 + i), '--dport', '443', '--state', 'ESTABLISHED', '-u', 'SEEN_REPLY,ASSURED', '-t', '600']);
    }
    const objectsBefore = await qemuObjects(m.a, vm);
    const r = await abortedMigration(m, vm, 'domjobabort', say);
    assert.ok(r.abortedAt > 0, `the abort never happened (${r.what})\n${logs()}`);
    assert.notEqual(r.exitCode, 0);
    const aAfter = await until(() => vmTraces(m.a, vm), (t) => t.openSessions.length === 0 && !t.blocked, 15_000);
    assert.deepEqual(
      { registered: aAfter.registered, openSessions: aAfter.openSessions, entries: aAfter.entries, blocked: aAfter.blocked, domain: aAfter.domain, qemu: aAfter.qemu },
      { registered: true, openSessions: [], entries: ENTRIES, blocked: false, domain: 'running', qemu: 1 },
      `A is not as before the migration: ${show(aAfter)}\n${logs()}`,
    );
    const source = (await m.a.status()).sessions.filter((s) => s.vm === vm.uuid).pop();
    assert.equal(source?.path, 'vmstate-hot');
    assert.deepEqual(await until(() => qemuObjects(m.a, vm), (o) => o.join() === objectsBefore.join(), 10_000), objectsBefore, "A's QEMU keeps an object the migration added");
    const bAfter = await until(
      () => vmTraces(m.b, vm),
      (t) => !t.registered && t.openSessions.length === 0 && t.entries === 0 && !t.blocked && t.domain === '' && t.qemu === 0,
      15_000,
    );
    assert.deepEqual(
      { registered: bAfter.registered, openSessions: bAfter.openSessions, entries: bAfter.entries, blocked: bAfter.blocked, domain: bAfter.domain, qemu: bAfter.qemu },
      { registered: false, openSessions: [], entries: 0, blocked: false, domain: '', qemu: 0 },
      `B is not clean after the aborted migration: ${show(bAfter)}\n${logs()}`,
    );
    await m.a.virshOk(['destroy', vm.name]);
    await until(() => vmTraces(m.a, vm), (t) => !t.registered && t.domain === '', 10_000);
  });

  for (const how of ['kill-destination-qemu', 'domjobabort'] as const) {
    it(`leaves both hosts clean when libvirt aborts the migration (${how === 'domjobabort' ? 'virsh domjobabort on A' : "B's QEMU killed mid-way"})`, async function () {
      const vm = newLabVm(how === 'domjobabort' ? '192.0.2.21' : '192.0.2.20', how === 'domjobabort' ? 'jobabort' : 'killed');
      await startLabVm(m.a, vm);
      await until(() => vmTraces(m.a, vm), (t) => t.registered && t.domain === 'running', 10_000);
      // The VM's connections on A, made with the conntrack CLI: this VM's network is not wired.
      const ENTRIES = 40;
      for (let i = 0; i < ENTRIES; i++) {
        await insert(m.a.ns, ['-p', 'tcp', '-s', vm.address, '-d', '203.0.113.50', '--sport', String(40000 + i), '--dport', '443', '--state', 'ESTABLISHED', '-u', 'SEEN_REPLY,ASSURED', '-t', '600']);
      }
      const aBefore = await vmTraces(m.a, vm);
      assert.equal(aBefore.entries, ENTRIES);

      const r = await abortedMigration(m, vm, how, say);
      assert.ok(r.abortedAt > 0, `the abort never happened (${r.what}); virsh migrate exited ${r.exitCode}\n${logs()}`);
      assert.notEqual(r.exitCode, 0, `the migration succeeded despite ${r.what}`);

      say(`${r.what}; virsh migrate exited ${r.exitCode}`);
      const settle = Date.now();
      // A still runs the VM with all its entries; no session, no drop.
      const aAfter = await until(() => vmTraces(m.a, vm), (t) => t.openSessions.length === 0 && !t.blocked, 15_000);
      assert.deepEqual(
        { registered: aAfter.registered, openSessions: aAfter.openSessions, entries: aAfter.entries, blocked: aAfter.blocked, domain: aAfter.domain, qemu: aAfter.qemu },
        { registered: true, openSessions: [], entries: ENTRIES, blocked: false, domain: 'running', qemu: 1 },
        `A is not as before the migration: ${show(aAfter)}\n${logs()}`,
      );
      // B holds nothing of the VM.
      const bAfter = await until(
        () => vmTraces(m.b, vm),
        (t) => !t.registered && t.openSessions.length === 0 && t.entries === 0 && !t.blocked && t.domain === '' && t.qemu === 0,
        15_000,
      );
      assert.deepEqual(
        { registered: bAfter.registered, openSessions: bAfter.openSessions, entries: bAfter.entries, blocked: bAfter.blocked, domain: bAfter.domain, qemu: bAfter.qemu },
        { registered: false, openSessions: [], entries: 0, blocked: false, domain: '', qemu: 0 },
        `B is not clean after the aborted migration: ${show(bAfter)}\n${logs()}`,
      );
      assert.equal((await blockState(m.b.ns)).addresses.length, 0, 'B still holds a drop set element');
      say(`both hosts clean ${Date.now() - settle} ms after the failed migration returned`);

      // Shutting the VM down on A unregisters it there.
      await m.a.virshOk(['destroy', vm.name]);
      const gone = await until(() => vmTraces(m.a, vm), (t) => !t.registered && t.domain === '', 10_000);
      assert.equal(gone.registered, false, `A still has the destroyed VM registered: ${show(gone)}`);
    });
  }
});
