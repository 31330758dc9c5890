// BlockerPort over nftables: the blocker's own tables (`inet ctmigrate`,
// `bridge ctmigrate`), written whole in one `nft -j -f -` transaction per
// change and read back with `nft -j list`. Foreign tables are never named in
// any command, so nothing the blocker does can touch them.

import { SetElementFlusher } from './set-element-flush';
import { Address } from '../../plugin/address';
import { AF_INET, AF_INET6 } from '../../plugin/flow';
import { BlockedVm, BlockerPort, ReconcileReport } from '../../plugin/ports/blocker-port';
import { BlockRequestError } from './block-request-error';
import { tableDrift } from './drift';
import { Blocks, dropTable, TABLE } from './drop-ruleset';
import { enforcedVms, vmsWithSets } from './kernel-blocks';
import { KernelTable, ListingError, parseTable, parseTableNames } from './kernel-tables';
import { NftError } from './nft-error';
import { NftFamily } from './nft-json';
import { nftProcess, NftProcessOptions, NftRunner } from './nft-runner';
import { canonicalVmId } from './set-names';
import { replaceTables } from './transaction';

export interface NftablesBlockerOptions extends NftProcessOptions {
  /** Runs nft; default: a real nft process built from the other options. Unit tests pass a fake. */
  readonly runner?: NftRunner;
  /**
   * Also drop in a `bridge ctmigrate` table (default true): a bridged VM's
   * frames pass only the bridge hooks unless br_netfilter is loaded.
   */
  readonly bridge?: boolean;
  /**
   * Lifts a drop without nft (see set-element-flush.ts); default: over
   * netlink in this process's namespace, unless a runner or an exec prefix
   * says nft runs elsewhere. null turns it off.
   */
  readonly quickLift?: QuickLift | null;
}

/** Remove a VM's addresses from its sets in every table, as one transaction; rejects if anything is off. */
export type QuickLift = (vm: string, addresses: readonly Address[], families: readonly NftFamily[]) => Promise<void>;

/** What the kernel holds of the blocker's tables; a family maps to undefined when its table is absent. */
type KernelState = Map<NftFamily, KernelTable | undefined>;

const ALL_FAMILIES: readonly NftFamily[] = ['inet', 'bridge'];
/** How long after a quick lift the tables are rewritten without the VM's sets. */
const TIDY_DELAY_MS = 250;
const UNKNOWN_AFTER_TIMEOUT = 'the kernel applied the whole transaction or none of it; blocked() tells which';

export class NftablesBlocker implements BlockerPort {
  private readonly run: NftRunner;
  private readonly families: readonly NftFamily[];
  private readonly quickLift: QuickLift | null;
  private flusher: SetElementFlusher | null = null;
  /** A tidy-up of the tables waiting for its turn (see scheduleTidy). */
  private tidy: { timer: NodeJS.Timeout; action: string } | null = null;
  /**
   * The desired state. Undefined until the first call, which adopts every VM
   * the kernel already has sets for: a restarted daemon never silently lifts
   * a drop a previous one installed (it decides with blocked()/unblock()).
   */
  private desired: Map<string, Address[]> | undefined;
  /** Calls run one after another: each reads the kernel, then writes from what it read. */
  private queue: Promise<unknown> = Promise.resolve();

  constructor(options: NftablesBlockerOptions = {}) {
    this.run = options.runner ?? nftProcess(options);
    this.families = options.bridge === false ? ['inet'] : ALL_FAMILIES;
    const local = options.runner === undefined && (options.execPrefix === undefined || options.execPrefix.length === 0);
    if (options.quickLift !== undefined) this.quickLift = options.quickLift;
    else if (local) {
      const flusher = new SetElementFlusher();
      this.flusher = flusher;
      this.quickLift = (vm, addresses, families) => flusher.flush(vm, addresses, families);
    } else this.quickLift = null;
  }

  block(vm: string, addresses: readonly Address[]): Promise<void> {
    return this.serial(async () => {
      const id = canonicalVmId(vm);
      if (addresses.length === 0) throw new BlockRequestError(vm, 'no address given');
      for (const a of addresses) {
        const expected = a.family === AF_INET ? 4 : a.family === AF_INET6 ? 16 : -1;
        if (a.bytes.length !== expected) {
          throw new BlockRequestError(vm, `an address of family ${a.family} has ${a.bytes.length} bytes`);
        }
      }
      const action = `install the drop for VM ${id}`;
      const { desired, kernel } = await this.load(action);
      const next = new Map(desired);
      next.set(id, [...addresses]);
      if (this.drift(next, kernel).length > 0) {
        await this.write(next, action, 'nothing changed');
        // nft exits 0 for some input it silently ignores; only the kernel's own listing proves the drop is there.
        const after = await this.readKernel(action);
        if (!this.enforced(after).has(id)) {
          throw new NftError(action, 'nft reported success but the drop is not in the kernel', 'the drop may be incomplete; call reconcile() or clear()');
        }
      }
      this.desired = next;
      // The lift happens while the VM is paused: have its socket ready.
      this.flusher?.prepare();
    });
  }

  unblock(vm: string, options?: { paused?: boolean }): Promise<void> {
    return this.serial(async () => {
      let id: string;
      try {
        id = canonicalVmId(vm);
      } catch {
        // An id the blocker would refuse to block cannot be blocked: nothing to lift.
        return;
      }
      const action = `lift the drop for VM ${id}`;
      if (this.desired !== undefined) {
        // The cut-over path: the VM is paused until this returns. First the
        // addresses leave the VM's sets in one netlink transaction (the rules
        // then match nothing); the tables are rewritten with nft right after,
        // or, while the VM is paused, a moment later (scheduleTidy). If the
        // quick path fails (a flushed ruleset), one nft
        // run rebuilds the tables from the desired state, which cannot fail
        // on a missing table.
        const addresses = this.desired.get(id);
        if (addresses === undefined) return;
        const next = new Map(this.desired);
        next.delete(id);
        if (this.quickLift) {
          try {
            await this.quickLift(id, addresses, this.families);
            this.desired = next;
            this.scheduleTidy(`remove the emptied sets of VM ${id}`);
            // Not paused: the tidy-up goes next in line, right behind this call.
            if (!options?.paused) this.runTidy();
            return;
          } catch {
            // fall through to nft
          }
        }
        await this.write(next, action, 'the drop stays in place');
        this.desired = next;
        return;
      }
      const { desired, kernel } = await this.load(action);
      const next = new Map(desired);
      next.delete(id);
      if (this.drift(next, kernel).length > 0) await this.write(next, action, 'the drop stays in place');
      this.desired = next;
    });
  }

  blocked(): Promise<BlockedVm[]> {
    return this.serial(async () => {
      const kernel = await this.readKernel('list the blocked VMs');
      const enforced = this.enforced(kernel);
      const inet = kernel.get('inet');
      const addresses = vmsWithSets(inet === undefined ? [] : [inet]);
      return [...enforced].sort().map((vm) => ({ vm, addresses: addresses.get(vm) ?? [] }));
    });
  }

  reconcile(): Promise<ReconcileReport> {
    return this.serial(async () => {
      const { desired, kernel } = await this.load('check the drops');
      const differences = this.drift(desired, kernel);
      if (differences.length === 0) return { repaired: false, differences };
      const vms = [...desired.keys()].sort();
      const action = vms.length === 0 ? 'remove drops nobody asked for' : `restore the drops for VM ${vms.join(', VM ')}`;
      await this.write(desired, action, 'the kernel keeps what it had');
      this.desired = desired;
      return { repaired: true, differences };
    });
  }

  clear(): Promise<void> {
    return this.serial(async () => {
      // Both families, whatever this instance manages: a bridge table from an earlier configuration is ours too.
      await this.apply(ALL_FAMILIES, new Map(), 'remove the ctmigrate tables', 'nothing changed');
      this.desired = new Map();
    });
  }

  settle(): Promise<void> {
    return this.serial(() => Promise.resolve());
  }

  /**
   * Rewrite the tables from the desired state a little later. Why later: nft
   * is a child process, and forking this daemon right after a lift would
   * hold up the Load() reply QEMU is waiting for. Any call that comes first
   * runs the tidy-up before itself.
   */
  private scheduleTidy(action: string): void {
    if (this.tidy) clearTimeout(this.tidy.timer);
    const timer = setTimeout(() => this.runTidy(), TIDY_DELAY_MS);
    timer.unref();
    this.tidy = { timer, action };
  }

  private runTidy(): void {
    const tidy = this.tidy;
    if (!tidy) return;
    this.tidy = null;
    clearTimeout(tidy.timer);
    const work = (): Promise<void> => (this.desired ? this.write(this.desired, tidy.action, 'the empty sets stay') : Promise.resolve());
    this.queue = this.queue.then(work, work).catch(() => undefined);
  }

  private serial<T>(work: () => Promise<T>): Promise<T> {
    this.runTidy();
    const next = this.queue.then(work, work);
    this.queue = next.catch(() => undefined);
    return next;
  }

  private async load(action: string): Promise<{ desired: Map<string, Address[]>; kernel: KernelState }> {
    const kernel = await this.readKernel(action);
    this.desired ??= vmsWithSets([...kernel.values()].filter((t): t is KernelTable => t !== undefined));
    return { desired: this.desired, kernel };
  }

  private drift(blocks: Blocks, kernel: KernelState): string[] {
    return this.families.flatMap((f) => tableDrift(f, dropTable(f, blocks), kernel.get(f)));
  }

  /** VMs whose drop works in every table the blocker manages. */
  private enforced(kernel: KernelState): Set<string> {
    let out: Set<string> | undefined;
    for (const f of this.families) {
      const t = kernel.get(f);
      const here = t === undefined ? new Set<string>() : enforcedVms(t);
      out = out === undefined ? here : new Set([...out].filter((vm) => here.has(vm)));
    }
    return out ?? new Set();
  }

  private write(blocks: Blocks, action: string, kept: string): Promise<void> {
    return this.apply(this.families, blocks, action, kept);
  }

  private async apply(families: readonly NftFamily[], blocks: Blocks, action: string, kept: string): Promise<void> {
    const doc = replaceTables(families, blocks);
    const result = await this.run(['-j', '-f', '-'], JSON.stringify(doc));
    if (result.code !== 0) throw NftError.from(action, result, kept, UNKNOWN_AFTER_TIMEOUT);
  }

  private async readKernel(action: string): Promise<KernelState> {
    const list = await this.run(['-j', 'list', 'tables'], '');
    if (list.code !== 0) throw NftError.from(action, list, 'nothing changed', 'nothing changed');
    let names: Map<NftFamily, Set<string>>;
    try {
      names = new Map(ALL_FAMILIES.map((f) => [f, parseTableNames(list.stdout, f)]));
    } catch (e) {
      if (e instanceof ListingError) throw new NftError(action, e.message, 'nothing changed', list);
      throw e;
    }
    const state: KernelState = new Map();
    for (const family of ALL_FAMILIES) {
      if (!names.get(family)?.has(TABLE)) {
        state.set(family, undefined);
        continue;
      }
      const r = await this.run(['-j', 'list', 'table', family, TABLE], '');
      if (r.code !== 0) throw NftError.from(action, r, 'nothing changed', 'nothing changed');
      try {
        state.set(family, parseTable(r.stdout, family, TABLE));
      } catch (e) {
        if (e instanceof ListingError) throw new NftError(action, e.message, 'nothing changed', r);
        throw e;
      }
    }
    return state;
  }

}
