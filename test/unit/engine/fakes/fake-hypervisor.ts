import { DomainEventsPort } from '../../../../plugin/ports/domain-events-port';
import { VmstateObjectPort } from '../../../../plugin/ports/vmstate-object-port';

/**
 * A hypervisor whose running QEMUs hold dbus-vmstate objects by VM (the
 * VmstateObjectPort) and that reports a VM's migration pause on demand
 * (the DomainEventsPort). By default every QEMU has the object from its
 * command line, as an enabled VM does.
 */
export class FakeHypervisor implements VmstateObjectPort, DomainEventsPort {
  /** VMs whose QEMU started with the object (its XML carries it). */
  readonly fromXml = new Set<string>();
  /** VMs whose running QEMU holds a hot-added object now. */
  readonly attached = new Set<string>();
  /** Everything asked, in order: "present VM", "add VM", "remove VM", "follow VM", "unfollow VM". */
  readonly calls: string[] = [];
  /** Every VM starts with the object unless this is false. */
  everyVmHasObject = true;
  /** Set: object-add is refused with this reason. */
  refuseAdd: string | null = null;
  /** Set: events cannot be followed, with this reason. */
  refuseEvents: string | null = null;
  private readonly pauses = new Map<string, Set<() => void>>();

  async present(uuid: string): Promise<boolean> {
    this.calls.push(`present ${uuid}`);
    return this.everyVmHasObject || this.fromXml.has(uuid);
  }

  async add(uuid: string): Promise<void> {
    this.calls.push(`add ${uuid}`);
    if (this.refuseAdd !== null) throw new Error(this.refuseAdd);
    this.attached.add(uuid);
  }

  async remove(uuid: string): Promise<void> {
    this.calls.push(`remove ${uuid}`);
    // A monitor command takes a round trip through libvirt: later than any microtask.
    await new Promise((r) => setImmediate(r));
    this.attached.delete(uuid);
  }

  async onMigrationPause(uuid: string, paused: () => void): Promise<() => void> {
    this.calls.push(`follow ${uuid}`);
    if (this.refuseEvents !== null) throw new Error(this.refuseEvents);
    let set = this.pauses.get(uuid);
    if (!set) this.pauses.set(uuid, (set = new Set()));
    set.add(paused);
    return () => {
      this.calls.push(`unfollow ${uuid}`);
      set.delete(paused);
    };
  }

  /** libvirt reports the VM suspended for migration. */
  pause(uuid: string): void {
    for (const l of this.pauses.get(uuid) ?? []) l();
  }

  /** Subscribers following the VM's events now. */
  following(uuid: string): number {
    return this.pauses.get(uuid)?.size ?? 0;
  }
}
