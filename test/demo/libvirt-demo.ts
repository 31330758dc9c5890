/**
 * The demo's `--libvirt` mode: the same scenario as
 * test/integration/libvirt-migration.test.ts, narrated. Two libvirtd
 * "hosts" (network, mount and UTS namespaces on this machine), each with its
 * own system bus, ctmigrated and the project's hook in hooks/qemu.d/; a tiny
 * TCG domain enabled for ctmigrate; busy TCP flows from a client through
 * host A's strict firewall; `virsh migrate --live --p2p` to B, the VM's
 * network following it the moment B's libvirt reports "Resumed Migrated".
 * Then a migration that libvirt aborts (`virsh domjobabort`), and both hosts
 * checked clean. With --plain, VMs nobody prepared as well: started from
 * plain XML and enabled while running (`enable-vm --live`), carried by hot
 * attach, by the event path (object-add refused) and, on hosts whose daemon
 * cannot reach libvirt, by the stopped hook; then the figures side by side.
 * Everything it builds is removed on every exit path.
 *
 *   node dist/test/demo/libvirt-demo.js [--flows N] [--plain]
 *
 * Needs root and the Debian packages libvirt-daemon,
 * libvirt-daemon-driver-qemu, libvirt-clients, qemu-system-x86.
 */
import { parseArgs } from 'node:util';
import { insert } from '../integration/lab/conntrack-cli';
import {
  abortedMigration,
  LAB_ADDR,
  libvirtLabUnavailable,
  libvirtVersion,
  LabVm,
  LibvirtMigrationLab,
  migrateWithNetwork,
  newLabVm,
  startLabVm,
  startPlainVm,
  until,
  vmTraces,
  VmTraces,
} from '../integration/lab/libvirt-hosts';
import { Lab, reapStaleNamespaces } from '../integration/lab/netns';

export interface LibvirtDemoOptions {
  /** Busy flows through the VM (default 200). */
  flows?: number;
  /** Where the narration goes (default stdout). */
  say?: (line: string) => void;
  /** Also migrate VMs nobody prepared (plain XML, enable-vm --live): hot attach, the event path, the hook path. */
  plain?: boolean;
}

function traces(t: VmTraces): string {
  const sessions = t.sessions.length ? t.sessions.join(', ') : 'none';
  return `registered ${t.registered ? 'yes' : 'no'}, sessions ${sessions}, entries ${t.entries}, drop ${t.blocked ? 'yes' : 'no'}, domain ${t.domain || 'absent'}`;
}

/** What one migration with busy flows gave, for the side-by-side table. */
interface PathFigures {
  label: string;
  path: string;
  kept: number;
  flows: number;
  maxStallMs: number;
  medianStallMs: number;
  /** How long B still dropped the VM's traffic after it resumed there (0: lifted before). */
  blockedAfterResumeMs: number;
}

type Check = (ok: boolean, line: string) => void;

/**
 * Busy flows through A, `virsh migrate` to B with the VM's network moved at
 * B's resume, then the checks a user would make on both hosts. Leaves the VM
 * destroyed on B and the network back on A for the next run.
 */
async function flowRun(m: LibvirtMigrationLab, vm: LabVm, k: number, label: string, say: (s: string) => void, check: Check): Promise<PathFigures> {
  say(`\n${k} busy TCP flows: client ${LAB_ADDR.client} -> A -> ${vm.address}:7000 (an echo every 50-100 ms each)`);
  const flows = await m.startFlows(k);
  try {
    await flows.mark();
    const entriesA = (await vmTraces(m.a, vm)).entries;
    say(`  A tracks ${entriesA} conntrack entries of the VM`);
    say('');
    const run = await migrateWithNetwork(m, vm, (l) => say(`  ${l}`));
    check(run.exitCode === 0, `virsh migrate exited ${run.exitCode}${run.exitCode ? `: ${run.stderr.trim()}` : ''} (${run.finishedAt - run.startedAt} ms)`);
    await new Promise((r) => setTimeout(r, 1500));
    const report = await flows.report();
    check(report.broken === 0 && report.kept === k, `flows kept: ${report.kept}/${k}${report.broken ? ` (broken: ${JSON.stringify(report.reasons)})` : ''}`);
    const incoming = (await m.b.status()).sessions.filter((s) => s.vm === vm.uuid && s.role === 'destination').pop();
    // The hook path cuts over only after B resumed the VM: its stall is the figure to compare, not a check.
    const stallLimit = incoming?.path === 'hook' ? Infinity : incoming?.path === 'event' ? 1500 : 1000;
    const stall = `longest stall of any flow: ${report.maxStallMs} ms (median ${report.medianStallMs} ms)`;
    if (stallLimit === Infinity) say(`       ${stall}`);
    else check(report.maxStallMs < stallLimit, `${stall}, under ${stallLimit} ms`);
    check(
      run.blockSeenAt > 0 && run.droppedWhileBlocked > 0 && run.probes.fail.length > 0,
      `B dropped the VM's traffic while the state came in: ${run.droppedWhileBlocked} packets counted, ${run.probes.fail.length} probes refused`,
    );
    const early = incoming ? run.probes.ok.filter((t) => t < incoming.readyAt - 20).length : -1;
    check(early === 0 && run.probes.ok.length > 0, `no probe echoed through B before its state was in; ${run.probes.ok.length} echoed after`);
    const blockedAfterResumeMs = incoming && run.resumedAt ? Math.max(0, incoming.readyAt - run.resumedAt) : -1;
    if (incoming)
      say(`  B's session: path ${incoming.path}, ${incoming.state}, ${incoming.committed} entries committed, ready ${incoming.readyAt - run.startedAt} ms after the migration began (${blockedAfterResumeMs} ms after B resumed the VM)`);
    const aAfter = await until(() => vmTraces(m.a, vm), (t) => !t.registered && t.openSessions.length === 0 && t.entries === 0 && !t.blocked && t.domain === '', 15_000);
    say(`  A: ${traces(aAfter)}`);
    check(!aAfter.registered && aAfter.openSessions.length === 0 && aAfter.entries === 0 && !aAfter.blocked && aAfter.domain === '', 'A is clean');
    const bAfter = await vmTraces(m.b, vm);
    say(`  B: ${traces(bAfter)}`);
    check(bAfter.domain === 'running' && bAfter.registered && !bAfter.blocked, 'B runs the VM, registered, no drop left');
    return { label, path: incoming?.path ?? '?', kept: report.kept, flows: k, maxStallMs: report.maxStallMs, medianStallMs: report.medianStallMs, blockedAfterResumeMs };
  } finally {
    await flows.stop();
    await m.b.virsh(['destroy', vm.name]);
    await until(() => vmTraces(m.b, vm), (t) => !t.registered && t.domain === '', 10_000);
    await m.resetVmNetwork();
  }
}

/** A VM nobody prepared: plain XML on A, then `ctmigratectl enable-vm --live` while it runs. */
async function plainVm(m: LibvirtMigrationLab, tag: string, say: (s: string) => void, check: Check): Promise<LabVm> {
  const vm = newLabVm(LAB_ADDR.vm, tag);
  say(`\nVM ${vm.name} (${vm.uuid}): started from plain XML (no metadata, no <qemu:commandline>), never restarted`);
  await startPlainVm(m.a, vm);
  await until(() => vmTraces(m.a, vm), (t) => t.domain === 'running', 10_000);
  say(`  $ ctmigratectl enable-vm ${vm.name} --live --address ${vm.address}`);
  const r = await m.a.ctl(['enable-vm', vm.name, '--live', '--address', vm.address, '--connect', m.a.uri]);
  for (const line of `${r.stdout}${r.stderr}`.trim().split('\n')) say(`  ${line}`);
  const onA = await vmTraces(m.a, vm);
  check(r.code === 0 && onA.registered, "enable-vm --live set the metadata and registered the VM with A's ctmigrated");
  return vm;
}

function figuresTable(rows: PathFigures[]): string[] {
  const head = ['run', 'path', 'flows kept', 'longest stall', 'median stall', 'B blocked after resume'];
  const body = rows.map((r) => [r.label, r.path, `${r.kept}/${r.flows}`, `${r.maxStallMs} ms`, `${r.medianStallMs} ms`, r.blockedAfterResumeMs < 0 ? '?' : `${r.blockedAfterResumeMs} ms`]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => (b[i] as string).length)));
  return [head, ...body].map((cells) => `  ${cells.map((c, i) => c.padEnd(widths[i] as number)).join('  ')}`.trimEnd());
}

/** Runs the libvirt scenario; resolves with the exit status (0 = every check held). */
export async function runLibvirtDemo(options: LibvirtDemoOptions = {}): Promise<number> {
  const say = options.say ?? ((s: string) => void process.stdout.write(`${s}\n`));
  const k = options.flows ?? 200;
  const why = libvirtLabUnavailable();
  if (why) {
    say(`demo --libvirt: cannot run here: ${why}`);
    return 1;
  }
  await reapStaleNamespaces();
  const lab = new Lab();
  let failures = 0;
  const check: Check = (ok, line) => {
    say(`  ${ok ? 'ok  ' : 'FAIL'} ${line}`);
    if (!ok) failures += 1;
  };
  const figures: PathFigures[] = [];
  try {
    say(`ctmigrate demo --libvirt: a real libvirt ${libvirtVersion()} live migration between two hosts on this machine\n`);
    say('building: client, hosts A and B (libvirtd, virtlogd, system bus, ctmigrated, hook), the VM network ...');
    const m = await LibvirtMigrationLab.build(lab);
    say(`  A: ${m.a.uri} (netns ${m.a.ns.name}), B: ${m.b.uri} (netns ${m.b.ns.name})`);
    say('  both: strict firewall (forward policy drop; established or a bare SYN), nf_conntrack_tcp_loose=0');
    say(`  hook: hooks/qemu.d/ctmigrate -> ${m.a.spec.hooks?.[0] ?? '(none)'}`);

    const vm = newLabVm(LAB_ADDR.vm, 'demo');
    say(`\nVM ${vm.name} (${vm.uuid}), address ${vm.address}: metadata plus the dbus-vmstate object from \`ctmigratectl vmstate-args\` on A`);
    await startLabVm(m.a, vm);
    const onA = await until(() => vmTraces(m.a, vm), (t) => t.registered && t.domain === 'running', 10_000);
    say(`  A after \`virsh create\`: ${traces(onA)}`);
    check(onA.registered, "libvirt's hook registered the VM with A's ctmigrated");
    figures.push(await flowRun(m, vm, k, 'enabled', say, check));

    if (options.plain) {
      const hot = await plainVm(m, 'plain', say, check);
      figures.push(await flowRun(m, hot, k, 'plain', say, check));
      const refused = await plainVm(m, 'refused', say, check);
      const id = `ctmigrate-${refused.uuid.slice(0, 8)}`;
      say(`  (an object of another type takes the id ${id} in its QEMU: QMP object-add is refused)`);
      await m.a.virshOk(['qemu-monitor-command', refused.name, JSON.stringify({ execute: 'object-add', arguments: { 'qom-type': 'secret', id, data: 'x' } })]);
      figures.push(await flowRun(m, refused, k, 'plain, object refused', say, check));
    }

    const vm2 = newLabVm('192.0.2.20', 'abort');
    say(`\nan aborted migration: VM ${vm2.name} (${vm2.address}) on A with 20 entries, \`virsh domjobabort\` once B blocks it`);
    await startLabVm(m.a, vm2);
    await until(() => vmTraces(m.a, vm2), (t) => t.registered && t.domain === 'running', 10_000);
    for (let i = 0; i < 20; i++) {
      await insert(m.a.ns, ['-p', 'tcp', '-s', vm2.address, '-d', '203.0.113.50', '--sport', String(41000 + i), '--dport', '443', '--state', 'ESTABLISHED', '-u', 'SEEN_REPLY,ASSURED', '-t', '600']);
    }
    const aborted = await abortedMigration(m, vm2, 'domjobabort', (l) => say(`  ${l}`));
    check(aborted.abortedAt > 0 && aborted.exitCode !== 0, 'libvirt aborted the migration');
    const a2 = await until(() => vmTraces(m.a, vm2), (t) => t.openSessions.length === 0 && !t.blocked, 15_000);
    const b2 = await until(() => vmTraces(m.b, vm2), (t) => !t.registered && t.openSessions.length === 0 && t.entries === 0 && !t.blocked && t.domain === '', 15_000);
    say(`  A: ${traces(a2)}`);
    say(`  B: ${traces(b2)}`);
    check(a2.domain === 'running' && a2.registered && a2.entries === 20 && a2.openSessions.length === 0 && !a2.blocked, 'A still runs the VM with all its entries, no session, no drop');
    check(!b2.registered && b2.openSessions.length === 0 && b2.entries === 0 && !b2.blocked && b2.domain === '', 'B holds nothing of the VM');

    if (options.plain) {
      await lab.cleanup();
      say('\nthe last resort, for comparison: hosts whose ctmigrated cannot reach libvirt (--libvirt-uri test:///default): no hot attach, no events');
      const lab2 = new Lab();
      try {
        const m2 = await LibvirtMigrationLab.build(lab2, { daemonFlags: ['--libvirt-uri', 'test:///default'] });
        const last = await plainVm(m2, 'hook', say, check);
        figures.push(await flowRun(m2, last, k, 'plain, no libvirt for ctmigrated', say, check));
      } finally {
        await lab2.cleanup();
      }
    }

    if (figures.length > 1) {
      say('\nside by side (same lab, same flows):');
      for (const line of figuresTable(figures)) say(line);
    }
    say(failures === 0 ? '\nevery check held' : `\n${failures} check(s) failed`);
    return failures === 0 ? 0 : 1;
  } finally {
    say('removing namespaces, daemons, mounts and folders ...');
    await lab.cleanup();
  }
}

async function main(): Promise<number> {
  const { values } = parseArgs({ options: { flows: { type: 'string' }, plain: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } });
  if (values.help) {
    process.stdout.write('Usage: node dist/test/demo/libvirt-demo.js [--flows N] [--plain]\n');
    return 0;
  }
  const flows = Number(values.flows ?? 200);
  if (!Number.isInteger(flows) || flows < 1 || flows > 5000) {
    process.stderr.write(`demo: --flows must be 1..5000, got ${values.flows}\n`);
    return 2;
  }
  return runLibvirtDemo({ flows, plain: values.plain === true });
}

if (require.main === module) {
  main().then(
    (code) => {
      process.exitCode = code;
    },
    (e: unknown) => {
      process.stderr.write(`demo --libvirt: ${(e as Error).message}\n`);
      process.exitCode = 1;
    },
  );
}
