// How the kernel's copy of one of the blocker's tables differs from the
// desired one. reconcile() rewrites the tables when this finds anything, and
// reports what it found; an empty list means the kernel is as it should be.

import { formatAddress, parseAddress } from '../../plugin/address';
import { DropTable, TABLE } from './drop-ruleset';
import { KernelChain, KernelTable } from './kernel-tables';
import { JsonValue, NftChain, NftFamily } from './nft-json';
import { parseSetName } from './set-names';

/**
 * A rule in a form that is equal for what the blocker writes and what nft
 * prints back: keys sorted, counter values dropped (the kernel's counts are
 * not part of the rule), handle ignored, comment kept.
 */
export function ruleKey(expr: readonly JsonValue[] | readonly object[], comment: string | undefined): string {
  const normal = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(normal);
    if (typeof v !== 'object' || v === null) return v;
    const o = v as Record<string, unknown>;
    return Object.fromEntries(
      Object.keys(o)
        .sort()
        .map((k) => [k, k === 'counter' ? null : normal(o[k])]),
    );
  };
  return JSON.stringify([normal(expr), comment ?? null]);
}

/** An element as text that compares equal however nft printed the address (e.g. ::ffff:192.0.2.1). */
export function elementKey(element: string): string {
  try {
    const a = parseAddress(element);
    return formatAddress(a.bytes, 0, a.bytes.length);
  } catch {
    return element;
  }
}

function chainMatches(want: NftChain, got: KernelChain): boolean {
  return got.type === want.type && got.hook === want.hook && got.prio === want.prio && got.policy === want.policy;
}

function describeChain(c: KernelChain): string {
  if (c.hook === undefined) return 'a regular chain';
  return `${c.type ?? '?'} hook ${c.hook} priority ${c.prio ?? '?'} policy ${c.policy ?? '?'}`;
}

function owner(setName: string): string {
  const parsed = parseSetName(setName);
  return parsed === undefined ? 'not one of ours' : `VM ${parsed.vm}`;
}

/** Every difference between the desired table (undefined: should not exist) and the kernel's (undefined: absent). */
export function tableDrift(family: NftFamily, want: DropTable | undefined, got: KernelTable | undefined): string[] {
  const name = `table ${family} ${TABLE}`;
  if (want === undefined) return got === undefined ? [] : [`${name} exists though no VM is blocked`];
  if (got === undefined) return [`${name} is missing`];
  const out: string[] = [];

  const wantChains = new Map(want.chains.map((c) => [c.name, c]));
  for (const c of want.chains) {
    const k = got.chains.get(c.name);
    if (k === undefined) out.push(`chain ${family} ${TABLE} ${c.name} is missing`);
    else if (!chainMatches(c, k)) {
      out.push(`chain ${family} ${TABLE} ${c.name} is ${describeChain(k)}, not filter hook ${c.hook} priority ${c.prio} policy ${c.policy}`);
    }
  }
  for (const k of got.chains.keys()) if (!wantChains.has(k)) out.push(`chain ${family} ${TABLE} ${k} was added by someone else`);

  const wantSets = new Map(want.sets.map((s) => [s.name, s]));
  for (const s of want.sets) {
    const k = got.sets.get(s.name);
    if (k === undefined) {
      out.push(`set ${family} ${TABLE} ${s.name} (${owner(s.name)}) is missing`);
      continue;
    }
    if (k.type !== s.type) out.push(`set ${family} ${TABLE} ${s.name} has type ${k.type}, not ${s.type}`);
    const wantElems = (s.elem ?? []).map(elementKey).sort();
    const gotElems = k.elem.map(elementKey).sort();
    if (JSON.stringify(wantElems) !== JSON.stringify(gotElems)) {
      out.push(`set ${family} ${TABLE} ${s.name} (${owner(s.name)}) holds [${gotElems.join(', ')}], not [${wantElems.join(', ')}]`);
    }
  }
  for (const k of got.sets.keys()) if (!wantSets.has(k)) out.push(`set ${family} ${TABLE} ${k} (${owner(k)}) is not wanted`);

  // Rules are compared in order: a rule someone put in front of ours (an accept) would end the chain before our drop.
  const chainNames = new Set([...wantChains.keys(), ...got.rules.keys()]);
  for (const chain of chainNames) {
    const wantRules = want.rules.filter((r) => r.chain === chain).map((r) => ruleKey(r.expr, r.comment));
    const gotRules = (got.rules.get(chain) ?? []).map((r) => ruleKey(r.expr, r.comment));
    if (JSON.stringify(wantRules) === JSON.stringify(gotRules)) continue;
    const missing = wantRules.filter((r) => !gotRules.includes(r)).length;
    const extra = gotRules.filter((r) => !wantRules.includes(r)).length;
    const detail = missing === 0 && extra === 0 ? 'are out of order' : `lack ${missing} of ${wantRules.length} drop rules and hold ${extra} foreign ones`;
    out.push(`the rules of chain ${family} ${TABLE} ${chain} ${detail}`);
  }
  return out;
}
