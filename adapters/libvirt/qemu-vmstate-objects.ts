// The dbus-vmstate object in a running QEMU, through libvirt's monitor
// passthrough (`virsh qemu-monitor-command DOMAIN JSON`). Verified on QEMU
// 7.2: `object-add` of a dbus-vmstate object into a running QEMU is
// accepted, and its section then rides that QEMU's next migration stream.
// libvirt passes QEMU's reply through as text and exits 0 even when QEMU
// refused the command, so the reply is read for its "error" member.

import { VmstateObjectPort } from '../../plugin/ports/vmstate-object-port';
import { readDomain } from './domain-xml';
import { parseQemuObject } from './qemu-object';
import { Virsh } from './virsh';

interface QmpReply {
  return?: unknown;
  error?: { class?: string; desc?: string };
}

/** What QMP object-add needs from `dbus-vmstate,id=...,addr=...,id-list=...`. */
function qmpArguments(objectArgs: string): { 'qom-type': string; id: string; addr: string; 'id-list': string } {
  const o = parseQemuObject(objectArgs);
  const id = o.values.get('id');
  const addr = o.values.get('addr');
  const idList = o.values.get('id-list');
  if (o.type !== 'dbus-vmstate' || !id || !addr || !idList) throw new Error(`not a dbus-vmstate object: ${objectArgs}`);
  return { 'qom-type': 'dbus-vmstate', id, addr, 'id-list': idList };
}

export class QemuVmstateObjects implements VmstateObjectPort {
  constructor(private readonly virsh: Virsh) {}

  /**
   * From the live domain XML: an object there came with the VM's command
   * line (enable-vm, or the migrate hook that brought it here). Reading the
   * XML does not taint the domain the way a monitor command does.
   */
  async present(uuid: string, objectArgs: string, timeoutMs: number): Promise<boolean> {
    const { id } = qmpArguments(objectArgs);
    const facts = readDomain(await this.virsh.liveXml(uuid, timeoutMs));
    return facts.vmstateObjects.some((o) => o.ours || o.options.values.get('id') === id);
  }

  async add(uuid: string, objectArgs: string, timeoutMs: number): Promise<void> {
    const args = qmpArguments(objectArgs);
    const reply = await this.qmp(uuid, { execute: 'object-add', arguments: args }, timeoutMs);
    // Left by an earlier session whose daemon died before taking it out: the
    // same id, the same helper bus. Anything else of that name is in the way.
    if (reply.error && /duplicate|already exists/i.test(reply.error.desc ?? '')) {
      const type = await this.objectType(uuid, args.id, timeoutMs);
      if (type === 'child<dbus-vmstate>') return;
      throw new Error(`QEMU refused object-add: an object ${args.id} of type ${type ?? 'unknown'} is in the way`);
    }
    if (reply.error) throw new Error(`QEMU refused object-add: ${reply.error.desc ?? reply.error.class ?? 'no reason given'}`);
  }

  async remove(uuid: string, objectArgs: string, timeoutMs: number): Promise<void> {
    const { id } = qmpArguments(objectArgs);
    const reply = await this.qmp(uuid, { execute: 'object-del', arguments: { id } }, timeoutMs);
    if (reply.error && /not found/i.test(reply.error.desc ?? '')) return;
    if (reply.error) throw new Error(`QEMU refused object-del: ${reply.error.desc ?? reply.error.class ?? 'no reason given'}`);
  }

  /** The QOM type of /objects/ID ("child<dbus-vmstate>"), undefined when there is none. */
  private async objectType(uuid: string, id: string, timeoutMs: number): Promise<string | undefined> {
    const reply = await this.qmp(uuid, { execute: 'qom-list', arguments: { path: '/objects' } }, timeoutMs);
    const list = Array.isArray(reply.return) ? (reply.return as Array<{ name?: unknown; type?: unknown }>) : [];
    const found = list.find((o) => o.name === id);
    return typeof found?.type === 'string' ? found.type : undefined;
  }

  private async qmp(uuid: string, command: object, timeoutMs: number): Promise<QmpReply> {
    const text = await this.virsh.monitorCommand(uuid, JSON.stringify(command), timeoutMs);
    try {
      return JSON.parse(text) as QmpReply;
    } catch {
      throw new Error(`libvirt passed back a reply that is not JSON: ${text.trim().slice(0, 200)}`);
    }
  }
}
