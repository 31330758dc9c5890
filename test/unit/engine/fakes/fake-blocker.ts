import { Address, formatAddress } from '../../../../plugin/address';
import { BlockedVm, BlockerPort, ReconcileReport } from '../../../../plugin/ports/blocker-port';

/** The drop tables of one host, in memory: who is blocked, and every call in order. */
export class FakeBlocker implements BlockerPort {
  private readonly drops = new Map<string, readonly Address[]>();
  /** When set, block() rejects with this message and changes nothing. */
  failBlock: string | null = null;
  /** Awaited inside unblock() before the drop goes: lets a test hold the lift. */
  unblockGate: (() => Promise<void>) | null = null;

  constructor(private readonly trace: string[] = []) {}

  async block(vm: string, addresses: readonly Address[]): Promise<void> {
    if (addresses.length === 0) throw new Error(`cannot block VM ${vm}: no addresses`);
    if (this.failBlock !== null) throw new Error(this.failBlock);
    this.drops.set(vm, [...addresses]);
    this.trace.push(`block ${vm} ${addresses.map((a) => formatAddress(a.bytes, 0, a.bytes.length)).join(' ')}`);
  }

  async unblock(vm: string): Promise<void> {
    if (this.unblockGate) await this.unblockGate();
    if (this.drops.delete(vm)) this.trace.push(`unblock ${vm}`);
  }

  async blocked(): Promise<BlockedVm[]> {
    return [...this.drops].map(([vm, addresses]) => ({ vm, addresses }));
  }

  async reconcile(): Promise<ReconcileReport> {
    return { repaired: false, differences: [] };
  }

  async clear(): Promise<void> {
    this.drops.clear();
  }

  /** Hold the drops `other` holds (the same host's kernel, seen by a restarted daemon). */
  adopt(other: FakeBlocker): void {
    for (const [vm, a] of other.drops) this.drops.set(vm, a);
  }

  /** Whether the VM's traffic is dropped right now. */
  isBlocked(vm: string): boolean {
    return this.drops.has(vm);
  }
}
