/**
 * Bench probe: runs ONE measured operation of our code inside the network
 * namespace it is started in and prints one JSON line with the figures.
 * (A netlink socket only sees the namespace of the thread that opened it, so
 * kernel.bench.ts starts this with `ip netns exec NS node ns-probe.js ...`.)
 *
 * Timings are process.hrtime.bigint() around the measured call only (no
 * Node start-up, no table allocation); `t0`/`t1` are CLOCK_MONOTONIC
 * nanoseconds, comparable between processes on one host.
 *
 *   fill N [FROM]             create synthetic TCP entries FROM..FROM+N-1 (ConntrackNetlink.create)
 *   dump CAPACITY             ConntrackNetlink.dump into a fresh table of CAPACITY records
 *   dump-raw                  receive the dump datagrams only (no decode, no table)
 *   dump-decode               receive and decode (FlowDecoder), no table
 *   feed CAPACITY             NetlinkFeed.start(follow: false) until ready (worker thread)
 *   load FILE                 read a snapshot into a staging table, then ConntrackNetlink.create it
 *   follow CAPACITY           NetlinkFeed.start(follow: true); prints {"ready":...}; then
 *                             reads "finish <expected>" on stdin, waits until the table holds
 *                             the kernel's count (or a deadline), prints the result
 */
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { ConnectionTable } from '../../plugin/connection-table';
import {
  AF_INET,
  EXT_BYTES,
  L4,
  R_FAMILY,
  R_L4PROTO,
  R_ORIG_DPORT,
  R_ORIG_DST,
  R_ORIG_SPORT,
  R_ORIG_SRC,
  R_PROTO_A,
  R_PROTO_STATE,
  R_REPLY_DPORT,
  R_REPLY_DST,
  R_REPLY_SPORT,
  R_REPLY_SRC,
  R_STATUS,
  R_TIMEOUT,
  RecordFlag,
  Status,
} from '../../plugin/flow';
import { FlowRecord } from '../../plugin/flow-view';
import { readSnapshot } from '../../plugin/snapshot-reader';
import { ConntrackNetlink } from '../../adapters/conntrack/conntrack-netlink';
import { CtnetlinkSocket } from '../../adapters/conntrack/ctnetlink-socket';
import { planDump } from '../../adapters/conntrack/dump-filter';
import { DumpRunner } from '../../adapters/conntrack/dump-runner';
import { FlowDecoder } from '../../adapters/conntrack/flow-decoder';
import { NetlinkFeed } from '../../adapters/conntrack/netlink-feed';

/** Header word of the table's extension high-water mark (plugin/connection-table.ts H_EXT_HIGH_WATER). */
const H_EXT_HIGH_WATER = 5;

const now = (): bigint => process.hrtime.bigint();
const msBetween = (a: bigint, b: bigint): number => Number(b - a) / 1e6;
const perSecond = (n: number, ms: number): number => Math.round(n / (ms / 1000));

function out(o: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(o, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))}\n`);
}

/**
 * The lab's synthetic entries (test/integration/lab/bulk.ts syntheticEntries):
 * client 192.0.2.(1..250):(1024..65535) -> server 198.51.100.s:443, TCP
 * ESTABLISHED, SEEN_REPLY|ASSURED, timeout 3600 s. Entry i here is line i there.
 */
export function synthTable(n: number, from = 0): ConnectionTable {
  const t = ConnectionTable.create({ capacity: n + 16, extCapacity: 16 });
  const r = new FlowRecord();
  const PORTS = 65535 - 1024 + 1;
  for (let i = from; i < from + n; i++) {
    const host = 1 + (i % 250);
    const k = Math.floor(i / 250);
    const sport = 1024 + (k % PORTS);
    const srv = 1 + Math.floor(k / PORTS);
    r.clear();
    r.setU8(R_FAMILY, AF_INET);
    r.setU8(R_L4PROTO, L4.TCP);
    r.u8.set([192, 0, 2, host], R_ORIG_SRC);
    r.u8.set([192, 0, 2, host], R_REPLY_DST);
    r.u8.set([198, 51, 100, srv], R_ORIG_DST);
    r.u8.set([198, 51, 100, srv], R_REPLY_SRC);
    r.setU16(R_ORIG_SPORT, sport);
    r.setU16(R_ORIG_DPORT, 443);
    r.setU16(R_REPLY_SPORT, 443);
    r.setU16(R_REPLY_DPORT, sport);
    r.setU32(R_STATUS, Status.Confirmed | Status.Assured | Status.SeenReply);
    r.setU32(R_TIMEOUT, 3600);
    r.setU8(R_PROTO_STATE, 3); // ESTABLISHED
    r.setU8(R_PROTO_A, 0);
    r.setFlag(RecordFlag.HasTimeout | RecordFlag.HasProtoInfo);
    t.upsert(r);
  }
  return t;
}

/** Entries in this namespace's kernel table. */
function kernelCount(): number {
  return Number(readFileSync('/proc/sys/net/netfilter/nf_conntrack_count', 'utf8').trim());
}

function tableFacts(t: ConnectionTable): Record<string, number> {
  const exts = t.header[H_EXT_HIGH_WATER];
  // usedBytes (records and index up to the high-water mark, extensions in
  // use) where the table has it; byteLength is the address space reserved.
  const used = (t as unknown as { usedBytes?: number }).usedBytes ?? t.byteLength;
  return {
    size: t.size,
    capacity: t.capacity,
    byteLength: t.byteLength,
    usedBytes: used,
    bytesPerEntry: t.size > 0 ? used / t.size : 0,
    reservedBytesPerEntry: t.size > 0 ? t.byteLength / t.size : 0,
    extensions: exts,
    extBytes: exts * EXT_BYTES,
  };
}

function memory(): Record<string, number> {
  return { maxRssKb: process.resourceUsage().maxRSS, rssKb: Math.round(process.memoryUsage().rss / 1024) };
}

async function fill(n: number, from: number): Promise<void> {
  const t = synthTable(n, from);
  const port = new ConntrackNetlink();
  const t0 = now();
  const report = await port.create({ table: t });
  const t1 = now();
  const ms = msBetween(t0, t1);
  out({
    created: report.created,
    replaced: report.replaced,
    failures: report.failures.length,
    firstFailure: report.failures[0],
    ms,
    perSecond: perSecond(report.created + report.replaced, ms),
    t0,
    t1,
  });
}

async function dump(capacity: number): Promise<void> {
  const t = ConnectionTable.create({ capacity });
  const port = new ConntrackNetlink();
  const t0 = now();
  const stats = await port.dump({ addresses: [] }, t);
  const t1 = now();
  const ms = msBetween(t0, t1);
  out({ entries: stats.entries, ms, perSecond: perSecond(stats.entries, ms), ...tableFacts(t), ...memory() });
}

/** Dump with a sink that does less than ours: where does the time go? */
async function dumpPartial(decode: boolean): Promise<void> {
  const sock = new CtnetlinkSocket();
  const decoder = new FlowDecoder();
  const rec = new FlowRecord();
  let n = 0;
  const runner = new DumpRunner(sock, (buf, off, end) => {
    if (decode) decoder.decode(buf, off, end, rec);
    n++;
  });
  sock.handlers = {
    reply: (b, o, e, s) => void runner.reply(b, o, e, s),
    done: (s, e) => void runner.done(s, e),
    ack: (s, e) => void runner.ack(s, e),
    failure: (err) => runner.abort(err),
  };
  const t0 = now();
  await runner.run(planDump({ addresses: [] }).requests);
  const t1 = now();
  sock.close();
  const ms = msBetween(t0, t1);
  out({ entries: n, ms, perSecond: perSecond(n, ms) });
}

async function feedDump(capacity: number): Promise<void> {
  const t = ConnectionTable.create({ capacity });
  const t0 = now();
  const feed = new NetlinkFeed().start(t, { filter: { addresses: [] }, follow: false });
  const stats = await feed.ready;
  const t1 = now();
  await feed.stop();
  const ms = msBetween(t0, t1);
  out({ entries: stats.dumped, ms, perSecond: perSecond(stats.dumped, ms), feed: stats, ...tableFacts(t), ...memory() });
}

async function load(file: string): Promise<void> {
  const bytes = readFileSync(file);
  const d0 = now();
  const decoded = await readSnapshot(bytes, { maxEntries: 4_000_000 });
  const d1 = now();
  const port = new ConntrackNetlink();
  const t0 = now();
  const report = await port.create({ table: decoded.table });
  const t1 = now();
  const ms = msBetween(t0, t1);
  out({
    created: report.created,
    replaced: report.replaced,
    failures: report.failures.length,
    firstFailure: report.failures[0],
    decodeMs: msBetween(d0, d1),
    ms,
    perSecond: perSecond(report.created + report.replaced, ms),
    ...memory(),
  });
}

async function follow(capacity: number): Promise<void> {
  const t = ConnectionTable.create({ capacity });
  const warnings: string[] = [];
  const feed = new NetlinkFeed().start(t, {
    filter: { addresses: [] },
    follow: true,
    onWarning: (m) => warnings.push(m),
  });
  const ready = await feed.ready;
  // Watch the shared table from this (reader) thread: no messages to the worker.
  let lastVersion = t.version;
  let firstChange: bigint | null = null;
  let lastChange: bigint | null = null;
  let target = Infinity;
  let reached: bigint | null = null;
  const watch = setInterval(() => {
    const v = t.version;
    if (v !== lastVersion) {
      const at = now();
      firstChange ??= at;
      lastChange = at;
      lastVersion = v;
    }
    if (reached === null && t.size >= target) reached = now();
  }, 1);
  out({ ready: true, dumped: ready.dumped, kernel: kernelCount() });

  const rl = createInterface({ input: process.stdin });
  for await (const line of rl) {
    const m = /^finish (\d+) (\d+)$/.exec(line.trim());
    if (!m) continue;
    target = Number(m[1]);
    const deadline = Date.now() + Number(m[2]);
    // Caught up when the table holds what the kernel holds and nothing moved for 300 ms.
    let kernel = kernelCount();
    for (;;) {
      kernel = kernelCount();
      const quietMs = lastChange === null ? Infinity : msBetween(lastChange, now());
      if (t.size === kernel && quietMs > 300) break;
      if (Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    if (reached === null && t.size >= target) reached = now();
    clearInterval(watch);
    const stats = await feed.stop();
    out({
      stats,
      size: t.size,
      tombstones: t.tombstones,
      kernel,
      target,
      firstChange,
      lastChange,
      reached,
      warnings: warnings.slice(0, 5),
      warningCount: warnings.length,
      ...tableFacts(t),
      ...memory(),
    });
    rl.close();
    break;
  }
}

async function main(): Promise<void> {
  const [cmd, a1, a2] = process.argv.slice(2);
  switch (cmd) {
    case 'fill':
      return fill(Number(a1), Number(a2 ?? 0));
    case 'dump':
      return dump(Number(a1));
    case 'dump-raw':
      return dumpPartial(false);
    case 'dump-decode':
      return dumpPartial(true);
    case 'feed':
      return feedDump(Number(a1));
    case 'load':
      return load(a1 as string);
    case 'follow':
      return follow(Number(a1));
    default:
      throw new Error(`unknown probe command ${cmd}`);
  }
}

if (require.main === module) {
  main().then(
    () => process.exit(0),
    (err: unknown) => {
      process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exit(1);
    },
  );
}
