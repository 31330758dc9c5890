import { Address } from '../address';
import { portToken } from './port-token';

/**
 * Drop rules for containers being restored (adapters/nftables). Unlike a
 * VM's drop, which the daemon holds, a container's drop is installed by one
 * action-script process and lifted by a later one, with nobody in between:
 * each drop expires in the kernel by itself after `expiresS`, so a restore
 * that dies unseen cannot block an address for ever.
 */
export interface ContainerDropsPort {
  /** Drop every packet from and to the addresses until lift() or the expiry. */
  block(container: string, addresses: readonly Address[], expiresS: number): Promise<void>;
  /** Lift the container's drop of these addresses (nothing to do when there is none). */
  lift(container: string, addresses: readonly Address[]): Promise<void>;
  /** Whether any of the addresses is still dropped for the container. */
  blocked(container: string, addresses: readonly Address[]): Promise<boolean>;
}
/** Default life of a destination's drop in the kernel, should nothing lift it (a restore of a big container takes minutes). */
export const DEFAULT_DROP_EXPIRY_S = 300;

export const ContainerDropsPort = portToken<ContainerDropsPort>('ContainerDropsPort');
