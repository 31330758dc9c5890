import { portToken } from './port-token';

/**
 * Which VMs run on this host, as the hypervisor sees them (libvirt;
 * adapters/libvirt). Asked after a crash: a VM that runs here keeps the
 * entries its interrupted session imported.
 */
export interface HostVmsPort {
  /** true: the VM runs here; false: it does not; undefined: the hypervisor cannot tell (not reachable). */
  running(uuid: string): Promise<boolean | undefined>;
}
export const HostVmsPort = portToken<HostVmsPort>('HostVmsPort');
