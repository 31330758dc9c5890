import { strict as assert } from 'node:assert';
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as dbus from 'dbus-next';
import { connectBus } from '../../../adapters/dbus/bus-connection';
import { DbusVmStatePort } from '../../../adapters/dbus/dbus-vmstate-port';
import { VmStateHandler } from '../../../plugin/ports/vmstate-port';
import { VM } from './fake-engine';

describe('dbus-vmstate helper (real dbus-daemon per VM)', function () {
  this.timeout(20000);
  let runDir: string;
  let port: DbusVmStatePort;

  beforeEach(() => {
    runDir = mkdtempSync(join(tmpdir(), 'ctmigrate-run-'));
    port = new DbusVmStatePort(runDir);
  });
  afterEach(async () => {
    await port.detachAll();
    rmSync(runDir, { recursive: true, force: true });
  });

  it("builds QEMU's -object value from the run dir", () => {
    assert.equal(port.objectArgs(VM.toUpperCase()), `dbus-vmstate,id=ctmigrate-0f1e2d3c,addr=unix:path=${runDir}/vm/${VM}/bus.sock,id-list=ctmigrate`);
    assert.throws(() => port.objectArgs('../../etc'), /not a VM UUID/);
    assert.throws(() => new DbusVmStatePort('/run/a,b'), /contains ','/);
  });

  it('serves org.qemu.VMState1 on the VM’s own bus: Id, Save and Load reach the handler', async () => {
    const loaded: Uint8Array[] = [];
    const handler: VmStateHandler = {
      save: async () => Uint8Array.from([1, 2, 3, 250]),
      load: async (blob) => {
        loaded.push(blob);
      },
    };
    const helper = await port.attach(VM, handler);
    assert.equal(helper.busAddress, `unix:path=${runDir}/vm/${VM}/bus.sock`);
    assert.equal(helper.objectArgs, port.objectArgs(VM));
    assert.equal(statSync(join(runDir, 'vm', VM)).mode & 0o777, 0o700);

    const qemu = await connectBus(helper.busAddress);
    try {
      const call = async (member: string, iface: string, signature = '', body: unknown[] = []): Promise<unknown[]> =>
        (await qemu.bus.call(new dbus.Message({ destination: 'org.qemu.VMState1', path: '/org/qemu/VMState1', interface: iface, member, signature, body })))?.body ?? [];
      const [id] = await call('Get', 'org.freedesktop.DBus.Properties', 'ss', ['org.qemu.VMState1', 'Id']);
      assert.equal((id as dbus.Variant).value, 'ctmigrate');
      const [saved] = await call('Save', 'org.qemu.VMState1');
      assert.deepEqual([...(saved as Uint8Array)], [1, 2, 3, 250]);
      await call('Load', 'org.qemu.VMState1', 'ay', [Buffer.from([9, 8, 7])]);
      assert.deepEqual(loaded.map((b) => [...b]), [[9, 8, 7]]);
    } finally {
      qemu.close();
    }
  });

  it('answers a failing handler with org.ctmigrate1.Error.Failed and the handler’s message', async () => {
    const helper = await port.attach(VM, { save: async () => Promise.reject(new Error('delta not shipped')), load: async () => undefined });
    const qemu = await connectBus(helper.busAddress);
    try {
      await assert.rejects(
        qemu.bus.call(new dbus.Message({ destination: 'org.qemu.VMState1', path: '/org/qemu/VMState1', interface: 'org.qemu.VMState1', member: 'Save' })),
        (e: unknown) => e instanceof dbus.DBusError && e.type === 'org.ctmigrate1.Error.Failed' && e.text === 'delta not shipped',
      );
    } finally {
      qemu.close();
    }
  });

  it('reuses a running helper and removes the bus and its folder on detach', async () => {
    const noop: VmStateHandler = { save: async () => new Uint8Array(0), load: async () => undefined };
    const a = await port.attach(VM, noop);
    const b = await port.attach(VM, noop);
    assert.deepEqual(a, b);
    await port.detach(VM);
    assert.equal(existsSync(join(runDir, 'vm', VM)), false);
    await assert.rejects(connectBus(a.busAddress, 1000), /cannot connect/);
    await port.detach(VM);
  });

  it('replaces a folder left behind by a crashed daemon', async () => {
    const noop: VmStateHandler = { save: async () => new Uint8Array(0), load: async () => undefined };
    // What a SIGKILLed daemon leaves: the folder with a dead socket file in it.
    const stale = join(runDir, 'vm', VM, 'bus.sock');
    mkdirSync(join(runDir, 'vm', VM), { recursive: true });
    writeFileSync(stale, 'dead');
    await port.attach(VM, noop);
    const c = await connectBus(`unix:path=${stale}`);
    c.close();
  });
});
