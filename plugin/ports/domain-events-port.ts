import { portToken } from './port-token';

/**
 * The hypervisor's lifecycle events for this host's domains (libvirt's
 * event API; adapters/libvirt).
 */
export interface DomainEventsPort {
  /**
   * Call `paused` each time the hypervisor reports the VM suspended for
   * migration (QEMU stopped it for the last copy). Resolves, once events
   * for it are followed, with the function that stops following them;
   * rejects when they cannot be followed (no libvirt, no such domain).
   */
  onMigrationPause(uuid: string, paused: () => void): Promise<() => void>;
  /** Stop following anything (the daemon stops). */
  close?(): Promise<void>;
}
export const DomainEventsPort = portToken<DomainEventsPort>('DomainEventsPort');
