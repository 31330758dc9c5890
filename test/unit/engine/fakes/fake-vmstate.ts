import { VmStateHandler, VmStateHelper, VmStatePort } from '../../../../plugin/ports/vmstate-port';

/** QEMU's dbus-vmstate side without buses: the test calls save()/load() as QEMU would. */
export class FakeVmState implements VmStatePort {
  private readonly handlers = new Map<string, VmStateHandler>();
  readonly detached: string[] = [];

  async attach(uuid: string, handler: VmStateHandler): Promise<VmStateHelper> {
    this.handlers.set(uuid, handler);
    return { busAddress: `unix:path=/run/ctmigrate/${uuid}/bus`, objectArgs: this.objectArgs(uuid) };
  }

  /** Whether the VM's helper is up (QEMU could connect to it). */
  attached(uuid: string): boolean {
    return this.handlers.has(uuid);
  }

  async detach(uuid: string): Promise<void> {
    if (this.handlers.delete(uuid)) this.detached.push(uuid);
  }

  objectArgs(uuid: string): string {
    return `dbus-vmstate,id=ctmigrate-${uuid},addr=unix:path=/run/ctmigrate/${uuid}/bus,id-list=ctmigrate`;
  }

  /** QEMU on the source, VM stopped. */
  save(uuid: string): Promise<Uint8Array> {
    return this.handler(uuid).save();
  }

  /** QEMU on the destination, before the VM resumes. */
  load(uuid: string, blob: Uint8Array): Promise<void> {
    return this.handler(uuid).load(blob);
  }

  private handler(uuid: string): VmStateHandler {
    const h = this.handlers.get(uuid);
    if (!h) throw new Error(`no dbus-vmstate helper for VM ${uuid}`);
    return h;
  }
}
