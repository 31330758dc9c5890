// The built ctmigratectl/ctmigrated programs, run as a user runs them
// (`ip netns exec NS node dist/adapters/cli/ctmigratectl.js ...`), and the
// namespace preparation a load target needs. Shared by round-trip.test.ts
// and ctmigratectl-cli.test.ts.

import { join } from 'node:path';
import { conntrack } from './lab/conntrack-cli';
import { ExecOptions, ExecResult, NetNs, run } from './lab/netns';

/** dist/adapters/cli/*.js, seen from dist/test/integration/. */
export const CTMIGRATECTL = join(__dirname, '..', '..', 'adapters', 'cli', 'ctmigratectl.js');
export const CTMIGRATED = join(__dirname, '..', '..', 'adapters', 'cli', 'ctmigrated.js');

/** `ip netns exec NS node ctmigratectl.js ARGS`. */
export function ctl(ns: NetNs, args: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
  return ns.exec(process.execPath, [CTMIGRATECTL, ...args], { timeoutMs: 60_000, ...opts });
}

/** A program run outside any lab namespace (for --help/--version only). */
export function program(path: string, args: readonly string[]): Promise<ExecResult> {
  return run(process.execPath, [path, ...args], { timeoutMs: 30_000 });
}

/** Like ctl(), but fails with everything the program printed unless it exits 0. */
export async function ctlOk(ns: NetNs, args: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
  const r = await ctl(ns, args, opts);
  if (r.code !== 0) {
    throw new Error(`ctmigratectl ${args.join(' ')} in ${ns.label} exited ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  }
  return r;
}

/** One JSON line of `ctmigratectl dump --format json`, the fields tests look at. */
export interface JsonTuple {
  readonly src: string;
  readonly dst: string;
  readonly sport?: number;
  readonly dport?: number;
  readonly type?: number;
  readonly code?: number;
  readonly id?: number;
  readonly srckey?: number;
  readonly dstkey?: number;
  readonly zone?: number;
}

export interface JsonFlow {
  readonly family: string;
  readonly proto: string;
  readonly protonum: number;
  readonly state?: string | number;
  readonly timeout?: number;
  readonly orig: JsonTuple;
  readonly reply: JsonTuple;
  readonly status: readonly string[];
  readonly mark?: number;
  readonly zone?: number;
  readonly labels?: readonly number[];
  readonly helper?: string;
  readonly seqadj?: unknown;
  readonly synproxy?: unknown;
  readonly master?: unknown;
  readonly [key: string]: unknown;
}

/** `ctmigratectl dump --format json ARGS` in ns, parsed. */
export async function dumpJson(ns: NetNs, args: readonly string[] = []): Promise<JsonFlow[]> {
  const r = await ctlOk(ns, ['dump', '--format', 'json', ...args]);
  return r.stdout
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as JsonFlow);
}

/** A key naming an entry the way the kernel does: original tuple, protocol and zone. */
export function flowKey(f: JsonFlow): string {
  const o = f.orig;
  return [f.family, f.protonum, o.src, o.dst, o.sport, o.dport, o.type, o.code, o.id, o.srckey, o.dstkey, f.zone ?? 0, o.zone].join(' ');
}

/**
 * Makes a namespace able to take what a source namespace had where the
 * kernel needs a local precondition: a `ct label` user (without one, labels
 * on created entries are dropped or refused) and the FTP helper set up the
 * way the source router has it.
 */
export async function prepareTarget(ns: NetNs): Promise<void> {
  await ns.enableLabels();
  await ns.nft(`table inet ctm_target_helper {
  ct helper ftp-standard { type "ftp" protocol tcp; l3proto inet; }
  chain prerouting_helper {
    type filter hook prerouting priority filter; policy accept;
    tcp dport { 21, 2121 } ct helper set "ftp-standard"
  }
}
`);
}

/**
 * The table as the kernel holds it, for "nothing changed" checks: every
 * entry with its id (a replaced entry gets a new one), without the timeout
 * and use count, which drift on their own.
 */
export async function tableWithIds(ns: NetNs): Promise<string[]> {
  const r = await conntrack(ns, ['-L', '-o', 'extended,labels,id']);
  if (r.code !== 0) throw new Error(`conntrack -L failed: ${r.stderr}`);
  return r.stdout
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) =>
      l
        .trim()
        .split(/\s+/)
        .filter((t, i) => !(i === 4 && /^\d+$/.test(t)) && !t.startsWith('use='))
        .join(' '),
    )
    .sort();
}

/** The non-empty lines of a program's output. */
export function outputLines(text: string): string[] {
  return text.split('\n').filter((l) => l.trim() !== '');
}
