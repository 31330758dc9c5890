import { DependencyContainer } from 'tsyringe';
import { formatAddress, parseAddress } from '../../../plugin/address';
import { ManagerClient, ManagerClientError } from '../../../plugin/ports/manager-client';
import { CtmigrateMetadata, metadataChildren, withCtmigrateMetadata, withVmstateObject } from '../../libvirt/domain-rewrite';
import { CTMIGRATE_NS, DomainXmlError, readDomain } from '../../libvirt/domain-xml';
import { unifiedDiff } from '../../libvirt/unified-diff';
import type { Virsh } from '../../libvirt/virsh';
import { VirshError } from '../../libvirt/virsh';
import { virshFor } from '../composition-root';
import { XmlRefusedError } from '../../libvirt/xml-reader';
import { vmSpec, VmSpecError } from '../../../plugin/vm';
import { Command, CommandIo } from '../command';
import { parseMark, parseZone } from '../flow-options';
import { parseOptions } from '../parse-options';
import { CommandError, UsageError } from '../usage-error';
import { resolvePort } from '../../../plugin/ports/port-token';

const DEFAULT_RUN_DIR = '/run/ctmigrate';

/** QEMU's -object value for the VM: the local daemon's answer, or what the default run dir gives. */
async function objectArgsFor(c: DependencyContainer, uuid: string, runDir: string | undefined, io: CommandIo): Promise<string> {
  if (runDir === undefined) {
    const client = resolvePort(c, ManagerClient);
    try {
      return await client.vmstateArgs(uuid);
    } catch (e) {
      if (!(e instanceof ManagerClientError)) throw e;
      io.stderr.write(`ctmigratectl: ${e.message}; using the default run dir ${DEFAULT_RUN_DIR} for the dbus-vmstate bus\n`);
    } finally {
      await client.close().catch(() => undefined);
    }
  }
  // dbus-next (through the vmstate helper's module) only for the one path that needs it.
  const { DbusVmStatePort } = await import('../../dbus/dbus-vmstate-port');
  try {
    return new DbusVmStatePort(runDir ?? DEFAULT_RUN_DIR).objectArgs(uuid);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

interface LiveOptions {
  given: string[];
  zone?: number;
  mark?: { value: number; mask: number };
  require: boolean;
  dryRun: boolean;
}

/** The `<ctmigrate:vm>` element for virsh metadata --set (libvirt puts it, and its children, in our namespace). */
function metadataElement(meta: CtmigrateMetadata): string {
  return `<vm>${metadataChildren(meta, '').join('')}</vm>`;
}

/** enable-vm --live: metadata on the running domain (and its definition), then register with the daemon. */
async function enableLive(c: DependencyContainer, io: CommandIo, virsh: Virsh, domain: string, o: LiveOptions): Promise<number> {
  let facts;
  let persistent: boolean;
  try {
    facts = readDomain(await virsh.liveXml(domain));
    persistent = await virsh.isPersistent(domain);
  } catch (e) {
    if (e instanceof VirshError) throw new CommandError(e.message);
    if (e instanceof XmlRefusedError || e instanceof DomainXmlError) throw new CommandError(`domain ${domain}: XML refused: ${e.message}; nothing changed`);
    throw e;
  }
  for (const w of facts.warnings) io.stderr.write(`ctmigratectl: ${w}\n`);
  const addresses = o.given.length ? [...new Set(o.given)] : facts.addresses;
  if (addresses.length === 0) {
    throw new CommandError(`domain ${domain} names no addresses (no <ctmigrate:address>, nwfilter IP/IPV6 parameter or <interface><ip>): give them with --address IP`);
  }
  const meta: CtmigrateMetadata = { addresses, zone: o.zone ?? facts.zone, mark: o.mark ?? facts.mark, require: o.require || facts.require };
  let vm;
  try {
    vm = vmSpec(facts.uuid, meta.addresses, meta.zone, meta.mark);
  } catch (e) {
    if (e instanceof VmSpecError) throw new UsageError(e.message);
    throw e;
  }
  const element = metadataElement(meta);
  const where = persistent ? 'the running domain and its persistent definition' : 'the running domain (transient: it has no persistent definition)';
  if (o.dryRun) {
    io.stdout.write(`would set on ${where}: ${element}\nwould register VM ${facts.uuid} with ctmigrated\n`);
    return 0;
  }
  try {
    await virsh.setMetadata(domain, { uri: CTMIGRATE_NS, key: 'ctmigrate', xml: element }, { live: true, config: persistent });
  } catch (e) {
    if (e instanceof VirshError) throw new CommandError(`${e.message}; nothing changed`);
    throw e;
  }
  io.stderr.write(`ctmigratectl: ctmigrate metadata (${addresses.join(', ')}) set on ${where}; no restart needed\n`);
  const client = resolvePort(c, ManagerClient);
  try {
    await client.register(vm);
  } catch (e) {
    if (!(e instanceof ManagerClientError)) throw e;
    throw new CommandError(
      `the metadata is set, but the local ctmigrated did not register the VM: ${e.message}; once it runs: ctmigratectl register --vm ${facts.uuid} ${addresses.map((a) => `--address ${a}`).join(' ')}`,
    );
  } finally {
    await client.close().catch(() => undefined);
  }
  io.stdout.write(`VM ${facts.uuid} (${facts.name}) enabled live and registered; its next migration carries its connection state\n`);
  return 0;
}

export const enableVmCommand: Command = {
  name: 'enable-vm',
  summary: 'add ctmigrate metadata and the dbus-vmstate object to a domain (virsh)',
  help: `Usage: ctmigratectl enable-vm DOMAIN [--address IP]... [--zone N] [--mark V[/M]]
                         [--require] [--dry-run] [--connect URI] [--run-dir DIR]
       ctmigratectl enable-vm DOMAIN --live [--address IP]... [--zone N] [--mark V[/M]]
                         [--require] [--dry-run] [--connect URI]

Prepare a libvirt domain for ctmigrate: write our metadata into its
persistent XML (<metadata><ctmigrate:vm xmlns:ctmigrate="urn:ctmigrate:vm:1">
with the VM's addresses, zone, mark, and <ctmigrate:require/> with
--require) and add QEMU's dbus-vmstate object through <qemu:commandline>,
so its connection state travels inside the migration. Prints a unified diff
of the change. The change takes effect the next time the VM starts.

With --live, for a VM that runs now and is not to be restarted: write only
our metadata, on the running domain and on its persistent definition when
it has one (virsh metadata --live --config); no <qemu:commandline>. Then
register the VM with the local ctmigrated, which follows its entries from
then on. When it migrates, the daemon adds the dbus-vmstate object to the
running QEMU (hot attach; libvirt then lists the domain as tainted by a
custom monitor command), or, when that is refused or turned off
(hot-attach = no), cuts over the moment libvirt reports the VM suspended
for migration. \`ctmigratectl check\` shows the path each VM will take.

Options:
  -a, --address IP   an address of the VM (repeatable); default: those the XML
                     already names (our metadata, nwfilter IP/IPV6 parameters,
                     <interface><ip address>)
  -z, --zone N       the conntrack zone of its entries
  -m, --mark V[/M]   the ct mark of its entries
      --require      fail a migration whose state cannot be carried
      --live         the running domain, now: metadata only, no restart (see above)
      --dry-run      print the diff only; change nothing
  -c, --connect URI  libvirt URI for virsh (default: virsh's own)
      --run-dir DIR  the daemon's run dir, when the daemon is not running
                     (default: ask the daemon, else ${DEFAULT_RUN_DIR})

Reads and defines the domain with virsh dumpxml --inactive --security-info
and virsh define (--live: virsh dumpxml and virsh metadata). Exit status:
0 done (or nothing to change), 1 virsh, the XML or (--live) the daemon
refused, 2 bad arguments.
`,
  async run(args: string[], c: DependencyContainer, io: CommandIo): Promise<number> {
    const { values, positionals } = parseOptions(
      args,
      {
        address: { type: 'string', short: 'a', multiple: true },
        zone: { type: 'string', short: 'z' },
        mark: { type: 'string', short: 'm' },
        require: { type: 'boolean' },
        'dry-run': { type: 'boolean' },
        connect: { type: 'string', short: 'c' },
        'run-dir': { type: 'string' },
        live: { type: 'boolean' },
      },
      true,
    );
    if (positionals.length !== 1) throw new UsageError('enable-vm takes exactly one DOMAIN (name or UUID)');
    const domain = positionals[0];
    const given = (values.address ?? []).map((a) => {
      try {
        const p = parseAddress(a.trim());
        return formatAddress(p.bytes, 0, p.bytes.length);
      } catch {
        throw new UsageError(`--address: not an IP address: ${JSON.stringify(a)}`);
      }
    });
    const zone = values.zone === undefined ? undefined : parseZone(values.zone);
    const mark = values.mark === undefined ? undefined : parseMark(values.mark);
    const runDir = values['run-dir'];
    if (runDir !== undefined && !runDir.startsWith('/')) throw new UsageError('--run-dir must be an absolute path');

    const virsh = virshFor(values.connect);
    if (values.live) {
      if (runDir !== undefined) throw new UsageError('--run-dir has no use with --live (the running daemon registers the VM)');
      return enableLive(c, io, virsh, domain, { given, zone, mark, require: values.require === true, dryRun: values['dry-run'] === true });
    }
    try {
      const before = await virsh.dumpInactiveXml(domain);
      const facts = readDomain(before);
      const addresses = given.length ? [...new Set(given)] : facts.addresses;
      if (addresses.length === 0) {
        throw new CommandError(`domain ${domain} names no addresses (no <ctmigrate:address>, nwfilter IP/IPV6 parameter or <interface><ip>): give them with --address IP`);
      }
      for (const w of facts.warnings) io.stderr.write(`ctmigratectl: ${w}\n`);
      const withMeta = withCtmigrateMetadata(facts, {
        addresses,
        zone: zone ?? facts.zone,
        mark: mark ?? facts.mark,
        require: values.require === true || facts.require,
      });
      const objectArgs = await objectArgsFor(c, facts.uuid, runDir, io);
      const after = withVmstateObject(readDomain(withMeta.xml), objectArgs).xml;
      const label = `${domain} (persistent XML)`;
      const diff = unifiedDiff(before, after, `a/${label}`, `b/${label}`);
      if (diff === '') {
        io.stdout.write(`domain ${domain} is already enabled for ctmigrate; nothing to change\n`);
        return 0;
      }
      io.stdout.write(diff);
      if (values['dry-run']) {
        io.stderr.write(`ctmigratectl: dry run: domain ${domain} not changed\n`);
        return 0;
      }
      await virsh.define(after);
      io.stderr.write(`ctmigratectl: domain ${domain} defined with ctmigrate metadata (${addresses.join(', ')}) and the dbus-vmstate object; it takes effect when the VM next starts\n`);
      return 0;
    } catch (e) {
      if (e instanceof VirshError) throw new CommandError(e.message);
      if (e instanceof XmlRefusedError || e instanceof DomainXmlError) throw new CommandError(`domain ${domain}: XML refused: ${e.message}; nothing changed`);
      throw e;
    }
  },
};
