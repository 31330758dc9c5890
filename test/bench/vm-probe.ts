/**
 * Migration bench probe: the VM's synthetic conntrack entries, created,
 * churned and read back through our own ctnetlink code, inside the network
 * namespace it is started in (`ip netns exec NS node vm-probe.js ...`).
 * One JSON line per result on stdout.
 *
 * The VM is 192.0.2.10. Entry i is TCP ESTABLISHED (SEEN_REPLY|ASSURED,
 * timeout 3600 s) 192.0.2.10:sport -> 203.0.113.h:dport with
 * h = 1 + i % 200 (203.0.113.248/30 stays free for the conntrackd sync link),
 * sport = 1024 + k % 64512, dport = 443 + floor(k / 64512), k = floor(i / 200):
 * distinct for any i below 2^32.
 *
 *   fill N [FROM]                create entries FROM..FROM+N-1
 *   churn N FRAC MS [ROUND]      churn the table of N entries: per step, new entries
 *                                (N, N+1, ...), changed ones (create-replace with a new
 *                                mark) and closed ones (deleted), FRAC * N of each kind
 *                                in all, spread evenly over MS (ROUND shifts the indices so
 *                                repeated rounds touch other entries); prints {"started":true},
 *                                stops early on a "stop" line on stdin; prints a summary,
 *                                then waits for an "exit" line (or stdin's end)
 *   dump-vm FILE                 dump the VM's entries; write one sorted key per line
 *                                ("sport dst dport mark") to FILE
 */
import { writeFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { parseAddress } from '../../plugin/address';
import { ConnectionTable, Scan } from '../../plugin/connection-table';
import {
  AF_INET,
  L4,
  R_FAMILY,
  R_L4PROTO,
  R_MARK,
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
import { ConntrackNetlink } from '../../adapters/conntrack/conntrack-netlink';

export const VM_ADDRESS = '192.0.2.10';
const PEERS = 200;
const PORTS = 65535 - 1024 + 1;

/** Wall-clock milliseconds with sub-ms precision (comparable with QMP event timestamps). */
export const wallMs = (): number => performance.timeOrigin + performance.now();

function out(o: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(o)}\n`);
}

/** Entry i of the VM (mark 0 unless given). */
export function setVmEntry(r: FlowRecord, i: number, mark = 0): void {
  const h = 1 + (i % PEERS);
  const k = Math.floor(i / PEERS);
  const sport = 1024 + (k % PORTS);
  const dport = 443 + Math.floor(k / PORTS);
  r.clear();
  r.setU8(R_FAMILY, AF_INET);
  r.setU8(R_L4PROTO, L4.TCP);
  r.u8.set([192, 0, 2, 10], R_ORIG_SRC);
  r.u8.set([192, 0, 2, 10], R_REPLY_DST);
  r.u8.set([203, 0, 113, h], R_ORIG_DST);
  r.u8.set([203, 0, 113, h], R_REPLY_SRC);
  r.setU16(R_ORIG_SPORT, sport);
  r.setU16(R_ORIG_DPORT, dport);
  r.setU16(R_REPLY_SPORT, dport);
  r.setU16(R_REPLY_DPORT, sport);
  r.setU32(R_STATUS, Status.Confirmed | Status.Assured | Status.SeenReply);
  r.setU32(R_TIMEOUT, 3600);
  r.setU8(R_PROTO_STATE, 3); // ESTABLISHED
  r.setU8(R_PROTO_A, 0);
  let flags = RecordFlag.HasTimeout | RecordFlag.HasProtoInfo;
  if (mark !== 0) {
    r.setU32(R_MARK, mark);
    flags |= RecordFlag.HasMark;
  }
  r.setFlag(flags);
}

function tableOf(indices: Iterable<number>, count: number, mark = 0): ConnectionTable {
  const t = ConnectionTable.create({ capacity: count + 16, extCapacity: 16 });
  const r = new FlowRecord();
  for (const i of indices) {
    setVmEntry(r, i, mark);
    t.upsert(r);
  }
  return t;
}

function* range(from: number, n: number): Iterable<number> {
  for (let i = from; i < from + n; i++) yield i;
}

async function fill(n: number, from: number): Promise<void> {
  const t = tableOf(range(from, n), n);
  const t0 = performance.now();
  const report = await new ConntrackNetlink().create({ table: t });
  const ms = performance.now() - t0;
  out({
    created: report.created,
    replaced: report.replaced,
    failures: report.failures.length,
    firstFailure: report.failures[0],
    ms,
    perSecond: Math.round((report.created + report.replaced) / (ms / 1000)),
  });
}

interface Step {
  /** Wall-clock ms when the step began and ended. */
  t0: number;
  t1: number;
  opened: number;
  changed: number;
  closed: number;
}

async function churn(n: number, frac: number, durationMs: number, round: number): Promise<void> {
  const each = Math.max(1, Math.round(n * frac));
  // Changed entries are i = j*stride, closed ones i = j*stride + stride/2: never the same.
  const stride = Math.max(2, Math.floor(n / each));
  const steps = Math.max(1, Math.min(each, Math.round(durationMs / 10)));
  const port = new ConntrackNetlink();
  let stop = false;
  const rl = createInterface({ input: process.stdin });
  rl.on('line', (l) => {
    if (l.trim() === 'stop') stop = true;
  });
  const log: Step[] = [];
  let opened = 0;
  let changed = 0;
  let closed = 0;
  out({ started: true, each, steps, stride });
  const start = performance.now();
  for (let s = 0; s < steps && !stop; s++) {
    const upTo = Math.round(((s + 1) * each) / steps);
    const k = upTo - opened; // this step's count of each kind
    const step: Step = { t0: wallMs(), t1: 0, opened: 0, changed: 0, closed: 0 };
    if (k > 0) {
      const created = await port.create({ table: tableOf(range(n + round * each + opened, k), k) });
      const changedIdx = Array.from({ length: k }, (_, j) => (changed + j) * stride + round);
      const replaced = await port.create({ table: tableOf(changedIdx, k, 0x100 + s) });
      const closedIdx = Array.from({ length: k }, (_, j) => (closed + j) * stride + (stride >> 1) + round);
      const removed = await port.remove({ table: tableOf(closedIdx, k) });
      const bad = [...created.failures, ...replaced.failures, ...removed.failures];
      if (bad.length > 0) throw new Error(`churn step ${s}: ${bad.length} kernel refusals, first ${JSON.stringify(bad[0])}`);
      step.opened = created.created;
      step.changed = replaced.replaced + replaced.created;
      step.closed = removed.deleted;
      opened += k;
      changed += k;
      closed += k;
    }
    step.t1 = wallMs();
    log.push(step);
    const due = start + ((s + 1) * durationMs) / steps;
    const wait = due - performance.now();
    if (wait > 0 && !stop) await new Promise((r) => setTimeout(r, wait));
  }
  out({ done: true, stopped: stop, opened, changed, closed, each, steps: log.length, log });
  // Stay idle until told to go: exiting (V8 tear-down, a few ms of CPU on
  // both cores) would otherwise land inside the blackout being measured.
  await new Promise<void>((resolve) => {
    rl.on('line', (l) => {
      if (l.trim() === 'exit') resolve();
    });
    rl.on('close', () => resolve());
  });
  rl.close();
}

async function dumpVm(file: string): Promise<void> {
  const t = ConnectionTable.create({ capacity: 4_000_000, extCapacity: 1024 });
  const t0 = performance.now();
  const stats = await new ConntrackNetlink().dump({ addresses: [parseAddress(VM_ADDRESS)] }, t);
  const ms = performance.now() - t0;
  const keys: string[] = [];
  const cur = t.cursor().reset(Scan.Snapshot, 0, t.version);
  const v = cur.view;
  while (cur.next()) {
    keys.push(`${v.origSport} ${v.u8At(R_ORIG_DST + 3)} ${v.origDport} ${v.mark}`);
  }
  keys.sort();
  writeFileSync(file, keys.join('\n') + '\n');
  out({ entries: stats.entries, size: t.size, ms });
}

async function main(): Promise<void> {
  const [cmd, a1, a2, a3] = process.argv.slice(2);
  switch (cmd) {
    case 'fill':
      return fill(Number(a1), Number(a2 ?? 0));
    case 'churn':
      return churn(Number(a1), Number(a2), Number(a3), Number(process.argv[6] ?? 0));
    case 'dump-vm':
      return dumpVm(a1 as string);
    default:
      throw new Error(`unknown vm-probe command ${cmd}`);
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
