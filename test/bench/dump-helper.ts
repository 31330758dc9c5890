/**
 * The baseline the migration bench compares ctmigrate with: a dbus-vmstate
 * helper of the kind that exists today, which dumps everything at Save().
 *
 *   ip netns exec NS node dump-helper.js BUS_ADDRESS VM_ADDRESS
 *
 * It owns org.qemu.VMState1 on BUS_ADDRESS and exports org.qemu.VMState1
 * (Id "dumpall") at /org/qemu/VMState1:
 * - Save(): dump the VM's entries from this namespace's kernel table (our
 *   ConntrackNetlink.dump with the VM's address filter) and return all of
 *   them as one blob, encoded with our own snapshot codec (the most compact
 *   form we have: generous to the baseline);
 * - Load(blob): decode it and create every entry (ConntrackNetlink.create).
 * No pre-copy, no blocking. Prints {"ready":true}, then one JSON line per
 * call with its timings (the D-Bus marshalling of the reply, which dbus-next
 * does after Save() returns, is not in saveMs: it shows in the blackout).
 *
 *   ip netns exec NS node dump-helper.js BUS_ADDRESS VM_ADDRESS --empty
 *
 * The floor instead: Save() returns 64 zero bytes (about the size of
 * ctmigrate's reference) and Load() does nothing, so a migration pays only
 * QEMU's own dbus-vmstate round trips (find the helper, read its Id, call it)
 * that every helper pays.
 */
import * as dbus from 'dbus-next';
import { parseAddress } from '../../plugin/address';
import { ConnectionTable, Scan } from '../../plugin/connection-table';
import { encodeTableToBuffer } from '../../plugin/snapshot-encoder';
import { decodeSnapshot } from '../../plugin/snapshot-decoder';
import { ConntrackNetlink } from '../../adapters/conntrack/conntrack-netlink';
import { connectBus } from '../../adapters/dbus/bus-connection';

export const DUMP_HELPER_ID = 'dumpall';
const EMPTY_BLOB = Buffer.alloc(64);

const wallMs = (): number => performance.timeOrigin + performance.now();

function out(o: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(o)}\n`);
}

class DumpAllObject extends dbus.interface.Interface {
  private readonly port = new ConntrackNetlink();

  constructor(
    private readonly vmAddress: string,
    private readonly empty: boolean,
  ) {
    super('org.qemu.VMState1');
  }

  get Id(): string {
    return DUMP_HELPER_ID;
  }

  async Save(): Promise<Buffer> {
    const at = wallMs();
    if (this.empty) {
      out({ event: 'save', at, entries: 0, encoded: 0, bytes: EMPTY_BLOB.length, dumpMs: 0, encodeMs: 0, returnedAt: wallMs() });
      return EMPTY_BLOB;
    }
    const t0 = performance.now();
    const table = ConnectionTable.create({ capacity: 4_000_000, extCapacity: 1024 });
    const stats = await this.port.dump({ addresses: [parseAddress(this.vmAddress)] }, table);
    const t1 = performance.now();
    const { bytes, summary } = encodeTableToBuffer(table, { scan: Scan.Snapshot, from: 0, to: table.version });
    const t2 = performance.now();
    out({ event: 'save', at, entries: stats.entries, encoded: summary.entries, bytes: bytes.length, dumpMs: t1 - t0, encodeMs: t2 - t1, returnedAt: wallMs() });
    return bytes;
  }

  async Load(data: Buffer): Promise<void> {
    const at = wallMs();
    if (this.empty) {
      out({ event: 'load', at, bytes: data.length, entries: 0, created: 0, replaced: 0, failures: 0, decodeMs: 0, createMs: 0 });
      return;
    }
    const t0 = performance.now();
    const decoded = decodeSnapshot(data, { maxEntries: 4_000_000 });
    const t1 = performance.now();
    const report = await this.port.create({ table: decoded.table });
    const t2 = performance.now();
    out({ event: 'load', at, bytes: data.length, entries: decoded.entries, created: report.created, replaced: report.replaced, failures: report.failures.length, decodeMs: t1 - t0, createMs: t2 - t1 });
  }
}

DumpAllObject.configureMembers({
  properties: { Id: { signature: 's', access: 'read' } },
  methods: {
    Save: { outSignature: 'ay' },
    Load: { inSignature: 'ay' },
  },
});

async function main(): Promise<void> {
  const [address, vmAddress, mode] = process.argv.slice(2);
  if (!address || !vmAddress || (mode !== undefined && mode !== '--empty')) throw new Error('usage: dump-helper.js BUS_ADDRESS VM_ADDRESS [--empty]');
  const conn = await connectBus(address);
  conn.bus.export('/org/qemu/VMState1', new DumpAllObject(vmAddress, mode === '--empty'));
  const reply = await conn.bus.requestName('org.qemu.VMState1', dbus.NameFlag.DO_NOT_QUEUE);
  if (reply !== dbus.RequestNameReply.PRIMARY_OWNER) throw new Error('org.qemu.VMState1 is already owned on this bus');
  conn.onLost((e) => {
    process.stderr.write(`dump-helper: lost the bus: ${e.message}\n`);
    process.exit(1);
  });
  out({ ready: true });
  process.on('SIGTERM', () => {
    conn.close();
    process.exit(0);
  });
}

main().catch((err: unknown) => {
  process.stderr.write(`dump-helper: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
