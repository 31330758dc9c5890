import { DecodedRegistry } from '../vm-registry';
import { VmSpec } from '../vm';
import { portToken } from './port-token';

/**
 * Where the daemon keeps the VMs registered on this host between runs
 * (a file under the run dir; adapters/registry). Rebuilt at start, so a
 * restarted daemon still finds the VMs it is the source for.
 */
export interface RegistryStore {
  /** What was saved last; no file yet = no VMs. Unreadable records come back as problems. */
  load(): Promise<DecodedRegistry>;
  /** Replace the saved set with `vms` (atomically: a crash leaves the old or the new set). */
  save(vms: readonly VmSpec[]): Promise<void>;
}
export const RegistryStore = portToken<RegistryStore>('RegistryStore');
