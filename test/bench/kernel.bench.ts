/**
 * The kernel benchmark: ctmigrate's conntrack paths against the tools people
 * use today, side by side, in throw-away network namespaces.
 *
 *   node dist/test/bench/kernel.bench.js [--sizes 100000,1000000] [--quick]
 *        [--reps 3] [--cli-sample 300] [--rmem-max BYTES] [--json FILE]
 *
 * For each size N (default 100k and 1M; --quick: 10k and 100k):
 * - dump+parse into the shared table: ConntrackNetlink.dump in-process, the
 *   NetlinkFeed worker (start to ready), and the whole `ctmigratectl dump`
 *   process (binary snapshot to /dev/null), against the whole `conntrack -L`
 *   process (output to /dev/null);
 * - load into the kernel: ConntrackNetlink.create of a staged table and the
 *   whole `ctmigratectl load --input FILE` process, against conntrackd
 *   committing the same entries (`conntrackd -c`, FTFW pair in two
 *   namespaces; its source is filled with the same synthetic entries in
 *   chunks while the pair runs, and only the commit is timed) and
 *   `conntrack -I` run once per entry (a sample of --cli-sample entries);
 * - event ingest: NetlinkFeed following events while our own loader creates
 *   N entries at full speed in the same namespace; the table must end equal
 *   to the kernel's count (`conntrack -C`), overruns and repairs reported;
 *   and the follower alone: SIGSTOP it, queue a burst of events, SIGCONT,
 *   time the drain (the producer above shares the CPUs and sets the pace);
 * - table bytes per entry and the RSS of `ctmigratectl dump` holding N
 *   entries (/usr/bin/time -v).
 * Cheap sizes (<= 200k) run each measurement --reps times and report the
 * median; bigger ones once.
 *
 * Needs root, iproute2, conntrack, conntrackd and /usr/bin/time (Debian
 * package `time`). For N near or above net.netfilter.nf_conntrack_max the
 * host-wide limit and the conntrack hash size are raised and restored on
 * every exit path; every namespace, daemon and temp file goes with the Lab.
 * Addresses are documentation ranges only (192.0.2.0/24, 198.51.100.0/24,
 * 203.0.113.248/30 for the conntrackd sync link).
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { count } from '../integration/lab/conntrack-cli';
import { syntheticEntries } from '../integration/lab/bulk';
import { ConntrackdPair } from '../integration/lab/conntrackd';
import { Lab, NetNs } from '../integration/lab/netns';
import { CONNTRACK_MAX, HASHSIZE, HostTuning, readNumber, restoreStale, RMEM_MAX } from './host-tuning';
import { argWalker, fmtBytes, fmtRate, median, renderTable, Row, sayAs, sizeLabel } from './report';

const DIST = join(__dirname, '..', '..');
const PROBE = join(__dirname, 'ns-probe.js');
const CTL = join(DIST, 'adapters', 'cli', 'ctmigratectl.js');
const TIME = '/usr/bin/time';

/** Events queued while the follower is stopped (fits the feed's 32 MiB-requested socket buffer). */
const DRAIN_BURST = 30_000;

/** Entries per conntrackd replication step (well under FTFW's resend queue of 262144). */
const CD_CHUNK = 50_000;

const TARGET = {
  loadRatio: 1.5,
  loadRate: 280_000,
  dumpRate: 500_000,
  eventRate: 200_000,
  bytesPerEntry: 128,
  rssMb1M: 400,
};

interface Options {
  sizes: number[];
  reps: number;
  cliSample: number;
  json?: string;
  rmemMax?: number;
  quick: boolean;
}

function usage(): never {
  process.stderr.write(
    'usage: kernel.bench.js [--sizes N,N...] [--quick] [--reps K] [--cli-sample K] [--rmem-max BYTES] [--json FILE]\n',
  );
  process.exit(2);
}

function parseArgs(argv: string[]): Options {
  const o: Options = { sizes: [100_000, 1_000_000], reps: 3, cliSample: 300, quick: false };
  let sizesGiven = false;
  const args = argWalker(argv, usage);
  const val = args.value;
  const num = args.count;
  for (let a = args.next(); a !== undefined; a = args.next()) {
    if (a === '--sizes') {
      o.sizes = val().split(',').map(num);
      sizesGiven = true;
    } else if (a === '--quick') o.quick = true;
    else if (a === '--reps') o.reps = num(val());
    else if (a === '--cli-sample') o.cliSample = num(val());
    else if (a === '--rmem-max') o.rmemMax = num(val());
    else if (a === '--json') o.json = val();
    else if (a === '-h' || a === '--help') usage();
    else usage();
  }
  if (o.quick && !sizesGiven) o.sizes = [10_000, 100_000];
  return o;
}

const say = sayAs('bench');

// ---- child processes -------------------------------------------------------

interface Timed {
  ms: number;
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs argv to completion, wall time from spawn to exit (hrtime). stdout is
 * discarded (/dev/null) unless keepStdout.
 */
function timed(argv: string[], keepStdout = false, timeoutMs = 900_000): Promise<Timed> {
  return new Promise((resolve, reject) => {
    const [file, ...args] = argv;
    const t0 = process.hrtime.bigint();
    const child = spawn(file, args, { stdio: ['ignore', keepStdout ? 'pipe' : 'ignore', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout?.on('data', (b: Buffer) => out.push(b));
    child.stderr?.on('data', (b: Buffer) => err.push(b));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`timed out after ${timeoutMs} ms: ${argv.join(' ')}`));
    }, timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      resolve({
        ms,
        code: code ?? 128 + (signal ? 9 : 0),
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
      });
    });
  });
}

let haveTime = false;

/** argv in ns, under /usr/bin/time -v when available. */
function inNs(ns: NetNs, argv: string[]): string[] {
  return ['ip', 'netns', 'exec', ns.name, ...(haveTime ? [TIME, '-v'] : []), ...argv];
}

/** Max RSS (KiB) from /usr/bin/time -v output, or NaN. */
function maxRssKb(stderr: string): number {
  const m = /Maximum resident set size \(kbytes\): (\d+)/.exec(stderr);
  return m ? Number(m[1]) : NaN;
}

function stripTime(stderr: string): string {
  const i = stderr.indexOf('\tCommand being timed:');
  return (i >= 0 ? stderr.slice(0, i) : stderr).trim();
}

async function probe<T>(ns: NetNs, args: (string | number)[], timeoutMs = 900_000): Promise<T> {
  const r = await ns.exec(process.execPath, [PROBE, ...args.map(String)], { timeoutMs });
  const lines = r.stdout.trim().split('\n');
  if (r.code !== 0) throw new Error(`probe ${args.join(' ')} in ${ns.label} failed (${r.code}): ${r.stderr.trim() || r.stdout.trim()}`);
  return JSON.parse(lines[lines.length - 1]) as T;
}

async function flush(ns: NetNs): Promise<void> {
  await ns.execOk('conntrack', ['-F'], { timeoutMs: 300_000 });
  const left = await count(ns);
  if (left !== 0) throw new Error(`conntrack -F left ${left} entries in ${ns.label}`);
}

async function expectCount(ns: NetNs, n: number, what: string): Promise<void> {
  const c = await count(ns);
  if (c !== n) throw new Error(`${what}: ${ns.label} holds ${c} entries, expected ${n}`);
}

// ---- results ---------------------------------------------------------------

interface ProbeDump {
  entries: number;
  ms: number;
  perSecond: number;
  size: number;
  capacity: number;
  byteLength: number;
  usedBytes: number;
  bytesPerEntry: number;
  reservedBytesPerEntry: number;
  extensions: number;
  extBytes: number;
  maxRssKb: number;
}
interface ProbeWrite {
  created: number;
  replaced: number;
  failures: number;
  firstFailure?: unknown;
  ms: number;
  perSecond: number;
  decodeMs?: number;
  t0: string;
  t1: string;
}
interface ProbeFollow {
  stats: { dumped: number; events: number; overruns: number; repaired: number };
  size: number;
  tombstones: number;
  kernel: number;
  reached: string | null;
  firstChange: string | null;
  lastChange: string | null;
  warnings: string[];
  warningCount: number;
  maxRssKb: number;
}

interface ProcRun {
  ms: number;
  perSecond: number;
  maxRssKb: number;
}

export interface SizeResult {
  n: number;
  reps: number;
  fill: { perSecond: number; ms: number };
  dump: {
    cliList: ProcRun[];
    inProcess: ProbeDump[];
    feed: ProbeDump[];
    ctlDump: ProcRun[];
    rawReceive: { perSecond: number; ms: number };
    receiveDecode: { perSecond: number; ms: number };
    snapshotBytes: number;
  };
  load: {
    conntrackd: { replicateMs: number; commits: { ms: number; daemonMs: number; committed: number; perSecond: number }[] };
    inProcess: ProbeWrite[];
    ctlLoad: ProcRun[];
    cliInsert: { sample: number; ms: number; perSecond: number };
  };
  events: {
    runs: {
      loaderPerSecond: number;
      loaderMs: number;
      windowMs: number | null;
      perSecond: number;
      lagMs: number | null;
      events: number;
      overruns: number;
      repaired: number;
      tableSize: number;
      kernelCount: number;
      tombstones: number;
      noSilentLoss: boolean;
      followerMaxRssKb: number;
      warnings: string[];
    }[];
    drain: {
      burst: number;
      ms: number | null;
      perSecond: number;
      events: number;
      overruns: number;
      repaired: number;
      tableSize: number;
      kernelCount: number;
    };
  };
}

// ---- one size --------------------------------------------------------------

async function benchSize(n: number, opts: Options): Promise<SizeResult> {
  const reps = n <= 200_000 ? opts.reps : 1;
  const L = sizeLabel(n);
  const lab = new Lab();
  try {
    const [src, dst, cdsrc, cdst, cli, ev] = await Promise.all(
      ['src', 'dst', 'cd-src', 'cd-dst', 'cli', 'events'].map((l) => lab.netns(l)),
    );
    const dir = await lab.tempDir('bench');
    const snapshotFile = join(dir, `src-${n}.ctm`);

    // Fill the source with our own loader (the fastest way in).
    say(`${L}: filling the source namespace`);
    const fill = await probe<ProbeWrite>(src, ['fill', n]);
    if (fill.created !== n || fill.failures !== 0) throw new Error(`fill created ${fill.created} of ${n}: ${JSON.stringify(fill.firstFailure)}`);
    await expectCount(src, n, 'fill');
    say(`${L}: filled ${n} entries at ${fmtRate(fill.perSecond)}/s`);

    // ---- dump ----
    const cliList: ProcRun[] = [];
    const inProcess: ProbeDump[] = [];
    const feed: ProbeDump[] = [];
    const ctlDump: ProcRun[] = [];
    for (let r = 0; r < reps; r++) {
      const l = await timed(inNs(src, ['conntrack', '-L']));
      if (l.code !== 0) throw new Error(`conntrack -L failed: ${stripTime(l.stderr)}`);
      const shown = Number(/(\d+) flow entries have been shown/.exec(l.stderr)?.[1] ?? NaN);
      if (shown !== n) throw new Error(`conntrack -L showed ${shown} entries, expected ${n}`);
      cliList.push({ ms: l.ms, perSecond: Math.round(n / (l.ms / 1000)), maxRssKb: maxRssKb(l.stderr) });

      const d = await probe<ProbeDump>(src, ['dump', n]);
      if (d.entries !== n || d.size !== n) throw new Error(`dump read ${d.entries} entries (${d.size} in table), expected ${n}`);
      inProcess.push(d);

      const f = await probe<ProbeDump>(src, ['feed', n]);
      if (f.entries !== n || f.size !== n) throw new Error(`feed dumped ${f.entries} entries (${f.size} in table), expected ${n}`);
      feed.push(f);

      const c = await timed(inNs(src, [process.execPath, CTL, 'dump']));
      const text = stripTime(c.stderr);
      if (c.code !== 0) throw new Error(`ctmigratectl dump failed (${c.code}): ${text}`);
      const dumped = Number(/dumped (\d+) entries/.exec(text)?.[1] ?? NaN);
      if (dumped !== n) throw new Error(`ctmigratectl dump wrote ${dumped} entries, expected ${n}: ${text}`);
      ctlDump.push({ ms: c.ms, perSecond: Math.round(n / (c.ms / 1000)), maxRssKb: maxRssKb(c.stderr) });
      say(
        `${L}: dump rep ${r + 1}/${reps}: conntrack -L ${fmtRate(cliList[r].perSecond)}/s, in-process ${fmtRate(d.perSecond)}/s, ` +
          `feed ${fmtRate(f.perSecond)}/s, ctmigratectl ${fmtRate(ctlDump[r].perSecond)}/s`,
      );
    }
    const raw = await probe<{ ms: number; perSecond: number; entries: number }>(src, ['dump-raw']);
    const dec = await probe<{ ms: number; perSecond: number; entries: number }>(src, ['dump-decode']);
    const snap = await timed(inNs(src, [process.execPath, CTL, 'dump', '--output', snapshotFile]));
    if (snap.code !== 0) throw new Error(`ctmigratectl dump --output failed: ${stripTime(snap.stderr)}`);
    const snapshotBytes = Number(/\((\d+) bytes/.exec(snap.stderr)?.[1] ?? NaN);

    // Done with the source: free its entries (one kernel hash serves every namespace).
    await flush(src);

    // ---- conntrackd: replicate cd-src -> cd-dst, time only the commit ----
    // The pair runs while cd-src is filled chunk by chunk, so replication rides
    // on cd-src's events at a pace FTFW can recover from: a bulk send (-B) of
    // 1M entries overruns the receiver and loses more messages than the
    // resend queue (262144) can repair, and B's external cache never fills.
    say(`${L}: conntrackd pair: filling its source in chunks of ${CD_CHUNK} and replicating`);
    const pair = await ConntrackdPair.start(lab, cdsrc, cdst, { hashLimit: Math.max(2_500_000, 2 * n) });
    const rep0 = Date.now();
    for (let from = 0; from < n; from += CD_CHUNK) {
      const k = Math.min(CD_CHUNK, n - from);
      const w = await probe<ProbeWrite>(cdsrc, ['fill', k, from]);
      if (w.created !== k) throw new Error(`conntrackd source fill created ${w.created} of ${k}`);
      await pair.waitReplicated(from + k, 120_000);
    }
    const replicateMs = Date.now() - rep0;
    await expectCount(cdsrc, n, 'conntrackd source');
    const commits: SizeResult['load']['conntrackd']['commits'] = [];
    for (let r = 0; r < reps; r++) {
      if (r > 0) {
        await flush(cdst);
        await new Promise((res) => setTimeout(res, 500));
      }
      const c = await pair.commit();
      await expectCount(cdst, n, 'conntrackd -c');
      const ms = Math.max(c.ms, Number.isFinite(c.daemonMs) ? c.daemonMs : 0);
      commits.push({ ms, daemonMs: c.daemonMs, committed: c.committed, perSecond: Math.round(n / (ms / 1000)) });
      say(`${L}: conntrackd -c rep ${r + 1}/${reps}: ${Math.round(ms)} ms (${fmtRate(commits[r].perSecond)}/s; daemon says ${c.daemonMs} ms)`);
    }
    await pair.a.proc.stop();
    await pair.b.proc.stop();
    await flush(cdst);
    await flush(cdsrc);

    // ---- our load ----
    const loads: ProbeWrite[] = [];
    const ctlLoad: ProcRun[] = [];
    for (let r = 0; r < reps; r++) {
      await flush(dst);
      const w = await probe<ProbeWrite>(dst, ['load', snapshotFile]);
      if (w.created !== n || w.failures !== 0) throw new Error(`load created ${w.created} of ${n}: ${JSON.stringify(w.firstFailure)}`);
      await expectCount(dst, n, 'ConntrackNetlink.create');
      loads.push(w);
      await flush(dst);
      const c = await timed(inNs(dst, [process.execPath, CTL, 'load', '--input', snapshotFile]), true);
      if (c.code !== 0 || !c.stdout.includes(`created ${n}, replaced 0, failed 0`)) {
        throw new Error(`ctmigratectl load: exit ${c.code}: ${c.stdout.trim()} ${stripTime(c.stderr).slice(0, 400)}`);
      }
      await expectCount(dst, n, 'ctmigratectl load');
      ctlLoad.push({ ms: c.ms, perSecond: Math.round(n / (c.ms / 1000)), maxRssKb: maxRssKb(c.stderr) });
      say(`${L}: load rep ${r + 1}/${reps}: in-process ${fmtRate(w.perSecond)}/s, ctmigratectl load ${fmtRate(ctlLoad[r].perSecond)}/s`);
    }
    await flush(dst);

    // ---- conntrack -I, one process per entry (a sample) ----
    const sampleFile = join(dir, 'insert-sample.txt');
    const sample = syntheticEntries(opts.cliSample).map((l) => l.replace(/^-A /, '-I '));
    await writeFile(sampleFile, `${sample.join('\n')}\n`);
    const ins = await timed(['ip', 'netns', 'exec', cli.name, 'sh', '-c', 'xargs -L 1 conntrack < "$1" > /dev/null 2>&1', 'sh', sampleFile]);
    if (ins.code !== 0) throw new Error(`conntrack -I sample failed (${ins.code}): ${ins.stderr}`);
    await expectCount(cli, opts.cliSample, 'conntrack -I sample');
    const cliInsert = { sample: opts.cliSample, ms: ins.ms, perSecond: Math.round(opts.cliSample / (ins.ms / 1000)) };
    say(`${L}: conntrack -I sample of ${opts.cliSample}: ${Math.round(ins.ms)} ms (${cliInsert.perSecond}/s)`);

    // ---- event ingest ----
    const evRuns: SizeResult['events']['runs'] = [];
    for (let r = 0; r < reps; r++) {
      if (r > 0) await flush(ev);
      const follower = lab.spawn(ev, process.execPath, [PROBE, 'follow', String(n + (n >> 2) + 1024)]);
      await follower.waitFor(/"ready":true/, 60_000);
      const load = await probe<ProbeWrite>(ev, ['fill', n]);
      if (load.created !== n) throw new Error(`event loader created ${load.created} of ${n}`);
      follower.send(`finish ${n} ${30_000 + Math.round(n / 20)}`);
      const done = await follower.exited;
      if (done.code !== 0) throw new Error(`follower failed (${done.code}): ${done.stderr.trim()}`);
      const lines = done.stdout.trim().split('\n');
      const f = JSON.parse(lines[lines.length - 1]) as ProbeFollow;
      const kernelCount = await count(ev);
      const t0 = BigInt(load.t0);
      const windowMs = f.reached === null ? null : Number(BigInt(f.reached) - t0) / 1e6;
      const lagMs = f.reached === null ? null : Number(BigInt(f.reached) - BigInt(load.t1)) / 1e6;
      const noSilentLoss = f.size === kernelCount && f.kernel === kernelCount && kernelCount === n;
      evRuns.push({
        loaderPerSecond: load.perSecond,
        loaderMs: load.ms,
        windowMs,
        perSecond: windowMs === null ? 0 : Math.round(n / (windowMs / 1000)),
        lagMs,
        events: f.stats.events,
        overruns: f.stats.overruns,
        repaired: f.stats.repaired,
        tableSize: f.size,
        kernelCount,
        tombstones: f.tombstones,
        noSilentLoss,
        followerMaxRssKb: f.maxRssKb,
        warnings: f.warnings,
      });
      const e = evRuns[r];
      say(
        `${L}: events rep ${r + 1}/${reps}: ${fmtRate(e.perSecond)}/s (loader ${fmtRate(e.loaderPerSecond)}/s, lag ${e.lagMs === null ? '-' : Math.round(e.lagMs)} ms), ` +
          `events ${e.events}, overruns ${e.overruns}, repaired ${e.repaired}, table ${e.tableSize} vs kernel ${e.kernelCount}`,
      );
    }

    // ---- event drain: a burst queued while the follower is stopped ----
    // The producer above shares the CPUs with the follower and sets the pace;
    // this measures the follower alone: SIGSTOP it, create a burst that fits
    // the event socket's buffer, SIGCONT, time until the table holds it.
    const burst = Math.min(n, DRAIN_BURST);
    await flush(ev);
    const drainer = lab.spawn(ev, process.execPath, [PROBE, 'follow', String(burst + 1024)]);
    await drainer.waitFor(/"ready":true/, 60_000);
    process.kill(drainer.pid as number, 'SIGSTOP');
    let drain: SizeResult['events']['drain'];
    try {
      const w = await probe<ProbeWrite>(ev, ['fill', burst]);
      if (w.created !== burst) throw new Error(`drain burst created ${w.created} of ${burst}`);
    } finally {
      process.kill(drainer.pid as number, 'SIGCONT');
    }
    {
      const tCont = process.hrtime.bigint();
      drainer.send(`finish ${burst} 30000`);
      const done = await drainer.exited;
      if (done.code !== 0) throw new Error(`drain follower failed (${done.code}): ${done.stderr.trim()}`);
      const lines = done.stdout.trim().split('\n');
      const f = JSON.parse(lines[lines.length - 1]) as ProbeFollow;
      const ms = f.reached === null ? null : Number(BigInt(f.reached) - tCont) / 1e6;
      drain = {
        burst,
        ms,
        perSecond: ms === null ? 0 : Math.round(burst / (ms / 1000)),
        events: f.stats.events,
        overruns: f.stats.overruns,
        repaired: f.stats.repaired,
        tableSize: f.size,
        kernelCount: f.kernel,
      };
      say(`${L}: event drain of a queued burst of ${burst}: ${ms === null ? 'never' : `${Math.round(ms)} ms`} (${fmtRate(drain.perSecond)}/s), events ${drain.events}, overruns ${drain.overruns}`);
    }

    return {
      n,
      reps,
      fill: { perSecond: fill.perSecond, ms: fill.ms },
      dump: {
        cliList,
        inProcess,
        feed,
        ctlDump,
        rawReceive: { perSecond: raw.perSecond, ms: raw.ms },
        receiveDecode: { perSecond: dec.perSecond, ms: dec.ms },
        snapshotBytes,
      },
      load: { conntrackd: { replicateMs, commits }, inProcess: loads, ctlLoad, cliInsert },
      events: { runs: evRuns, drain },
    };
  } finally {
    say(`${L}: cleaning up the lab`);
    await lab.cleanup();
  }
}

// ---- report ----------------------------------------------------------------

const verdict = (ok: boolean): string => (ok ? 'PASS' : 'FAIL');
const ratio = (a: number, b: number): string => `${(a / b).toFixed(2)}x`;

function rows(res: SizeResult): { rows: Row[]; notes: string[] } {
  const L = sizeLabel(res.n);
  const med = (xs: number[]): number => median(xs);
  const cliL = med(res.dump.cliList.map((x) => x.perSecond));
  const dIn = med(res.dump.inProcess.map((x) => x.perSecond));
  const dFeed = med(res.dump.feed.map((x) => x.perSecond));
  const dCtl = med(res.dump.ctlDump.map((x) => x.perSecond));
  const cd = med(res.load.conntrackd.commits.map((x) => x.perSecond));
  const lIn = med(res.load.inProcess.map((x) => x.perSecond));
  const lCtl = med(res.load.ctlLoad.map((x) => x.perSecond));
  const ev = res.events.runs;
  const evRate = med(ev.map((x) => x.perSecond));
  const evLoader = med(ev.map((x) => x.loaderPerSecond));
  const evOk = ev.every((x) => x.noSilentLoss);
  const table = res.dump.inProcess[0];
  const bpe = table.bytesPerEntry;
  const rssMb = med(res.dump.ctlDump.map((x) => x.maxRssKb)) / 1024;
  const cliRssMb = med(res.dump.cliList.map((x) => x.maxRssKb)) / 1024;
  const loadOk = (x: number): boolean => x >= TARGET.loadRate && x >= TARGET.loadRatio * cd;
  const m = res.reps > 1 ? ` (median of ${res.reps})` : ' (1 run)';
  const r: Row[] = [
    { measure: `dump+parse ${L}, in-process dump (entries/s)`, ours: fmtRate(dIn), baseline: `conntrack -L ${fmtRate(cliL)}`, ratio: ratio(dIn, cliL), target: '>=500k/s', verdict: verdict(dIn >= TARGET.dumpRate) },
    { measure: `dump+parse ${L}, feed worker (entries/s)`, ours: fmtRate(dFeed), baseline: `conntrack -L ${fmtRate(cliL)}`, ratio: ratio(dFeed, cliL), target: '>=500k/s', verdict: verdict(dFeed >= TARGET.dumpRate) },
    { measure: `dump ${L}, ctmigratectl dump process`, ours: fmtRate(dCtl), baseline: `conntrack -L ${fmtRate(cliL)}`, ratio: ratio(dCtl, cliL), target: '(info)', verdict: '' },
    { measure: `load ${L}, in-process create (entries/s)`, ours: fmtRate(lIn), baseline: `conntrackd -c ${fmtRate(cd)}`, ratio: ratio(lIn, cd), target: '>=1.5x,>=280k', verdict: verdict(loadOk(lIn)) },
    { measure: `load ${L}, ctmigratectl load process`, ours: fmtRate(lCtl), baseline: `conntrackd -c ${fmtRate(cd)}`, ratio: ratio(lCtl, cd), target: '>=1.5x,>=280k', verdict: verdict(loadOk(lCtl)) },
    { measure: `load ${L}, in-process vs conntrack -I`, ours: fmtRate(lIn), baseline: `conntrack -I ${fmtRate(res.load.cliInsert.perSecond)}*`, ratio: ratio(lIn, res.load.cliInsert.perSecond), target: '(info)', verdict: '' },
    { measure: `event ingest ${L} (events/s)`, ours: fmtRate(evRate), baseline: `loader ${fmtRate(evLoader)}`, ratio: ratio(evRate, evLoader), target: '>=200k/s,no loss', verdict: verdict(evRate >= TARGET.eventRate && evOk) },
    {
      measure: `event drain ${L}, queued burst (events/s)`,
      ours: fmtRate(res.events.drain.perSecond),
      baseline: `burst of ${sizeLabel(res.events.drain.burst)}`,
      ratio: '',
      target: '>=200k/s,no loss',
      verdict: verdict(res.events.drain.perSecond >= TARGET.eventRate && res.events.drain.overruns === 0 && res.events.drain.tableSize === res.events.drain.burst),
    },
    { measure: `table bytes/entry ${L} (used)`, ours: `${bpe.toFixed(1)} B`, baseline: `record 124 B, ${table.extensions} ext`, ratio: '', target: '<=128 B', verdict: verdict(bpe <= TARGET.bytesPerEntry) },
    {
      measure: `max RSS ctmigratectl dump ${L}`,
      ours: fmtBytes(rssMb * 1024 * 1024),
      baseline: `conntrack -L ${fmtBytes(cliRssMb * 1024 * 1024)}`,
      ratio: '',
      target: res.n >= 1_000_000 ? '<=400 MB' : '(info)',
      verdict: res.n >= 1_000_000 ? verdict(rssMb <= TARGET.rssMb1M) : '',
    },
  ];
  const e = ev[Math.floor(ev.length / 2)];
  const notes = [
    `${L}${m}: dump breakdown (in-process, entries/s): receive only ${fmtRate(res.dump.rawReceive.perSecond)}, receive+decode ${fmtRate(res.dump.receiveDecode.perSecond)}, receive+decode+table ${fmtRate(dIn)}`,
    `${L}: conntrackd replicated ${res.n} entries in ${(res.load.conntrackd.replicateMs / 1000).toFixed(1)} s (source filled in chunks of ${CD_CHUNK}, replicated on its events); commit (only this is compared) ${res.load.conntrackd.commits.map((c) => `${Math.round(c.ms)} ms`).join(', ')}`,
    `${L}: in-process load excludes reading+decoding the ${fmtBytes(res.dump.snapshotBytes)} snapshot (${res.load.inProcess.map((x) => `${Math.round(x.decodeMs ?? 0)} ms`).join(', ')}); ctmigratectl load includes it and Node start-up`,
    `${L}: * conntrack -I is a sample of ${res.load.cliInsert.sample} entries (one process each, xargs in one ip netns exec): ${Math.round(res.load.cliInsert.ms)} ms`,
    `${L}: events: ${ev.map((x) => `${x.events} events, ${x.overruns} overruns, ${x.repaired} repaired, table ${x.tableSize} = kernel ${x.kernelCount}${x.noSilentLoss ? '' : ' MISMATCH'}, lag ${x.lagMs === null ? 'never caught up' : `${Math.round(x.lagMs)} ms`}, follower max RSS ${fmtBytes(x.followerMaxRssKb * 1024)}`).join('; ')}`,
    `${L}: table of capacity N: ${fmtBytes(table.usedBytes)} used (usedBytes) for ${table.size} entries, ${fmtBytes(table.byteLength)} reserved (byteLength = ${table.reservedBytesPerEntry.toFixed(1)} B/entry, untouched pages not resident); extensions in use ${table.extensions} (${fmtBytes(table.extBytes)}); dump probe max RSS ${fmtBytes(table.maxRssKb * 1024)}`,
  ];
  const dr = res.events.drain;
  notes.push(
    `${L}: event drain: follower SIGSTOPped, ${dr.burst} entries created, SIGCONT: ${dr.events} events applied in ${dr.ms === null ? 'never' : `${Math.round(dr.ms)} ms`}, ${dr.overruns} overruns, ${dr.repaired} repaired, table ${dr.tableSize} vs kernel ${dr.kernelCount} (the follower alone, no producer competing for the CPUs)`,
  );
  if (e && e.warnings.length > 0) notes.push(`${L}: feed warnings: ${e.warnings.join(' | ').slice(0, 300)}`);
  return { rows: r, notes };
}

// ---- main ------------------------------------------------------------------

async function main(): Promise<number> {
  const opts = parseArgs(process.argv.slice(2));
  if (process.getuid && process.getuid() !== 0) {
    say('needs root (network namespaces, sysctls)');
    return 1;
  }
  for (const f of [PROBE, CTL]) if (!existsSync(f)) throw new Error(`${f} missing: run npm run build first`);
  haveTime = existsSync(TIME);
  if (!haveTime) say(`${TIME} missing (apt-get install time): RSS of whole processes will not be measured`);
  restoreStale(say);
  const tuning = new HostTuning(say);
  const started = Date.now();
  const results: SizeResult[] = [];
  try {
    const biggest = Math.max(...opts.sizes);
    // Each namespace may hold nf_conntrack_max entries; leave room for a margin.
    const want = Math.max(262_144, Math.ceil((biggest * 2.5) / 65536) * 65536);
    tuning.raise(CONNTRACK_MAX, want);
    // One hash for every namespace: keep chains short while several hold N.
    if (biggest > 200_000) tuning.raise(HASHSIZE, want);
    if (opts.rmemMax) tuning.raise(RMEM_MAX, opts.rmemMax);
    const host = {
      cpus: cpus().length,
      cpu: cpus()[0]?.model ?? '?',
      memGb: Math.round(totalmem() / 2 ** 30),
      node: process.version,
      conntrackMax: readNumber(CONNTRACK_MAX),
      hashsize: readNumber(HASHSIZE),
      rmemMax: readNumber(RMEM_MAX),
    };
    say(`host: ${JSON.stringify(host)}`);
    for (const n of opts.sizes) results.push(await benchSize(n, opts));

    const all = results.map(rows);
    const text = [
      `ctmigrate kernel bench — ${host.cpus} CPU (${host.cpu}), ${host.memGb} GB, Node ${host.node}; nf_conntrack_max ${host.conntrackMax}, hashsize ${host.hashsize}, rmem_max ${host.rmemMax}`,
      `rates are entries/s; in-process = hrtime around the call in a child inside the namespace; process = wall time of the whole command; medians of ${opts.reps} runs up to 200k, 1 run above`,
      '',
      renderTable(all.flatMap((a) => a.rows)),
      '',
      'notes:',
      ...all.flatMap((a) => a.notes.map((s) => `  ${s}`)),
      `total bench time ${((Date.now() - started) / 1000).toFixed(0)} s`,
    ].join('\n');
    process.stdout.write(`${text}\n`);
    if (opts.json) {
      await writeFile(opts.json, `${JSON.stringify({ host, targets: TARGET, tuning: tuning.summary, results, rows: all.flatMap((a) => a.rows) }, null, 2)}\n`);
      say(`results written to ${opts.json}`);
    }
    return 0;
  } finally {
    tuning.restore();
  }
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    say(`failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    process.exitCode = 1;
  },
);
