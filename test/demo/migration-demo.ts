/**
 * `npm run demo`: live-migrate a VM with real QEMU between two hosts with
 * strict firewalls, while a client keeps hundreds of TCP flows busy
 * through it — once as today (no ctmigrate) and once with ctmigrate
 * (pre-copy, residual delta through QEMU's dbus-vmstate). Prints what a
 * user would see: flows kept, the VM's blackout, entries and bytes carried.
 * Everything runs in network namespaces it creates and removes.
 *
 *   --flows N       busy flows (default 200)
 *   --churn N       flows closed and opened during pre-copy (default flows/10)
 *   --kernel-only   the earlier demo: dump and load the kernel's entries
 *   --libvirt       the same through two real libvirtd hosts and the hook
 *   --plain         with --libvirt: also VMs nobody prepared (enable-vm --live)
 *   --container     a container checkpointed on A and restored on B, as CRIU
 *                   runs ctmigrate's action script (published port, SNAT)
 *   --relay         the migration through a relay (ctmigrated --relay), the
 *                   direct peer path between the hosts cut
 */
import { parseArgs } from 'node:util';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { formatBytes } from '../../plugin/byte-size';
import { MigrationLab, MigrationOutcome } from '../integration/lab/migration-lab';
import { reapStaleNamespaces } from '../integration/lab/netns';
import { RELAY, relayLab } from '../integration/lab/relay-lab';
import { ContainerLab, CT } from '../integration/lab/container-lab';

async function oneRun(mode: 'control' | 'vmstate', flows: number, churn: number, say: (s: string) => void): Promise<MigrationOutcome> {
  const lab = await MigrationLab.build();
  try {
    say(`  lab: hosts ${lab.a.ns.name} and ${lab.b.ns.name}, client, VM 192.0.2.10; ctmigrated on both hosts`);
    return await lab.migrate({ mode, flows, churn: mode === 'control' ? 0 : churn, progress: (l) => say(`  ${l}`) });
  } finally {
    await lab.close();
  }
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: { flows: { type: 'string' }, churn: { type: 'string' }, 'kernel-only': { type: 'boolean' }, libvirt: { type: 'boolean' }, plain: { type: 'boolean' }, relay: { type: 'boolean' }, container: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
  });
  if (values.help) {
    process.stdout.write('Usage: node dist/test/demo/migration-demo.js [--flows N] [--churn N] [--kernel-only | --libvirt [--plain] | --relay | --container]\n');
    return 0;
  }
  if (values['kernel-only']) {
    const r = spawnSync(process.execPath, [join(__dirname, 'kernel-demo.js')], { stdio: 'inherit' });
    return r.status ?? 1;
  }
  if (process.getuid && process.getuid() !== 0) {
    process.stderr.write('demo: needs root (it creates network namespaces)\n');
    return 1;
  }
  const flows = Number(values.flows ?? 200);
  if (!Number.isInteger(flows) || flows < 1 || flows > 5000) {
    process.stderr.write(`demo: --flows must be 1..5000, got ${values.flows}\n`);
    return 2;
  }
  if (values.plain && !values.libvirt) {
    process.stderr.write('demo: --plain goes with --libvirt\n');
    return 2;
  }
  if (values.libvirt) return (await import('./libvirt-demo')).runLibvirtDemo({ flows, plain: values.plain === true });
  const churn = Number(values.churn ?? Math.floor(flows / 10));
  if (!Number.isInteger(churn) || churn < 0 || churn > flows) {
    process.stderr.write(`demo: --churn must be 0..${flows}, got ${values.churn}\n`);
    return 2;
  }
  const say = (s: string): void => void process.stdout.write(`${s}\n`);
  await reapStaleNamespaces();
  const started = Date.now();
  if (values.relay) return relayDemo(flows, churn, say, started);
  if (values.container) return containerDemo(Math.min(flows, 500), say, started);
  say('ctmigrate demo: live-migrate a VM (QEMU, TCG) from host A to host B through strict firewalls');
  say('(forward policy drop, new TCP only on a bare SYN, nf_conntrack_tcp_loose=0) with busy TCP flows\n');

  say('1/2 without ctmigrate');
  const control = await oneRun('control', flows, churn, say);
  say('\n2/2 with ctmigrate (dbus-vmstate)');
  const ctm = await oneRun('vmstate', flows, churn, say);

  const src = ctm.source;
  const dst = ctm.destination;
  const row = (label: string, without: string, withCtm: string): string => `  ${label.padEnd(26)}${without.padEnd(22)}${withCtm}`;
  say('\nsummary');
  say(row('', 'without ctmigrate', 'with ctmigrate'));
  say(row('flows kept', `${control.flows.kept} of ${control.flows.flows}`, `${ctm.flows.kept} of ${ctm.flows.flows}`));
  say(row('flow stall, median / max', control.flows.kept ? `${control.flows.medianStallMs} / ${control.flows.maxStallMs} ms` : 'broken (no echo 5 s)', `${ctm.flows.medianStallMs} / ${ctm.flows.maxStallMs} ms`));
  say(row('VM blackout (STOP→RESUME)', `${control.blackoutMs.toFixed(1)} ms`, `${ctm.blackoutMs.toFixed(1)} ms`));
  say(row('QEMU downtime', `${control.qemu.downtime ?? '?'} ms`, `${ctm.qemu.downtime ?? '?'} ms`));
  say(
    row(
      'entries carried',
      '0',
      `${dst?.committed ?? 0} committed on B (${src?.sent ?? 0} sent, ${formatBytes(src?.bytes ?? 0)})`,
    ),
  );
  if (churn > 0) say(row('churn during pre-copy', '-', `${churn} closed, ${churn} opened`));
  say(row('VM entries left on A', `${control.entriesA}`, `${ctm.entriesA}`));
  say(`\ndone in ${((Date.now() - started) / 1000).toFixed(1)} s; every namespace, process and file removed`);
  const ok = ctm.flows.kept === ctm.flows.flows && ctm.flows.flows > 0;
  return ok ? 0 : 1;
}

/** The vmstate run, with the hosts' daemons reaching each other only through a relay. */
async function relayDemo(flows: number, churn: number, say: (s: string) => void, started: number): Promise<number> {
  say('ctmigrate demo --relay: host A and host B cannot reach each other\'s peer port; a third host runs');
  say(`\`ctmigrated --relay\` (${RELAY.onA}:${RELAY.port} seen from A, ${RELAY.onB}:${RELAY.port} from B); both daemons dial through it (--via), TLS end to end\n`);
  const { m } = await relayLab();
  try {
    const out = await m.migrate({ mode: 'vmstate', flows, churn, progress: (l) => say(`  ${l}`) });
    const d = out.destination;
    say('\nsummary');
    say(`  flows kept                ${out.flows.kept} of ${out.flows.flows} (longest stall ${out.flows.maxStallMs} ms)`);
    say(`  VM blackout               ${out.blackoutMs.toFixed(1)} ms (QEMU downtime ${out.qemu.downtime ?? '?'} ms)`);
    say(`  entries carried           ${d?.committed ?? 0} committed on B, route ${d?.route ?? '?'} (A: ${out.source?.route ?? '?'})`);
    say('  relay                     ctmigrated --relay: no key, no D-Bus, no kernel access; the TLS session ran end to end');
    say(`\ndone in ${((Date.now() - started) / 1000).toFixed(1)} s; every namespace, process and file removed`);
    return out.flows.kept === out.flows.flows && d?.route.startsWith('via ') ? 0 : 1;
  } finally {
    await m.close();
  }
}

/** A container moved by CRIU (its steps played by the lab), with and without ctmigrate's action script. */
async function containerDemo(flows: number, say: (s: string) => void, started: number): Promise<number> {
  say('ctmigrate demo --container: checkpoint a container on host A and restore it on host B, as CRIU does, its');
  say(`port ${CT.port} published as ${CT.published}:${CT.publishedPort} (DNAT) and its egress masqueraded (SNAT), through strict firewalls;`);
  say('CRIU runs `ctmigratectl criu-action` (packaging/criu/criu-action) at each step\n');
  const m = await ContainerLab.build();
  try {
    say('1/2 without ctmigrate (an action script that does nothing)');
    const control = await m.migrate({ flows, run: 'control', withoutCtmigrate: true, progress: (l) => say(`  ${l}`) });
    await m.reset();
    say('\n2/2 with ctmigrate');
    const out = await m.migrate({ flows, run: 'ctmigrate', progress: (l) => say(`  ${l}`) });
    for (const l of [...out.dumpLog, ...out.restoreLog]) say(`  ${l.replace(/^ctmigrate criu-action: /, 'criu-action ')}`);
    const row = (label: string, without: string, withCtm: string): string => `  ${label.padEnd(30)}${without.padEnd(22)}${withCtm}`;
    const kept = (r: typeof out.published): string => `${r.kept} of ${r.flows}`;
    say('\nsummary');
    say(row('', 'without ctmigrate', 'with ctmigrate'));
    say(row('published-port flows kept', kept(control.published), kept(out.published)));
    say(row('egress (SNAT) flows kept', kept(control.egress), kept(out.egress)));
    say(row('longest stall', 'broken (no echo 5 s)', `${Math.max(out.published.maxStallMs, out.egress.maxStallMs)} ms (frozen ${out.frozenMs} ms)`));
    say(row('entries carried', '0', `${out.manifest?.entries ?? 0} (in the checkpoint)`));
    say(row('forwarded on B before import', '-', `${out.forwarding.forwardedWhileBlocked} packets`));
    say(row('entries left on A', `${control.entriesA.length}`, `${out.entriesA.length}`));
    say(`\ndone in ${((Date.now() - started) / 1000).toFixed(1)} s; every namespace, process and file removed`);
    return out.published.kept === out.published.flows && out.egress.kept === out.egress.flows ? 0 : 1;
  } finally {
    await m.close();
  }
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    process.stderr.write(`demo: ${(e as Error).message}\n`);
    process.exitCode = 1;
  },
);
