// The blocker's tables as they must be for a given set of blocked VMs. Both
// the transaction that writes them and the drift check that compares the
// kernel with them are built from this one description, so what is written
// and what is expected cannot disagree.

import { Address, formatAddress } from '../../plugin/address';
import { AF_INET } from '../../plugin/flow';
import { NftChain, NftFamily, NftHook, NftRule, NftSet } from './nft-json';
import { SetFamily, setName } from './set-names';

/** Every blocked VM (canonical id) with its addresses: the desired state. */
export type Blocks = ReadonlyMap<string, readonly Address[]>;

/** The name of the blocker's table in each family it uses. */
export const TABLE = 'ctmigrate';

/**
 * Base chains run at priority -300 (`raw`), below conntrack's -200
 * (NF_IP_PRI_CONNTRACK, also used by the bridge family's conntrack): a
 * packet dropped here is never seen by conntrack. Conntrack only inserts an
 * entry when a packet is confirmed at the last hook, so a later drop would
 * leave no new entry either — but conntrack would still have looked the
 * packet up, letting a mid-stream packet update (TCP state, window, timeout)
 * an entry that is being imported for the VM right now, and with
 * nf_conntrack_tcp_loose=1 build a throw-away entry per packet. Dropping
 * first keeps the VM's flows untouched until the imported state is ready.
 * Verified by test/integration/nftables-blocker.test.ts: at -300 an imported
 * UDP entry keeps its 600 s timeout; at priority 0 the dropped packet resets
 * it to 30 s.
 */
export const DROP_PRIORITY = -300;

/**
 * Where the drop sits in each table.
 * - prerouting: every packet entering the host from or to the VM, routed or
 *   delivered locally, before conntrack;
 * - forward: the same after routing, which also catches packets whose
 *   destination a DNAT rule (prerouting, -100) has just turned into the VM's
 *   address;
 * - output: the host's own packets to the VM, before conntrack's output hook.
 * In the bridge table the same hooks see frames switched between bridge ports
 * (a bridged VM's traffic never passes the inet hooks unless br_netfilter is
 * loaded); `ip saddr` there matches untagged IPv4/IPv6 frames only.
 */
export const DROP_HOOKS: readonly NftHook[] = ['prerouting', 'forward', 'output'];

/** Everything one of the blocker's tables holds. */
export interface DropTable {
  readonly family: NftFamily;
  readonly chains: readonly NftChain[];
  readonly sets: readonly NftSet[];
  readonly rules: readonly NftRule[];
}

/** The family's table for these blocks; undefined when nothing is blocked (the table should not exist). */
export function dropTable(family: NftFamily, blocks: Blocks): DropTable | undefined {
  if (blocks.size === 0) return undefined;
  const vms = [...blocks.keys()].sort();
  const chains = DROP_HOOKS.map((hook) => baseChain(family, hook));
  const sets = vms.flatMap((vm) => vmSets(family, vm, blocks.get(vm) ?? []));
  const rules = DROP_HOOKS.flatMap((hook) => vms.flatMap((vm) => vmRules(family, hook, vm)));
  return { family, chains, sets, rules };
}

export function baseChain(family: NftFamily, hook: NftHook): NftChain {
  return { family, table: TABLE, name: hook, type: 'filter', hook, prio: DROP_PRIORITY, policy: 'accept' };
}

/** The VM's two sets, IPv4 and IPv6; both exist even when one is empty, so the rules never change shape. */
export function vmSets(family: NftFamily, vm: string, addresses: readonly Address[]): NftSet[] {
  const v4 = uniqueText(addresses.filter((a) => a.family === AF_INET));
  const v6 = uniqueText(addresses.filter((a) => a.family !== AF_INET));
  return [
    withElements({ family, table: TABLE, name: setName(vm, 'v4'), type: 'ipv4_addr' }, v4),
    withElements({ family, table: TABLE, name: setName(vm, 'v6'), type: 'ipv6_addr' }, v6),
  ];
}

/** Drops from and to the VM's addresses, both families, in one chain. */
export function vmRules(family: NftFamily, chain: NftHook, vm: string): NftRule[] {
  const rule = (protocol: 'ip' | 'ip6', field: 'saddr' | 'daddr', set: SetFamily): NftRule => ({
    family,
    table: TABLE,
    chain,
    comment: `ctmigrate: VM ${vm} not ready here`,
    expr: [
      { match: { op: '==', left: { payload: { protocol, field } }, right: `@${setName(vm, set)}` } },
      // Counted so an operator can see the drop working (`nft list table inet ctmigrate`).
      { counter: null },
      { drop: null },
    ],
  });
  return [rule('ip', 'saddr', 'v4'), rule('ip', 'daddr', 'v4'), rule('ip6', 'saddr', 'v6'), rule('ip6', 'daddr', 'v6')];
}

function withElements(set: NftSet, elements: string[]): NftSet {
  // An empty `elem` array is refused by nft; an empty set omits the key.
  return elements.length === 0 ? set : { ...set, elem: elements };
}

/**
 * Text forms, sorted and without duplicates, as the kernel's listing holds
 * them. Formatted from bytes, never passed through from the caller: nft
 * resolves any element that is not an address literal as a host name.
 */
function uniqueText(addresses: readonly Address[]): string[] {
  const text = addresses.map((a) => formatAddress(a.bytes, 0, a.bytes.length));
  return [...new Set(text)].sort();
}
