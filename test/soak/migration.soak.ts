// Soak (issue 9 item 6): one VM migrates back and forth between two daemons
// ROUNDS times (default 100) with churn, through the CLI path the hook uses
// (prepare-incoming, cutover, finish). After each round it samples, on both
// hosts, what would grow if something leaked: the daemon's RSS, open fds
// and threads, the nft objects in the host's ruleset, and the D-Bus objects
// ctmigrated exports. It prints a table and fails when any of them keeps
// growing past a small allowance.
//   npm run soak [-- ROUNDS]
import { strict as assert } from 'node:assert';
import { bulkLoad } from '../integration/lab/bulk';
import { ADDR, Host, MigrationLab, PEER_PORT, VM_UUID } from '../integration/lab/migration-lab';
import { reapStaleNamespaces } from '../integration/lab/netns';

const ROUNDS = Number(process.argv[2] ?? 100);
const BASE = 5_000;
const CHURN = 100;

interface Sample {
  rssMiB: number;
  fds: number;
  threads: number;
  nftLines: number;
  dbusObjects: number;
  heapMiB: number;
  externalMiB: number;
}

const METRICS = '127.0.0.1:9571';

/** One gauge from the daemon's own metrics (prom-client's process and heap figures). */
function gauge(text: string, name: string): number {
  const m = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text);
  return m ? Math.round((Number(m[1]) / 1048576) * 10) / 10 : NaN;
}

function entries(n: number, dport: number, from = 1024): string[] {
  return Array.from({ length: n }, (_, i) => `-A -t 3600 -u SEEN_REPLY,ASSURED -s ${ADDR.vm} -d 203.0.113.50 -p tcp --sport ${from + i} --dport ${dport} --state ESTABLISHED`);
}

async function sample(h: Host): Promise<Sample> {
  const pid = h.daemon?.pid;
  const status = (await h.ns.execOk('cat', [`/proc/${pid}/status`])).stdout;
  const fds = (await h.ns.execOk('ls', [`/proc/${pid}/fd`])).stdout.split('\n').filter((l) => l !== '').length;
  const nft = (await h.ns.execOk('nft', ['list', 'ruleset'])).stdout.split('\n').filter((l) => l.trim() !== '').length;
  const tree = await h.ns.execOk('busctl', [`--address=${h.bus}`, 'tree', 'org.ctmigrate1', '--list']);
  const metrics = (await h.ns.execOk(process.execPath, ['-e', `fetch('http://${METRICS}/metrics').then(async (r) => process.stdout.write(await r.text()))`])).stdout;
  return {
    heapMiB: gauge(metrics, 'ctmigrate_nodejs_heap_size_used_bytes'),
    externalMiB: gauge(metrics, 'ctmigrate_nodejs_external_memory_bytes'),
    rssMiB: Math.round((Number(/VmRSS:\s+(\d+)/.exec(status)?.[1]) / 1024) * 10) / 10,
    fds,
    threads: Number(/Threads:\s+(\d+)/.exec(status)?.[1]),
    nftLines: nft,
    dbusObjects: tree.stdout.split('\n').filter((l) => l.startsWith('/')).length,
  };
}

async function migrate(m: MigrationLab, from: Host, to: Host, round: number): Promise<void> {
  // Churn on the host that runs the VM: this round's flows open, the last round's close.
  await bulkLoad(from.ns, entries(CHURN, 9000 + (round % 2), 20_000));
  await from.ns.execOk('conntrack', ['-D', '-p', 'tcp', '--orig-port-dst', String(9000 + ((round + 1) % 2))]).catch(() => undefined);
  await m.register(from);
  await m.ctlOk(to, ['prepare-incoming', '--vm', VM_UUID, '--address', ADDR.vm, '--source', `${from.peer}:${PEER_PORT}`]);
  await m.waitSession(to, (s) => s.state === 'failed' || (s.state === 'streaming' && s.committed >= BASE), 'pre-copy', 60_000);
  await m.ctlOk(from, ['cutover', '--vm', VM_UUID]);
  const s = await m.waitSession(to, (x) => x.state === 'ready' || x.state === 'failed', 'ready', 60_000);
  assert.equal(s.state, 'ready', `round ${round}: ${s.error}`);
  await m.ctlOk(from, ['finish', '--vm', VM_UUID, '--result', 'migrated']);
  await m.ctlOk(to, ['finish', '--vm', VM_UUID, '--result', 'migrated']);
}

async function main(): Promise<void> {
  await reapStaleNamespaces();
  const m = await MigrationLab.build({ daemonArgs: ['--metrics', METRICS] });
  try {
    await bulkLoad(m.a.ns, entries(BASE, 443));
    const rows: string[] = [];
    const samples: Record<'A' | 'B', Sample[]> = { A: [], B: [] };
    const t0 = Date.now();
    for (let r = 1; r <= ROUNDS; r++) {
      const [from, to] = r % 2 === 1 ? [m.a, m.b] : [m.b, m.a];
      await migrate(m, from, to, r);
      if (r === 1 || r === 2 || r % 10 === 0) {
        for (const h of [m.a, m.b]) {
          const s = await sample(h);
          samples[h.name].push(s);
          rows.push(
            `${String(r).padStart(5)}  ${h.name}  ${String(s.rssMiB).padStart(7)}  ${String(s.heapMiB).padStart(8)}  ${String(s.externalMiB).padStart(12)}  ${String(s.fds).padStart(4)}  ${String(s.threads).padStart(7)}  ${String(s.nftLines).padStart(9)}  ${String(s.dbusObjects).padStart(13)}`,
          );
        }
        process.stderr.write(`soak: round ${r}/${ROUNDS} (${Math.round((Date.now() - t0) / 1000)} s)\n`);
      }
    }
    const vmEntries = [(await m.conntrack(m.a)).length, (await m.conntrack(m.b)).length];
    process.stdout.write(`ctmigrate soak: ${ROUNDS} migrations of one VM (${BASE} entries, ${CHURN} opened and ${CHURN} closed each round), ${Math.round((Date.now() - t0) / 1000)} s\n`);
    process.stdout.write(`round host  RSS MiB  heap MiB  external MiB   fds  threads  nft lines  D-Bus objects\n${rows.join('\n')}\n`);
    process.stdout.write(`VM entries at the end: A ${vmEntries[0]}, B ${vmEntries[1]}\n`);
    // From round 10 on (JIT and pools warm): flat means within a small allowance of the round-10 figure.
    for (const h of ['A', 'B'] as const) {
      const list = samples[h];
      const warm = list.find((_, i) => i >= 2) ?? list[0];
      const last = list[list.length - 1];
      assert.ok(last.fds <= warm.fds + 2, `${h}: fds ${warm.fds} -> ${last.fds}`);
      assert.ok(last.threads <= warm.threads + 1, `${h}: threads ${warm.threads} -> ${last.threads}`);
      assert.ok(last.nftLines <= warm.nftLines, `${h}: nft ${warm.nftLines} -> ${last.nftLines}`);
      assert.ok(last.dbusObjects <= warm.dbusObjects + 2, `${h}: D-Bus objects ${warm.dbusObjects} -> ${last.dbusObjects}`);
      assert.ok(last.rssMiB <= warm.rssMiB * 1.25 + 8, `${h}: RSS ${warm.rssMiB} -> ${last.rssMiB} MiB`);
    }
    process.stdout.write('flat: fds, threads, nft objects and D-Bus objects; RSS within 25% + 8 MiB of round 10\n');
  } finally {
    await m.close();
  }
}

main().catch((e: Error) => {
  process.stderr.write(`soak failed: ${e.stack ?? e.message}\n`);
  process.exit(1);
});
