// Filling a namespace's table with many entries fast. `conntrack -I` costs a
// process per entry (≈1 ms); `conntrack -R FILE` (--load-file, conntrack-tools
// ≥ 1.4.7) reads `-o save` lines in one process: ≈120k entries/s here, and
// several loaders in parallel scale with CPUs.

import { cpus } from 'node:os';
import { load } from './conntrack-cli';
import { NetNs } from './netns';

export interface SyntheticOptions {
  readonly family?: 'ipv4' | 'ipv6';
  readonly proto?: 'tcp' | 'udp';
  /** Seconds; long enough to outlive the test. */
  readonly timeout?: number;
  /** Entry zone (-w), when given. */
  readonly zone?: number;
  readonly dport?: number;
}

const HOSTS = 250;
const PORTS = 65535 - 1024 + 1;

/**
 * N `-o save` lines with distinct tuples: client hosts 192.0.2.1-250 (or
 * 2001:db8:a::1-fa) × source ports 1024-65535 × servers 198.51.100.x (or
 * 2001:db8:b::x), so up to 250 × 64512 × 250 entries. TCP ones are
 * ESTABLISHED/ASSURED, UDP ones SEEN_REPLY/ASSURED: states conntrackd syncs.
 */
export function syntheticEntries(n: number, opts: SyntheticOptions = {}): string[] {
  const family = opts.family ?? 'ipv4';
  const proto = opts.proto ?? 'tcp';
  const timeout = opts.timeout ?? 3600;
  const dport = opts.dport ?? 443;
  if (n > HOSTS * PORTS * HOSTS) throw new Error(`at most ${HOSTS * PORTS * HOSTS} synthetic entries`);
  const client = (h: number): string => (family === 'ipv4' ? `192.0.2.${h}` : `2001:db8:a::${h.toString(16)}`);
  const server = (h: number): string => (family === 'ipv4' ? `198.51.100.${h}` : `2001:db8:b::${h.toString(16)}`);
  const zone = opts.zone === undefined ? '' : ` -w ${opts.zone}`;
  const tail = proto === 'tcp' ? ' --state ESTABLISHED' : '';
  const out = new Array<string>(n);
  for (let i = 0; i < n; i++) {
    const host = 1 + (i % HOSTS);
    const r = Math.floor(i / HOSTS);
    const sport = 1024 + (r % PORTS);
    const srv = 1 + Math.floor(r / PORTS);
    out[i] = `-A -t ${timeout} -u SEEN_REPLY,ASSURED${zone} -s ${client(host)} -d ${server(srv)} -p ${proto} --sport ${sport} --dport ${dport}${tail}`;
  }
  return out;
}

/**
 * The per-namespace entry limit. nf_conntrack_max is host-wide and read-only
 * inside a namespace (each namespace may hold up to that many).
 */
export async function conntrackMax(ns: NetNs): Promise<number> {
  const r = await ns.execOk('cat', ['/proc/sys/net/netfilter/nf_conntrack_max']);
  return Number(r.stdout.trim());
}

export interface BulkLoadResult {
  readonly entries: number;
  readonly ms: number;
  readonly perSecond: number;
}

/**
 * Loads `-o save` lines with `conntrack -R -`, split over `parallel` loader
 * processes (default: one per CPU). Rejects, naming the limit, when the lines
 * cannot fit under nf_conntrack_max.
 */
export async function bulkLoad(ns: NetNs, saveLines: readonly string[], parallel = cpus().length): Promise<BulkLoadResult> {
  const max = await conntrackMax(ns);
  if (saveLines.length > max) {
    throw new Error(
      `${saveLines.length} entries exceed nf_conntrack_max=${max} (host-wide; raise it on the host with sysctl -w net.netfilter.nf_conntrack_max=N)`,
    );
  }
  const k = Math.max(1, Math.min(parallel, Math.ceil(saveLines.length / 10_000)));
  const size = Math.ceil(saveLines.length / k);
  const chunks = Array.from({ length: k }, (_, i) => saveLines.slice(i * size, (i + 1) * size)).filter((c) => c.length > 0);
  const t0 = process.hrtime.bigint();
  await Promise.all(chunks.map((c) => load(ns, c, { timeoutMs: 600_000 })));
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  return { entries: saveLines.length, ms, perSecond: Math.round(saveLines.length / (ms / 1000)) };
}
