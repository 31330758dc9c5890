// The subset of the libnftables JSON schema (man libnftables-json) the
// blocker writes and reads. There is no npm package for it; these types follow
// what nft 1.0.6 accepts on `nft -j -f -` and prints on `nft -j list`.

/** Table families the blocker uses: inet for routed traffic, bridge for bridged. */
export type NftFamily = 'inet' | 'bridge';

/** Netfilter hooks a filter base chain can attach to (both families). */
export type NftHook = 'prerouting' | 'input' | 'forward' | 'output' | 'postrouting';

export interface NftTable {
  family: NftFamily;
  name: string;
  handle?: number;
}

export interface NftChain {
  family: NftFamily;
  table: string;
  name: string;
  handle?: number;
  /** Base chains only. */
  type?: 'filter';
  hook?: NftHook;
  /** The base chain's priority; the schema's key is `prio`, not `priority`. */
  prio?: number;
  policy?: 'accept' | 'drop';
}

/** Set element types the blocker uses. */
export type NftSetType = 'ipv4_addr' | 'ipv6_addr';

export interface NftSet {
  family: NftFamily;
  table: string;
  name: string;
  type: NftSetType;
  handle?: number;
  /** Address literals. Omitted by `nft -j list` when the set is empty. */
  elem?: string[];
}

/** `ip saddr` and friends. */
export interface NftPayloadExpr {
  payload: { protocol: 'ip' | 'ip6'; field: 'saddr' | 'daddr' };
}

/** `<left> == <right>`; a right side of "@name" is a set lookup. */
export interface NftMatchStmt {
  match: { op: '=='; left: NftPayloadExpr; right: string };
}

/** Written as null; read back with the kernel's packet and byte counts. */
export interface NftCounterStmt {
  counter: null | { packets: number; bytes: number };
}

export interface NftDropStmt {
  drop: null;
}

export type NftStatement = NftMatchStmt | NftCounterStmt | NftDropStmt;

export interface NftRule {
  family: NftFamily;
  table: string;
  chain: string;
  handle?: number;
  comment?: string;
  expr: NftStatement[];
}

/** One object of a ruleset, as `nft -j list` prints it and commands carry it. */
export type NftObject =
  | { metainfo: { version: string; json_schema_version: number; release_name?: string } }
  | { table: NftTable }
  | { chain: NftChain }
  | { set: NftSet }
  | { rule: NftRule };

/** Objects a command can carry (everything but metainfo). */
export type NftCommandObject = { table: NftTable } | { chain: NftChain } | { set: NftSet } | { rule: NftRule };

/**
 * One command of a transaction. `add` of an existing table, chain or set is
 * a no-op; `delete` of an absent one fails the whole transaction.
 */
export type NftCommand =
  | { add: NftCommandObject }
  | { delete: { table: NftTable } };

/** The document `nft -j -f -` reads: all commands are one atomic transaction. */
export interface NftTransaction {
  nftables: NftCommand[];
}

/** The document `nft -j list ...` prints. */
export interface NftListing {
  nftables: NftObject[];
}

/** Any JSON value, for what nft prints before it is checked. */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };
