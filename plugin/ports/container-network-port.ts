import { Address } from '../address';
import { portToken } from './port-token';

/** A container's network, as seen through one of its processes (adapters/host). */
export interface ContainerNetwork {
  /**
   * The process shares the network namespace of the caller (a container on
   * the host's network): its addresses are the host's, never its own.
   */
  sharesHostNetwork: boolean;
  /** Global-scope addresses of its network namespace (loopback and link-local left out). */
  addresses: Address[];
}

export interface ContainerNetworkPort {
  /** The network of the process `pid` (CRIU's CRTOOLS_INIT_PID: the container's init). */
  network(pid: number): Promise<ContainerNetwork>;
  /** The runtime's id of the container the process runs in (from its cgroup), or null when none can be told. */
  containerId(pid: number): Promise<string | null>;
}
export const ContainerNetworkPort = portToken<ContainerNetworkPort>('ContainerNetworkPort');
