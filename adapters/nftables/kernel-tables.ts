// The blocker's tables as the kernel holds them, read from `nft -j list`.
// The listing is outside input: every object is checked for the fields the
// blocker relies on, anything else in it is ignored, and values are kept as
// printed so the drift check can see what differs from the desired state.

import { JsonValue, NftFamily } from './nft-json';

export interface KernelChain {
  readonly name: string;
  /** Absent on a regular (non-base) chain. */
  readonly type?: string;
  readonly hook?: string;
  readonly prio?: number;
  readonly policy?: string;
}

export interface KernelSet {
  readonly name: string;
  /** As printed: "ipv4_addr", or a JSON text for a concatenation. */
  readonly type: string;
  /** Elements as printed (an address literal; JSON text for anything else). */
  readonly elem: readonly string[];
}

export interface KernelRule {
  readonly chain: string;
  readonly handle?: number;
  readonly comment?: string;
  readonly expr: readonly JsonValue[];
}

/** One of the blocker's tables, read back. */
export interface KernelTable {
  readonly family: NftFamily;
  readonly chains: ReadonlyMap<string, KernelChain>;
  readonly sets: ReadonlyMap<string, KernelSet>;
  /** Rules by chain name, in chain order. */
  readonly rules: ReadonlyMap<string, readonly KernelRule[]>;
}

/** The listing is not what nft prints: the blocker cannot judge the kernel's state. */
export class ListingError extends Error {
  constructor(
    readonly what: string,
    reason: string,
  ) {
    super(`cannot read ${what} from nft's listing: ${reason}`);
    this.name = 'ListingError';
  }
}

type JsonObject = { [key: string]: JsonValue };

function isObject(v: JsonValue | undefined): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function objects(text: string, what: string): JsonObject[] {
  let doc: JsonValue;
  try {
    doc = JSON.parse(text) as JsonValue;
  } catch (e) {
    throw new ListingError(what, `not JSON (${(e as Error).message})`);
  }
  if (!isObject(doc) || !Array.isArray(doc.nftables)) throw new ListingError(what, 'no "nftables" array');
  return doc.nftables.filter(isObject);
}

function text(v: JsonValue | undefined): string | undefined {
  if (v === undefined) return undefined;
  return typeof v === 'string' ? v : JSON.stringify(v);
}

/** Names of the tables of a family present in a `nft -j list tables` listing. */
export function parseTableNames(listing: string, family: NftFamily): Set<string> {
  const names = new Set<string>();
  for (const o of objects(listing, 'the table list')) {
    const t = o.table;
    if (isObject(t) && t.family === family && typeof t.name === 'string') names.add(t.name);
  }
  return names;
}

/** A `nft -j list table FAMILY NAME` listing as a KernelTable. */
export function parseTable(listing: string, family: NftFamily, table: string): KernelTable {
  const what = `table ${family} ${table}`;
  const chains = new Map<string, KernelChain>();
  const sets = new Map<string, KernelSet>();
  const rules = new Map<string, KernelRule[]>();
  const ours = (o: JsonValue | undefined): o is JsonObject => isObject(o) && o.table === table && o.family === family;
  for (const o of objects(listing, what)) {
    if (ours(o.chain)) {
      const c = o.chain;
      if (typeof c.name !== 'string') throw new ListingError(what, 'a chain without a name');
      chains.set(c.name, {
        name: c.name,
        ...(c.type === undefined ? {} : { type: text(c.type) }),
        ...(c.hook === undefined ? {} : { hook: text(c.hook) }),
        ...(typeof c.prio === 'number' ? { prio: c.prio } : {}),
        ...(c.policy === undefined ? {} : { policy: text(c.policy) }),
      });
    } else if (ours(o.set)) {
      const s = o.set;
      if (typeof s.name !== 'string') throw new ListingError(what, 'a set without a name');
      const elem = Array.isArray(s.elem) ? s.elem.map((e) => text(e) as string) : [];
      sets.set(s.name, { name: s.name, type: text(s.type) ?? '', elem });
    } else if (ours(o.rule)) {
      const r = o.rule;
      if (typeof r.chain !== 'string' || !Array.isArray(r.expr)) {
        throw new ListingError(what, 'a rule without chain or expressions');
      }
      const list = rules.get(r.chain) ?? [];
      list.push({
        chain: r.chain,
        ...(typeof r.handle === 'number' ? { handle: r.handle } : {}),
        ...(typeof r.comment === 'string' ? { comment: r.comment } : {}),
        expr: r.expr,
      });
      rules.set(r.chain, list);
    }
  }
  return { family, chains, sets, rules };
}
