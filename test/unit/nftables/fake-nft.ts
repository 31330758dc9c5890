// A stand-in for the nft binary at the blocker's boundary (argv + stdin in,
// stdout + exit status out). It keeps a ruleset in memory, applies a
// transaction whole or not at all, refuses `delete table` of an absent
// table like the real nft does, and prints listings in nft 1.0.6's shape
// (handles, counters with values, `elem` omitted for an empty set).

import { NftChain, NftCommand, NftRule, NftSet, NftTransaction } from '../../../adapters/nftables/nft-json';
import { NftResult } from '../../../adapters/nftables/nft-runner';

interface FakeTable {
  family: string;
  name: string;
  chains: NftChain[];
  sets: NftSet[];
  rules: NftRule[];
}

const METAINFO = { metainfo: { version: '1.0.6', release_name: 'Lester Gooch #5', json_schema_version: 1 } };

export class FakeNft {
  /** Every call, in order. */
  readonly calls: Array<{ args: readonly string[]; stdin: string }> = [];
  /** Transactions the fake committed or refused, parsed. */
  readonly transactions: NftTransaction[] = [];
  /** When set, the next transaction is refused with this stderr (and the state kept). */
  refuseNext: string | undefined;
  /** When set, the next call answers as a killed process. */
  timeOutNext = false;
  private tables: FakeTable[] = [];
  private handle = 1;

  /** The NftRunner to hand to the blocker. */
  readonly runner = async (args: readonly string[], stdin: string): Promise<NftResult> => {
    this.calls.push({ args, stdin });
    if (this.timeOutNext) {
      this.timeOutNext = false;
      return { stdout: '', stderr: '', code: null, failure: 'timeout' };
    }
    const key = args.join(' ');
    if (key === '-j -f -') return this.apply(JSON.parse(stdin) as NftTransaction);
    if (key === '-j list tables') {
      return ok({ nftables: [METAINFO, ...this.tables.map((t) => ({ table: { family: t.family, name: t.name, handle: 1 } }))] });
    }
    const m = /^-j list table (\S+) (\S+)$/.exec(key);
    if (m) {
      const t = this.find(m[1] as string, m[2] as string);
      if (t === undefined) return { stdout: '', stderr: `Error: No such file or directory\nlist table ${m[1]} ${m[2]}\n`, code: 1 };
      return ok({ nftables: [METAINFO, ...this.listing(t)] });
    }
    return { stdout: '', stderr: `Error: fake nft does not know "${key}"\n`, code: 1 };
  };

  /** Calls that wrote (`nft -j -f -`). */
  get writes(): number {
    return this.calls.filter((c) => c.args.includes('-f')).length;
  }

  /** A table that is not the blocker's, with a chain and a rule. */
  addForeignTable(family: string, name: string): void {
    this.tables.push({
      family,
      name,
      chains: [{ family: 'inet', table: name, name: 'fwd', type: 'filter', hook: 'forward', prio: 0, policy: 'drop' }],
      sets: [],
      rules: [],
    });
  }

  /** `nft flush ruleset`: every table goes, ours and foreign. */
  flushRuleset(): void {
    this.tables = [];
  }

  /** `nft flush chain FAMILY TABLE CHAIN`: its rules go, the chain stays. */
  flushChain(family: string, table: string, chain: string): void {
    const t = this.find(family, table);
    if (t) t.rules = t.rules.filter((r) => r.chain !== chain);
  }

  /** `nft insert rule ...`: a rule in front of the chain's others. */
  insertRule(family: string, table: string, rule: NftRule): void {
    const t = this.find(family, table);
    if (t) t.rules.unshift({ ...rule, handle: this.handle++ });
  }

  /** `nft add element ...`. */
  addElement(family: string, table: string, set: string, element: string): void {
    const s = this.find(family, table)?.sets.find((x) => x.name === set);
    if (s) s.elem = [...(s.elem ?? []), element];
  }

  tableNames(): string[] {
    return this.tables.map((t) => `${t.family} ${t.name}`);
  }

  private find(family: string, name: string): FakeTable | undefined {
    return this.tables.find((t) => t.family === family && t.name === name);
  }

  private apply(doc: NftTransaction): NftResult {
    this.transactions.push(doc);
    if (this.refuseNext !== undefined) {
      const stderr = this.refuseNext;
      this.refuseNext = undefined;
      return { stdout: '', stderr, code: 1 };
    }
    const saved = structuredClone(this.tables);
    try {
      doc.nftables.forEach((c, i) => this.command(c, i));
    } catch (e) {
      this.tables = saved;
      return { stdout: '', stderr: `internal:0:0-0: Error: ${(e as Error).message}\n\n`, code: 1 };
    }
    return { stdout: '', stderr: '', code: 0 };
  }

  private command(c: NftCommand, index: number): void {
    if ('delete' in c) {
      const t = c.delete.table;
      if (this.find(t.family, t.name) === undefined) throw new Error(`Could not process rule: No such file or directory (command ${index})`);
      this.tables = this.tables.filter((x) => !(x.family === t.family && x.name === t.name));
      return;
    }
    const o = c.add;
    if ('table' in o) {
      if (!this.find(o.table.family, o.table.name)) this.tables.push({ family: o.table.family, name: o.table.name, chains: [], sets: [], rules: [] });
      return;
    }
    const ref = 'chain' in o ? o.chain : 'set' in o ? o.set : o.rule;
    const t = this.find(ref.family, ref.table);
    if (t === undefined) throw new Error('Could not process rule: No such file or directory');
    if ('chain' in o) {
      if (!t.chains.some((x) => x.name === o.chain.name)) t.chains.push({ ...o.chain, handle: this.handle++ });
    } else if ('set' in o) {
      if (o.set.elem !== undefined && o.set.elem.length === 0) throw new Error('Invalid set elem expression.');
      if (!t.sets.some((x) => x.name === o.set.name)) t.sets.push({ ...o.set, handle: this.handle++ });
    } else {
      if (!t.chains.some((x) => x.name === o.rule.chain)) throw new Error('Could not process rule: No such file or directory');
      for (const e of o.rule.expr) {
        if ('match' in e && e.match.right.startsWith('@') && !t.sets.some((s) => `@${s.name}` === e.match.right)) {
          throw new Error(`Could not process rule: No such file or directory (set ${e.match.right})`);
        }
      }
      const expr = o.rule.expr.map((e) => ('counter' in e ? { counter: { packets: 3, bytes: 180 } } : e));
      t.rules.push({ ...o.rule, expr, handle: this.handle++ });
    }
  }

  /** Objects in the order nft 1.0.6 lists them: table, sets, chains, rules. */
  private listing(t: FakeTable): object[] {
    const table = { table: { family: t.family, name: t.name, handle: 1 } };
    const sets = t.sets.map((s) => ({ set: { family: s.family, name: s.name, table: s.table, type: s.type, handle: s.handle, ...(s.elem ? { elem: s.elem } : {}) } }));
    const chains = t.chains.map((c) => ({ chain: c }));
    const rules = t.rules.map((r) => ({ rule: r }));
    return [table, ...sets, ...chains, ...rules];
  }
}

function ok(doc: object): NftResult {
  return { stdout: JSON.stringify(doc), stderr: '', code: 0 };
}
