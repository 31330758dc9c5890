// The reference `conntrack` CLI (conntrack-tools 1.4.7) as the oracle for
// integration tests: list, insert, load, count, and normalise listings so
// that two namespaces' tables compare line for line.
//
// No single output format carries everything (see kernel-entries.md):
//   -o extended,labels  tuples, proto state, [UNREPLIED]/[ASSURED], mark,
//                       zone / zone-orig / zone-reply, helper, labels;
//                       NOT NAT (a NAT'd entry looks like any entry whose
//                       reply tuple differs), FIXED_TIMEOUT, EXPECTED.
//   -o save             status bits (EXPECTED, FIXED_TIMEOUT, ...), NAT as
//                       -n/-g (SNAT/DNAT) vs plain -r/-q, zones, vtags;
//                       NOT mark, labels, helper.
// Neither shows an entry's master. snapshot() takes both.

import { CommandError, ExecOptions, ExecResult, NetNs } from './netns';

/** Runs `conntrack ARGS` in ns with the lab's label map visible. */
export function conntrack(ns: NetNs, args: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
  return ns.execWithEtc('conntrack', args, opts);
}

async function conntrackOk(ns: NetNs, args: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
  const r = await conntrack(ns, args, opts);
  if (r.code !== 0) throw new CommandError(['ip', 'netns', 'exec', ns.name, 'conntrack', ...args], r);
  return r;
}

function lines(text: string): string[] {
  return text.split('\n').filter((l) => l.trim() !== '');
}

/**
 * `conntrack -L -o extended,labels`: every entry of both families (1.4.7
 * dumps IPv4 and IPv6 unless -f is given). Extra args filter (e.g. ['-w', '7']).
 */
export async function listExtended(ns: NetNs, filter: readonly string[] = []): Promise<string[]> {
  return lines((await conntrackOk(ns, ['-L', '-o', 'extended,labels', ...filter])).stdout);
}

/** `conntrack -L -o save`: one `-A -t TIMEOUT ...` command line per entry. */
export async function listSave(ns: NetNs, filter: readonly string[] = []): Promise<string[]> {
  return lines((await conntrackOk(ns, ['-L', '-o', 'save', ...filter])).stdout);
}

/**
 * `conntrack -L expect` for IPv4 and IPv6 (unlike -L for entries, the
 * expectation dump defaults to IPv4 only).
 */
export async function listExpect(ns: NetNs): Promise<string[]> {
  const v4 = await conntrackOk(ns, ['-L', 'expect', '-f', 'ipv4']);
  const v6 = await conntrackOk(ns, ['-L', 'expect', '-f', 'ipv6']);
  return [...lines(v4.stdout), ...lines(v6.stdout)];
}

/** `conntrack -I ARGS`: creates one entry; rejects with the CLI's reason. */
export async function insert(ns: NetNs, args: readonly string[]): Promise<void> {
  await conntrackOk(ns, ['-I', ...args]);
}

/**
 * `conntrack -R -`: one process for many entries (≈100k/s here). Lines are
 * `-o save` format (`-A ...` or `-I ...`). The CLI stops at the first line
 * the kernel refuses and exits 1; lines before it stay created.
 */
export async function load(ns: NetNs, saveLines: readonly string[], opts: ExecOptions = {}): Promise<void> {
  // `-R -` opens /dev/stdin, which fails (ENXIO) on the socketpair Node gives
  // a child as stdin: cat turns it into a real pipe.
  const input = `${saveLines.join('\n')}\n`;
  const r = await ns.execWithEtc('sh', ['-c', 'cat | conntrack -R -'], { timeoutMs: 120_000, ...opts, input });
  if (r.code !== 0) throw new CommandError(['ip', 'netns', 'exec', ns.name, 'conntrack', '-R', '-'], r);
}

/** `conntrack -C`: entries in the namespace's table. */
export async function count(ns: NetNs): Promise<number> {
  const r = await conntrackOk(ns, ['-C']);
  const n = Number(r.stdout.trim());
  if (!Number.isInteger(n)) throw new Error(`conntrack -C printed "${r.stdout.trim()}"`);
  return n;
}

/** `conntrack -F` (entries) and `conntrack -F expect`. */
export async function flush(ns: NetNs): Promise<void> {
  await conntrackOk(ns, ['-F']);
  await conntrackOk(ns, ['-F', 'expect']);
}

// Fields the kernel owns or that drift with time; an import cannot set them,
// so they are never part of a comparison.
// `id=` is also ICMP's echo id inside a tuple: only the one after mark= (the
// entry's id, from -o id) is the kernel's.
const KERNEL_OWNED_FIELD = /^(use|packets|bytes|delta-time)=/;
const ENTRY_ID = /^id=/;
const KERNEL_OWNED_FLAG = /^\[(OFFLOAD|HW_OFFLOAD)\]$/;
const TIMESTAMP = /\s*\[(start|stop)=[^\]]*\]/g;

/**
 * One listing line without what the kernel owns: the timeout, use count,
 * id, counters, timestamps, offload flags. Works on `-o extended[,...]`
 * lines and on `-o save` lines (drops `-t N`). Other lines pass unchanged.
 */
export function normalizeLine(line: string): string {
  const tokens = line.replace(TIMESTAMP, '').trim().split(/\s+/);
  if (tokens[0] === '-A' || tokens[0] === '-I') {
    const out: string[] = [];
    for (let i = 0; i < tokens.length; i++) {
      if ((tokens[i] === '-t' || tokens[i] === '--timeout') && i + 1 < tokens.length) {
        i++;
        continue;
      }
      out.push(tokens[i] as string);
    }
    out[0] = '-A';
    return out.join(' ');
  }
  if (tokens[0] === 'ipv4' || tokens[0] === 'ipv6') {
    // "ipv4 2 tcp 6 TIMEOUT ...": the fifth token is the remaining lifetime
    // (numeric; absent once normalised, which keeps this idempotent).
    const markAt = tokens.findIndex((t) => t.startsWith('mark='));
    const kept = tokens.filter(
      (t, i) =>
        !(i === 4 && /^\d+$/.test(t)) &&
        !KERNEL_OWNED_FIELD.test(t) &&
        !KERNEL_OWNED_FLAG.test(t) &&
        !(markAt >= 0 && i > markAt && ENTRY_ID.test(t)),
    );
    return kept.join(' ');
  }
  return line.trim();
}

/** normalizeLine() over a listing, sorted, so tables compare with deepEqual. */
export function normalize(listing: readonly string[]): string[] {
  return listing.map(normalizeLine).sort();
}

/** A table as both listings, normalised: what round-trip tests compare. */
export interface TableSnapshot {
  readonly extended: readonly string[];
  readonly save: readonly string[];
}

export async function snapshot(ns: NetNs): Promise<TableSnapshot> {
  return { extended: normalize(await listExtended(ns)), save: normalize(await listSave(ns)) };
}

/** Lines only in a, lines only in b (multiset difference), for readable failures. */
export function diff(a: readonly string[], b: readonly string[]): { onlyA: string[]; onlyB: string[] } {
  const left = new Map<string, number>();
  for (const l of a) left.set(l, (left.get(l) ?? 0) + 1);
  const onlyB: string[] = [];
  for (const l of b) {
    const n = left.get(l) ?? 0;
    if (n > 0) left.set(l, n - 1);
    else onlyB.push(l);
  }
  const onlyA: string[] = [];
  for (const [l, n] of left) for (let i = 0; i < n; i++) onlyA.push(l);
  return { onlyA, onlyB };
}

/** One `-o extended` line split into its parts, for targeted assertions. */
export interface ExtendedEntry {
  readonly family: 'ipv4' | 'ipv6';
  readonly proto: string;
  readonly protonum: number;
  /** Seconds left; undefined on a normalised line. */
  readonly timeout: number | undefined;
  /** TCP/SCTP/DCCP state, when the protocol has one. */
  readonly state: string | undefined;
  readonly orig: Readonly<Record<string, string>>;
  readonly reply: Readonly<Record<string, string>>;
  /** [UNREPLIED], [ASSURED], ... without brackets. */
  readonly flags: readonly string[];
  /** mark, zone, helper, labels, use, id, secctx ... */
  readonly meta: Readonly<Record<string, string>>;
}

// Keys that belong to a tuple; anything else after the reply tuple is meta.
const TUPLE_KEYS = new Set([
  'src', 'dst', 'sport', 'dport', 'type', 'code', 'id', 'srckey', 'dstkey',
  'packets', 'bytes', 'zone-orig', 'zone-reply',
]);

export function parseExtended(line: string): ExtendedEntry {
  const tokens = line.replace(TIMESTAMP, '').trim().split(/\s+/);
  const [family, , proto, protonum, timeout] = tokens;
  if ((family !== 'ipv4' && family !== 'ipv6') || proto === undefined) {
    throw new Error(`not a conntrack -o extended line: ${line}`);
  }
  const hasTimeout = timeout !== undefined && /^\d+$/.test(timeout);
  let i = hasTimeout ? 5 : 4;
  let state: string | undefined;
  if (tokens[i] !== undefined && !(tokens[i] as string).includes('=') && !(tokens[i] as string).startsWith('[')) {
    state = tokens[i];
    i++;
  }
  const orig: Record<string, string> = {};
  const reply: Record<string, string> = {};
  const meta: Record<string, string> = {};
  const flags: string[] = [];
  let part: 'orig' | 'reply' | 'meta' = 'orig';
  let srcSeen = 0;
  for (; i < tokens.length; i++) {
    const t = tokens[i] as string;
    if (t.startsWith('[') && t.endsWith(']')) {
      flags.push(t.slice(1, -1));
      continue;
    }
    const eq = t.indexOf('=');
    if (eq < 0) continue;
    const key = t.slice(0, eq);
    const value = t.slice(eq + 1);
    if (key === 'src' && part !== 'meta') {
      srcSeen++;
      part = srcSeen === 1 ? 'orig' : 'reply';
    }
    if (part === 'reply' && !TUPLE_KEYS.has(key)) part = 'meta';
    if (part === 'orig' && srcSeen >= 1 && !TUPLE_KEYS.has(key)) part = 'meta';
    ({ orig, reply, meta })[part][key] = value;
  }
  return {
    family,
    proto,
    protonum: Number(protonum),
    timeout: hasTimeout ? Number(timeout) : undefined,
    state,
    orig,
    reply,
    flags,
    meta,
  };
}
