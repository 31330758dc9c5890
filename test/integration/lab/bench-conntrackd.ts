// Baseline numbers: how fast the lab fills a table, how fast conntrackd
// replicates it, and how long `conntrackd -c` takes to commit it.
//
//   node dist/test/integration/lab/bench-conntrackd.js [N ...] [--mode events|bulk] [--fill-only]
//
// events: both daemons run while A is filled; replication rides on A's
//         conntrack events.
// bulk:   A is filled first, then the daemons start (A dumps its table) and
//         A is told to send everything (`conntrackd -B`).
// --fill-only: time conntrack -R alone (N above nf_conntrack_max needs the
//         host's limit raised first; this script never changes it).
// One JSON line per N on stdout.

import { bulkLoad, conntrackMax, syntheticEntries } from './bulk';
import { count } from './conntrack-cli';
import { ConntrackdPair } from './conntrackd';
import { Lab } from './netns';

interface Options {
  readonly sizes: number[];
  readonly mode: 'events' | 'bulk';
  readonly fillOnly: boolean;
}

function parseArgs(argv: readonly string[]): Options {
  const sizes: number[] = [];
  let mode: 'events' | 'bulk' = 'events';
  let fillOnly = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    if (a === '--mode') {
      const m = argv[++i];
      if (m !== 'events' && m !== 'bulk') throw new Error(`--mode events|bulk, not ${m}`);
      mode = m;
    } else if (a === '--fill-only') {
      fillOnly = true;
    } else if (/^\d+$/.test(a)) {
      sizes.push(Number(a));
    } else {
      throw new Error(`unknown argument ${a}`);
    }
  }
  return { sizes: sizes.length > 0 ? sizes : [10_000, 100_000], mode, fillOnly };
}

async function benchOne(n: number, opts: Options): Promise<Record<string, number | string>> {
  const lab = new Lab();
  try {
    const [a, b] = await Promise.all([lab.netns('bench-a'), lab.netns('bench-b')]);
    const max = await conntrackMax(a);
    if (n > max) throw new Error(`N=${n} exceeds nf_conntrack_max=${max}`);
    const entries = syntheticEntries(n);
    if (opts.fillOnly) {
      const fill = await bulkLoad(a, entries);
      return { n, fillMs: Math.round(fill.ms), fillPerSecond: fill.perSecond, count: await count(a) };
    }
    let pair: ConntrackdPair;
    let fillMs: number;
    let replicateMs: number;
    if (opts.mode === 'events') {
      pair = await ConntrackdPair.start(lab, a, b);
      const fill = await bulkLoad(a, entries);
      fillMs = fill.ms;
      replicateMs = fill.ms + (await pair.waitReplicated(n, 600_000));
    } else {
      fillMs = (await bulkLoad(a, entries)).ms;
      pair = await ConntrackdPair.start(lab, a, b);
      const t0 = Date.now();
      await pair.bulkSend();
      replicateMs = Date.now() - t0 + (await pair.waitReplicated(n, 600_000));
    }
    const commit = await pair.commit();
    const committedCount = await count(b);
    return {
      n,
      mode: opts.mode,
      fillMs: Math.round(fillMs),
      replicateMs: Math.round(replicateMs),
      commitMs: Math.round(commit.ms),
      commitDaemonMs: Math.round(commit.daemonMs),
      committed: commit.committed,
      tableB: committedCount,
      commitPerSecond: Math.round(n / (commit.ms / 1000)),
    };
  } finally {
    await lab.cleanup();
  }
}

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  for (const n of opts.sizes) process.stdout.write(`${JSON.stringify(await benchOne(n, opts))}\n`);
}

main().catch((e: unknown) => {
  process.stderr.write(`bench-conntrackd: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
