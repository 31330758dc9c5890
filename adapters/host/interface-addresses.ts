import { networkInterfaces } from 'node:os';
import { HostAddressesPort } from '../../plugin/ports/host-addresses-port';

/**
 * HostAddressesPort from getifaddrs (os.networkInterfaces): the network
 * namespace the daemon runs in, read at each call, since addresses come
 * and go (DHCP, a VIP moving between hosts).
 */
export class InterfaceAddresses implements HostAddressesPort {
  addresses(): string[] {
    const out: string[] = [];
    for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) out.push(a.address);
    return out;
  }
}
