import { portToken } from './port-token';

/**
 * The addresses configured on this host's interfaces (adapters/host). A VM
 * named with one of them would have the host's own flows taken for its
 * own: blocked at prepare-incoming, deleted at finish.
 */
export interface HostAddressesPort {
  /** Every address on the host's interfaces now, as text. */
  addresses(): string[];
}
export const HostAddressesPort = portToken<HostAddressesPort>('HostAddressesPort');
