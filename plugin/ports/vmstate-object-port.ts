import { portToken } from './port-token';

/**
 * The dbus-vmstate object inside a VM's running QEMU, reached through the
 * hypervisor (libvirt's QEMU monitor passthrough; adapters/libvirt). The
 * object is named by the `-object` value its helper gives
 * (dbus-vmstate,id=...,addr=...,id-list=...).
 */
export interface VmstateObjectPort {
  /** Whether the VM's running QEMU has an object with that value's id. Throws when it cannot tell. */
  present(uuid: string, objectArgs: string, timeoutMs: number): Promise<boolean>;
  /** Add the object to the running QEMU; throws with the hypervisor's reason when refused. */
  add(uuid: string, objectArgs: string, timeoutMs: number): Promise<void>;
  /** Take it out again; an object already gone is no error. */
  remove(uuid: string, objectArgs: string, timeoutMs: number): Promise<void>;
}
export const VmstateObjectPort = portToken<VmstateObjectPort>('VmstateObjectPort');
