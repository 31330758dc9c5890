import { Address } from '../address';
import { portToken } from './port-token';

/** A VM whose traffic this host drops, as the kernel holds it. */
export interface BlockedVm {
  /** The VM's identity: a libvirt UUID (lower-case) or the id it was blocked under. */
  readonly vm: string;
  /** Every address whose packets are dropped, in both directions. */
  readonly addresses: readonly Address[];
}

/** What reconcile() found and did. */
export interface ReconcileReport {
  /** True when the kernel differed from the desired state and was rewritten. */
  readonly repaired: boolean;
  /** Each difference found, in words ("table inet ctmigrate is missing"); empty when none. */
  readonly differences: readonly string[];
}

/**
 * Drops a VM's traffic on the destination host until its connection state is
 * ready (ARCHITECTURE: "No packet of the VM is forwarded by the destination
 * before ready"). Implemented over nftables by adapters/nftables.
 *
 * Every change is one atomic kernel transaction: a drop is either fully in
 * place or not at all, and lifting one VM's drop never opens another's.
 * Only the blocker's own tables are touched.
 */
export interface BlockerPort {
  /**
   * Drops every packet from or to the addresses (IPv4 and IPv6) of the VM.
   * Idempotent; blocking an already blocked VM replaces its address list.
   * Rejects when there is no address, or when the kernel refuses (then
   * nothing changed).
   */
  block(vm: string, addresses: readonly Address[]): Promise<void>;
  /**
   * Lifts the VM's drop; a no-op when it is not blocked (also after someone
   * flushed the ruleset). `paused`: the VM waits for this call to resume, so
   * only the lift itself happens now and tidying the tables may follow a
   * moment later.
   */
  unblock(vm: string, options?: { paused?: boolean }): Promise<void>;
  /** The VMs the kernel drops traffic for now, read back from the kernel. */
  blocked(): Promise<BlockedVm[]>;
  /**
   * Brings the kernel back to the desired state (every VM blocked through
   * this blocker and not yet unblocked): re-creates what someone flushed or
   * deleted, removes blocks nobody asked for. Call it periodically and after
   * firewall reloads.
   */
  reconcile(): Promise<ReconcileReport>;
  /** Removes every drop and the blocker's tables; forgets the desired state. */
  clear(): Promise<void>;
  /**
   * Resolves once every change asked for so far is in the kernel, tidy-ups
   * of lifted drops included: the daemon calls it before it exits, so that
   * nothing of a lifted drop stays behind. Optional.
   */
  settle?(): Promise<void>;
}
export const BlockerPort = portToken<BlockerPort>('BlockerPort');
