// Which VMs the kernel's copy of the blocker's tables holds, read back.

import { Address, parseAddress } from '../../plugin/address';
import { baseChain, DROP_HOOKS, vmRules } from './drop-ruleset';
import { elementKey, ruleKey } from './drift';
import { KernelTable } from './kernel-tables';
import { parseSetName } from './set-names';

/**
 * Every VM that has a set in any of the tables, with the union of its
 * addresses. This is the generous reading, for adopting what a previous
 * daemon left: a VM whose rules someone flushed still counts, so a restart
 * never lifts a drop nobody asked to lift.
 */
export function vmsWithSets(tables: readonly KernelTable[]): Map<string, Address[]> {
  const texts = new Map<string, Set<string>>();
  for (const t of tables) {
    for (const s of t.sets.values()) {
      const owner = parseSetName(s.name);
      if (owner === undefined) continue;
      const set = texts.get(owner.vm) ?? new Set<string>();
      for (const e of s.elem) set.add(elementKey(e));
      texts.set(owner.vm, set);
    }
  }
  const out = new Map<string, Address[]>();
  for (const [vm, set] of texts) out.set(vm, [...set].sort().flatMap(parseOrSkip));
  return out;
}

/**
 * VMs whose drop really works in this table: both sets exist, every drop
 * chain is a base chain at the drop priority, holds all the VM's rules and
 * nothing else than the blocker's rules (a foreign accept in front would
 * end the chain before the drop).
 */
export function enforcedVms(table: KernelTable): Set<string> {
  const candidates = new Set<string>();
  for (const s of table.sets.values()) {
    const owner = parseSetName(s.name);
    if (owner !== undefined) candidates.add(owner.vm);
  }
  const withBothSets = [...candidates].filter((vm) =>
    [...table.sets.keys()].filter((n) => parseSetName(n)?.vm === vm).length === 2,
  );
  const enforced = new Set<string>();
  for (const vm of withBothSets) {
    const ok = DROP_HOOKS.every((hook) => {
      const chain = table.chains.get(hook);
      const want = baseChain(table.family, hook);
      if (chain === undefined || chain.hook !== want.hook || chain.prio !== want.prio || chain.type !== want.type) return false;
      const ours = new Set(withBothSets.flatMap((v) => vmRules(table.family, hook, v)).map((r) => ruleKey(r.expr, r.comment)));
      const got = (table.rules.get(hook) ?? []).map((r) => ruleKey(r.expr, r.comment));
      if (got.some((k) => !ours.has(k))) return false;
      return vmRules(table.family, hook, vm).every((r) => got.includes(ruleKey(r.expr, r.comment)));
    });
    if (ok) enforced.add(vm);
  }
  return enforced;
}

function parseOrSkip(text: string): Address[] {
  try {
    return [parseAddress(text)];
  } catch {
    // Not an address literal (someone added a prefix or range): not ours to report.
    return [];
  }
}
