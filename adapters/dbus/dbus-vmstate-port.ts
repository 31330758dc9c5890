import { chmodSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as dbus from 'dbus-next';
import { Log } from '../../plugin/ports/log-port';
import { VmStateHandler, VmStateHelper, VmStatePort } from '../../plugin/ports/vmstate-port';
import { parseVmUuid } from '../../plugin/vm';
import { BusConnection, connectBus } from './bus-connection';
import { DbusDaemonProcess } from './dbus-daemon-process';
import { VMSTATE_BUS_NAME, VMSTATE_HELPER_ID, VMSTATE_PATH } from './names';
import { vmBusConfig } from './vm-bus-config';
import { VmStateObject } from './vmstate-object';

/** The VM's helper could not be started; nothing of it is left behind. */
export class VmStateHelperError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'VmStateHelperError';
  }
}

/** Longest unix socket path Linux accepts (sun_path is 108 bytes with the NUL). */
const MAX_SOCKET_PATH = 107;

interface Running {
  helper: VmStateHelper;
  dir: string;
  daemon: DbusDaemonProcess;
  connection: BusConnection;
  /** Swapped by a repeated attach; the exported object calls whatever is here. */
  handler: VmStateHandler;
}

/**
 * VmStatePort with real buses: per VM a `dbus-daemon` under
 * `<runDir>/vm/<uuid>/` (folder 0700: root only) and, connected to it, an
 * `org.qemu.VMState1` object with Id `ctmigrate`. The bus children die with
 * this process (exit hook, parent-death signal); a folder left by a crash is
 * replaced on the next attach.
 */
export class DbusVmStatePort implements VmStatePort {
  private readonly running = new Map<string, Promise<Running>>();

  constructor(
    readonly runDir: string = '/run/ctmigrate',
    private readonly log?: Log,
  ) {
    // QEMU's option syntax and D-Bus addresses both use ',' as separator.
    if (runDir.includes(',') || runDir.includes(';')) throw new VmStateHelperError(`run dir ${JSON.stringify(runDir)} contains ',' or ';', which QEMU's -object and D-Bus addresses cannot carry`);
    const longest = this.socketPath('00000000-0000-0000-0000-000000000000');
    if (longest.length > MAX_SOCKET_PATH) throw new VmStateHelperError(`run dir ${runDir} is too long: the bus socket ${longest} exceeds ${MAX_SOCKET_PATH} bytes`);
  }

  objectArgs(uuid: string): string {
    const vm = parseVmUuid(uuid);
    // QOM ids must start with a letter; eight hex digits keep it short and unique enough on a host.
    return `dbus-vmstate,id=ctmigrate-${vm.slice(0, 8)},addr=unix:path=${this.socketPath(vm)},id-list=${VMSTATE_HELPER_ID}`;
  }

  async attach(uuid: string, handler: VmStateHandler): Promise<VmStateHelper> {
    const vm = parseVmUuid(uuid);
    const existing = this.running.get(vm);
    if (existing) {
      const r = await existing;
      r.handler = handler;
      return r.helper;
    }
    const starting = this.start(vm, handler);
    this.running.set(vm, starting);
    starting.catch(() => this.running.delete(vm));
    return (await starting).helper;
  }

  async detach(uuid: string): Promise<void> {
    const vm = parseVmUuid(uuid);
    const r = this.running.get(vm);
    if (!r) return;
    this.running.delete(vm);
    let running: Running;
    try {
      running = await r;
    } catch {
      return; // It never started, and start() cleaned up after itself.
    }
    await this.stopParts(running.dir, running.daemon, running.connection);
  }

  /** Stop every VM's helper (daemon shutdown). */
  async detachAll(): Promise<void> {
    await Promise.all([...this.running.keys()].map((vm) => this.detach(vm)));
  }

  private vmDir(vm: string): string {
    return join(this.runDir, 'vm', vm);
  }

  private socketPath(vm: string): string {
    return join(this.vmDir(vm), 'bus.sock');
  }

  private async start(vm: string, handler: VmStateHandler): Promise<Running> {
    const dir = this.vmDir(vm);
    const socketPath = this.socketPath(vm);
    mkdirSync(this.runDir, { recursive: true });
    const vmRoot = join(this.runDir, 'vm');
    mkdirSync(vmRoot, { recursive: true });
    chmodSync(vmRoot, 0o700);
    // A folder left by a crashed daemon holds a dead socket: start afresh.
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { mode: 0o700 });
    chmodSync(dir, 0o700);
    const configFile = join(dir, 'bus.conf');
    writeFileSync(configFile, vmBusConfig(socketPath), { mode: 0o600 });
    const daemon = new DbusDaemonProcess(configFile);
    let connection: BusConnection | undefined;
    try {
      await daemon.start();
      connection = await connectBus(`unix:path=${socketPath}`);
      const running: Running = {
        helper: { busAddress: `unix:path=${socketPath}`, objectArgs: this.objectArgs(vm) },
        dir,
        daemon,
        connection,
        handler,
      };
      connection.bus.export(
        VMSTATE_PATH,
        new VmStateObject({ save: () => running.handler.save(), load: (blob) => running.handler.load(blob) }),
      );
      const reply = await connection.bus.requestName(VMSTATE_BUS_NAME, dbus.NameFlag.DO_NOT_QUEUE);
      if (reply !== dbus.RequestNameReply.PRIMARY_OWNER) throw new Error(`${VMSTATE_BUS_NAME} is already owned on the VM's bus`);
      connection.onLost((e) => this.log?.warn('dbus-vmstate helper lost its bus; QEMU cannot save or load the VM state through it', { vm, error: e.message }));
      this.log?.info('dbus-vmstate helper started', { vm, bus: running.helper.busAddress, pid: daemon.pid });
      return running;
    } catch (e) {
      await this.stopParts(dir, daemon, connection);
      throw new VmStateHelperError(`VM ${vm}: cannot start its dbus-vmstate helper: ${e instanceof Error ? e.message : String(e)}; nothing left running`);
    }
  }

  private async stopParts(dir: string, daemon: DbusDaemonProcess, connection: BusConnection | undefined): Promise<void> {
    connection?.close();
    await daemon.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
