import { DependencyContainer } from 'tsyringe';
import { SessionInfo } from '../../../plugin/migration-service';
import { parseVmUuid } from '../../../plugin/vm';
import { Command, CommandIo } from '../command';
import { withDaemon } from '../daemon-call';
import { parseOptions } from '../parse-options';
import { formatBytes } from '../../../plugin/byte-size';
import { sessionLine } from '../session-text';
import { UsageError } from '../usage-error';
import { uuidFromOptions, VM_OPTIONS, vmFromOptions } from '../vm-options';

const DAEMON_NOTE = `
Talks to the local ctmigrated over the system bus (DBUS_SYSTEM_BUS_ADDRESS
is honoured). Changing calls are for root; a refused call says "access
denied". Exit status: 0 success, 1 the daemon refused or failed, 2 bad
arguments.
`;

function noPositionals(p: string[]): void {
  if (p.length) throw new UsageError(`unexpected argument ${JSON.stringify(p[0])}`);
}

export const registerCommand: Command = {
  name: 'register',
  summary: 'this host runs the VM: track its entries, start its dbus-vmstate helper',
  help: `Usage: ctmigratectl register --vm UUID --address IP... [--zone N] [--mark V[/M]]

Tell the local daemon this host runs the VM. Its entries are those that
involve any of its addresses (and zone, mark). The daemon starts the VM's
dbus-vmstate bus and helper; the line printed is QEMU's -object value.
${DAEMON_NOTE}`,
  async run(args: string[], c: DependencyContainer, io: CommandIo): Promise<number> {
    const { values, positionals } = parseOptions(args, VM_OPTIONS, true);
    noPositionals(positionals);
    const vm = vmFromOptions(values);
    const objectArgs = await withDaemon(c, (d) => d.register(vm));
    io.stdout.write(`registered VM ${vm.uuid} (${vm.addresses.length} address${vm.addresses.length === 1 ? '' : 'es'}); dbus-vmstate: ${objectArgs}\n`);
    return 0;
  },
};

export const prepareIncomingCommand: Command = {
  name: 'prepare-incoming',
  summary: 'the VM is coming here: block its traffic, start pulling its state',
  help: `Usage: ctmigratectl prepare-incoming --vm UUID --address IP... [--zone N] [--mark V[/M]]
                                [--source ADDR:PORT] [--ready-when POLICY]

On the destination, before the VM arrives: install the drop for the VM's
addresses, connect to the source daemon (given, or found among the
configured peers) and start the pre-copy. POLICY: complete (default),
precopy, fraction:F, tcp-established.
${DAEMON_NOTE}`,
  async run(args: string[], c: DependencyContainer, io: CommandIo): Promise<number> {
    const { values, positionals } = parseOptions(args, { ...VM_OPTIONS, source: { type: 'string' }, 'ready-when': { type: 'string' } }, true);
    noPositionals(positionals);
    const vm = vmFromOptions(values);
    const s = await withDaemon(c, (d) => d.prepareIncoming(vm, { source: values.source, readyWhen: values['ready-when'] }));
    io.stdout.write(`session ${s.id}: ${s.state}; traffic of VM ${s.vm} ${s.blocked ? 'blocked' : 'not blocked'}; source ${s.peer || 'unknown'}\n`);
    return 0;
  },
};

export const cutoverCommand: Command = {
  name: 'cutover',
  summary: 'source: the VM has stopped; ship the residual delta now',
  help: `Usage: ctmigratectl cutover --vm UUID

On the source, once the VM has stopped (the libvirt stopped hook calls
this): ship every change since the last one shipped, deletions included.
A no-op when QEMU's dbus-vmstate already did it.
${DAEMON_NOTE}`,
  async run(args: string[], c: DependencyContainer, io: CommandIo): Promise<number> {
    const { values, positionals } = parseOptions(args, { vm: { type: 'string' } }, true);
    noPositionals(positionals);
    const uuid = parseVmUuid(uuidFromOptions(values));
    const s = await withDaemon(c, (d) => d.cutover(uuid));
    io.stdout.write(`session ${s.id}: ${s.state}; ${s.sent} entries sent (${formatBytes(s.bytes)}), version ${s.version}\n`);
    return 0;
  },
};

export const finishCommand: Command = {
  name: 'finish',
  summary: 'close the VM\'s session: migrated deletes the source\'s entries, failed rolls back',
  help: `Usage: ctmigratectl finish --vm UUID --result migrated|failed

Close the VM's session. On a source after success the VM's entries are
deleted there; after failure both hosts roll back (the destination removes
what it imported and lifts the drop; the source keeps its entries).
${DAEMON_NOTE}`,
  async run(args: string[], c: DependencyContainer, io: CommandIo): Promise<number> {
    const { values, positionals } = parseOptions(args, { vm: { type: 'string' }, result: { type: 'string' } }, true);
    noPositionals(positionals);
    const uuid = parseVmUuid(uuidFromOptions(values));
    const result = values.result;
    if (result !== 'migrated' && result !== 'failed') throw new UsageError('--result must be migrated or failed');
    await withDaemon(c, (d) => d.finish(uuid, result));
    io.stdout.write(`VM ${uuid}: session finished (${result})\n`);
    return 0;
  },
};

export const abortCommand: Command = {
  name: 'abort',
  summary: 'cancel the VM\'s session and roll back',
  help: `Usage: ctmigratectl abort --vm UUID

Cancel whatever session the VM has on this host and roll back: nothing
imported stays, no drop stays, the source's entries are untouched.
${DAEMON_NOTE}`,
  async run(args: string[], c: DependencyContainer, io: CommandIo): Promise<number> {
    const { values, positionals } = parseOptions(args, { vm: { type: 'string' } }, true);
    noPositionals(positionals);
    const uuid = parseVmUuid(uuidFromOptions(values));
    await withDaemon(c, (d) => d.abort(uuid));
    io.stdout.write(`VM ${uuid}: session aborted and rolled back\n`);
    return 0;
  },
};

export const statusCommand: Command = {
  name: 'status',
  summary: 'the daemon\'s sessions and registered VMs (--json for scripts)',
  help: `Usage: ctmigratectl status [--vm UUID] [--json]

Show the local daemon's sessions and registered VMs. --vm limits it to one
VM (exit 1 when that VM has no session and is not registered).
${DAEMON_NOTE}`,
  async run(args: string[], c: DependencyContainer, io: CommandIo): Promise<number> {
    const { values, positionals } = parseOptions(args, { vm: { type: 'string' }, json: { type: 'boolean' } }, true);
    noPositionals(positionals);
    const uuid = values.vm === undefined ? undefined : parseVmUuid(values.vm);
    const st = await withDaemon(c, (d) => d.status());
    const sessions = st.sessions.filter((s) => uuid === undefined || s.vm === uuid);
    const vms = st.vms.filter((v) => uuid === undefined || v.uuid === uuid);
    if (values.json) {
      io.stdout.write(`${JSON.stringify({ version: st.version, sessions, vms }, null, 2)}\n`);
    } else {
      io.stdout.write(`ctmigrated ${st.version}: ${sessions.length} session(s), ${vms.length} registered VM(s)\n`);
      for (const s of sessions) io.stdout.write(`  ${sessionLine(s)}\n`);
      for (const v of vms) io.stdout.write(`  vm ${v.uuid} ${v.addresses.join(' ')}${v.zone !== null ? ` zone ${v.zone}` : ''}${v.mark ? ` mark ${v.mark}` : ''}\n`);
    }
    if (uuid !== undefined && sessions.length === 0 && vms.length === 0) {
      io.stderr.write(`ctmigratectl: VM ${uuid} has no session and is not registered on this host\n`);
      return 1;
    }
    return 0;
  },
};

export const sessionsCommand: Command = {
  name: 'sessions',
  summary: 'one line per migration session',
  help: `Usage: ctmigratectl sessions

One line per session of the local daemon: role, VM, state, entries, bytes,
whether the VM's traffic is blocked, the peer.
${DAEMON_NOTE}`,
  async run(args: string[], c: DependencyContainer, io: CommandIo): Promise<number> {
    const { positionals } = parseOptions(args, {}, true);
    noPositionals(positionals);
    const list = await withDaemon(c, (d) => d.sessions());
    for (const s of list) io.stdout.write(`${s.id} ${sessionLine(s)}\n`);
    if (list.length === 0) io.stdout.write('no sessions\n');
    return 0;
  },
};

export const watchCommand: Command = {
  name: 'watch',
  summary: 'live progress of sessions: state, entries, bytes, rate',
  help: `Usage: ctmigratectl watch [--vm UUID]

Print a line whenever a session changes: state, entries, bytes and rate.
With --vm, stop when that VM's session is over (ready, migrated or
failed; exit 1 if it failed). Otherwise run until interrupted.
${DAEMON_NOTE}`,
  async run(args: string[], c: DependencyContainer, io: CommandIo): Promise<number> {
    const { values, positionals } = parseOptions(args, { vm: { type: 'string' } }, true);
    noPositionals(positionals);
    const uuid = values.vm === undefined ? undefined : parseVmUuid(values.vm);
    return withDaemon(c, async (d) => {
      const last = new Map<string, { at: number; bytes: number }>();
      const show = (s: SessionInfo): void => {
        const prev = last.get(s.id);
        const now = Date.now();
        let rate = '';
        if (prev && now > prev.at) rate = `, ${formatBytes(Math.round(((s.bytes - prev.bytes) * 1000) / (now - prev.at)))}/s`;
        last.set(s.id, { at: now, bytes: s.bytes });
        io.stdout.write(`${new Date(now).toISOString().slice(11, 23)} ${sessionLine(s)}${rate}\n`);
      };
      for (const s of await d.sessions()) if (uuid === undefined || s.vm === uuid) show(s);
      return new Promise<number>((resolve) => {
        let stop: (() => Promise<void>) | null = null;
        void d
          .watch((e) => {
            if (uuid !== undefined && e.session.vm !== uuid) return;
            show(e.session);
            const s = e.session;
            const over = s.state === 'failed' || s.state === 'migrated' || (s.state === 'ready' && !s.blocked);
            if (uuid !== undefined && over) {
              void stop?.();
              resolve(s.state === 'failed' ? 1 : 0);
            }
          })
          .then((unsubscribe) => {
            stop = unsubscribe;
          });
        process.once('SIGINT', () => resolve(0));
      });
    });
  },
};

export const vmstateArgsCommand: Command = {
  name: 'vmstate-args',
  summary: 'print QEMU\'s -object value for the VM\'s dbus-vmstate helper',
  help: `Usage: ctmigratectl vmstate-args UUID

Print the value for QEMU's -object option that attaches this host's
dbus-vmstate helper of the VM (dbus-vmstate,id=...,addr=...,id-list=...),
as the local daemon is configured.
${DAEMON_NOTE}`,
  async run(args: string[], c: DependencyContainer, io: CommandIo): Promise<number> {
    const { positionals } = parseOptions(args, {}, true);
    if (positionals.length !== 1) throw new UsageError('vmstate-args takes exactly one VM UUID');
    const uuid = parseVmUuid(positionals[0]);
    io.stdout.write(`${await withDaemon(c, (d) => d.vmstateArgs(uuid))}\n`);
    return 0;
  },
};
