import { Address } from '../address';
import { portToken } from './port-token';

/**
 * Someone to notice a restore that dies (adapters/criu). CRIU runs no
 * action script when a restore fails: the destination only learns of it
 * because the CRIU process is gone before network-unlock lifted the drop.
 */
export interface RestoreWatchPort {
  /**
   * Watch the CRIU process `criuPid` in the background (a process of its
   * own, outliving this one) and run the container's abandon step if CRIU
   * exits while the drop is still in place, or once `deadline` passes.
   */
  watch(container: string, addresses: readonly Address[], criuPid: number, deadline: number): Promise<void>;
}
export const RestoreWatchPort = portToken<RestoreWatchPort>('RestoreWatchPort');
