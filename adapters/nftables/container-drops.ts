import { mkdir, open, readFile, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Address, canonicalAddressText, formatAddress } from '../../plugin/address';
import { AF_INET } from '../../plugin/flow';
import { ContainerDropsPort } from '../../plugin/ports/container-drops-port';
import { DROP_HOOKS, DROP_PRIORITY } from './drop-ruleset';
import { NftError } from './nft-error';
import { NftProcessOptions, nftProcess, NftRunner } from './nft-runner';

/**
 * The drops of containers being restored: one table of their own, apart
 * from the daemon's `ctmigrate` table (the daemon rewrites that one from
 * what it holds, and would take out a drop it did not install):
 *
 *   table inet ctmigrate_containers {
 *     set drop4 { type ipv4_addr; flags timeout; }   (and drop6)
 *     chain prerouting/forward/output { priority -300: ip saddr @drop4 drop ... }
 *   }
 *
 * Each address is an element with a timeout and the container's id as its
 * comment (for people; lift and blocked go by the addresses): the kernel
 * removes the element by itself when the time is up. The same hooks and
 * priority as the VM drop, for the same reasons (drop-ruleset.ts).
 * Every change runs under a lock file, so that one process removing the
 * emptied table never races another adding an element to it.
 */
export const CONTAINER_TABLE = 'ctmigrate_containers';
const SETS = { v4: 'drop4', v6: 'drop6' } as const;
const LOCK_FILE = '/run/lock/ctmigrate-containers.lock';
const LOCK_WAIT_MS = 10_000;

export interface ContainerDropsOptions extends NftProcessOptions {
  runner?: NftRunner;
  lockFile?: string;
}

export class NftContainerDrops implements ContainerDropsPort {
  private readonly run: NftRunner;
  private readonly lockFile: string;

  constructor(options: ContainerDropsOptions = {}) {
    this.run = options.runner ?? nftProcess(options);
    this.lockFile = options.lockFile ?? LOCK_FILE;
  }

  block(container: string, addresses: readonly Address[], expiresS: number): Promise<void> {
    const action = `install the drop for container ${container}`;
    if (addresses.length === 0) return Promise.reject(new NftError(action, 'no address given', 'nothing changed'));
    const seconds = Math.max(1, Math.ceil(expiresS));
    return this.locked(async () => {
      const lines = [`add table inet ${CONTAINER_TABLE}`];
      for (const [fam, set] of [['ipv4_addr', SETS.v4], ['ipv6_addr', SETS.v6]] as const)
        lines.push(`add set inet ${CONTAINER_TABLE} ${set} { type ${fam}; flags timeout; }`);
      // flush + add: whatever was there, each chain ends with exactly these rules (elements stay).
      for (const hook of DROP_HOOKS) {
        lines.push(`add chain inet ${CONTAINER_TABLE} ${hook} { type filter hook ${hook} priority ${DROP_PRIORITY}; policy accept; }`);
        lines.push(`flush chain inet ${CONTAINER_TABLE} ${hook}`);
        for (const [ip, set] of [['ip', SETS.v4], ['ip6', SETS.v6]] as const)
          for (const dir of ['saddr', 'daddr']) lines.push(`add rule inet ${CONTAINER_TABLE} ${hook} ${ip} ${dir} @${set} counter drop`);
      }
      const comment = JSON.stringify(container.slice(0, 64));
      for (const [set, list] of bySet(addresses))
        if (list.length) lines.push(`add element inet ${CONTAINER_TABLE} ${set} { ${list.map((a) => `${a} timeout ${seconds}s comment ${comment}`).join(', ')} }`);
      const r = await this.run(['-f', '-'], `${lines.join('\n')}\n`);
      if (r.code !== 0) throw NftError.from(action, r, 'nothing changed', 'the kernel applied the whole transaction or none of it');
    });
  }

  lift(container: string, addresses: readonly Address[]): Promise<void> {
    const action = `lift the drop for container ${container}`;
    const wanted = new Set(addresses.map((a) => canonicalAddressText(text(a))));
    return this.locked(async () => {
      // An element the kernel expires between the listing and the delete fails the whole transaction: list again, once.
      for (let attempt = 0; ; attempt++) {
        const present = await this.elements(action);
        if (present === null) return;
        const mine = present.filter((e) => wanted.has(e.address));
        // The last drop goes with its table (the empty sets of expired ones too).
        const lines =
          mine.length === present.length ? [`delete table inet ${CONTAINER_TABLE}`] : mine.map((e) => `delete element inet ${CONTAINER_TABLE} ${e.set} { ${e.address} }`);
        if (lines.length === 0) return;
        const r = await this.run(['-f', '-'], `${lines.join('\n')}\n`);
        if (r.code === 0) return;
        if (attempt > 0) throw NftError.from(action, r, 'the drop stays in place until it expires', 'the kernel applied the whole transaction or none of it');
      }
    });
  }

  async blocked(container: string, addresses: readonly Address[]): Promise<boolean> {
    const present = await this.elements(`list the drop of container ${container}`);
    if (present === null) return false;
    const wanted = new Set(addresses.map((a) => canonicalAddressText(text(a))));
    return present.some((e) => wanted.has(e.address));
  }

  /** Every element of both sets; null when the table is absent. */
  private async elements(action: string): Promise<Array<{ set: string; address: string }> | null> {
    const r = await this.run(['-j', 'list', 'table', 'inet', CONTAINER_TABLE], '');
    if (r.code !== 0) {
      if (/No such file or directory/.test(r.stderr)) return null;
      throw NftError.from(action, r, 'nothing changed', 'nothing changed');
    }
    const out: Array<{ set: string; address: string }> = [];
    let doc: { nftables?: Array<{ set?: { name?: string; elem?: unknown[] } }> };
    try {
      doc = JSON.parse(r.stdout) as typeof doc;
    } catch {
      throw new NftError(action, 'nft -j printed no JSON', 'nothing changed');
    }
    for (const o of doc.nftables ?? []) {
      const set = o.set;
      if (!set || (set.name !== SETS.v4 && set.name !== SETS.v6)) continue;
      for (const e of set.elem ?? []) {
        // With a timeout the element is {"elem": {"val": ..., "timeout": ...}}, else the bare address.
        const el = typeof e === 'object' && e !== null && 'elem' in e ? (e as { elem: { val?: unknown } }).elem : { val: e };
        if (typeof el.val !== 'string') continue;
        out.push({ set: set.name, address: canonicalAddressText(el.val) });
      }
    }
    return out;
  }

  /** Run `work` holding the lock file (a dead holder's lock is taken over). */
  private async locked<T>(work: () => Promise<T>): Promise<T> {
    const deadline = Date.now() + LOCK_WAIT_MS;
    for (;;) {
      try {
        const fh = await open(this.lockFile, 'wx', 0o600);
        await fh.writeFile(`${process.pid}\n`);
        await fh.close();
        break;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
          await mkdir(dirname(this.lockFile), { recursive: true });
          continue;
        }
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw new Error(`cannot take the lock ${this.lockFile}: ${(e as Error).message}`);
        const holder = Number((await readFile(this.lockFile, 'utf8').catch(() => '')).trim());
        if (!Number.isInteger(holder) || holder <= 0 || !alive(holder)) {
          await unlink(this.lockFile).catch(() => undefined);
          continue;
        }
        if (Date.now() > deadline) throw new Error(`the lock ${this.lockFile} is held by process ${holder} for more than ${LOCK_WAIT_MS / 1000} s`);
        await sleep(20);
      }
    }
    try {
      return await work();
    } finally {
      await unlink(this.lockFile).catch(() => undefined);
    }
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function text(a: Address): string {
  return formatAddress(a.bytes, 0, a.bytes.length);
}

function bySet(addresses: readonly Address[]): Array<[string, string[]]> {
  const v4 = [...new Set(addresses.filter((a) => a.family === AF_INET).map(text))];
  const v6 = [...new Set(addresses.filter((a) => a.family !== AF_INET).map(text))];
  return [
    [SETS.v4, v4],
    [SETS.v6, v6],
  ];
}
