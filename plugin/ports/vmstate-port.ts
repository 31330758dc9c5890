import { portToken } from './port-token';

/** What the engine does when QEMU calls the VM's dbus-vmstate helper. */
export interface VmStateHandler {
  /** Source, VM stopped: return the (small) blob QEMU carries in the migration stream. */
  save(): Promise<Uint8Array>;
  /** Destination, before the VM resumes: the blob Save() returned on the source. */
  load(blob: Uint8Array): Promise<void>;
}

/** A VM's helper, running. */
export interface VmStateHelper {
  /** D-Bus address of the VM's private bus (unix:path=...). */
  busAddress: string;
  /** Value for QEMU's `-object` option: dbus-vmstate,id=...,addr=...,id-list=ctmigrate */
  objectArgs: string;
}

/**
 * QEMU's dbus-vmstate side: a private dbus-daemon per VM (under the run
 * dir) and an `org.qemu.VMState1` object with Id `ctmigrate` on it.
 * Implemented by adapters/dbus.
 */
export interface VmStatePort {
  /** Start (or reuse) the VM's bus and helper; calls go to `handler`. */
  attach(uuid: string, handler: VmStateHandler): Promise<VmStateHelper>;
  /** Stop the VM's helper and bus. Idempotent. */
  detach(uuid: string): Promise<void>;
  /** QEMU's `-object` value for the VM as this host is configured (the helper need not run). */
  objectArgs(uuid: string): string;
}
export const VmStatePort = portToken<VmStatePort>('VmStatePort');
