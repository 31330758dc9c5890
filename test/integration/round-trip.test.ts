// Entries of every kind — made with the reference conntrack CLI, and by real
// traffic through the lab router (SNAT/masquerade, DNAT, the FTP helper with
// RELATED data flows, an FTP NAT that rewrites the PASV reply and so needs
// sequence adjustment) — go through `ctmigratectl dump` → `ctmigratectl load`
// into a second namespace. Afterwards `conntrack -L -o extended,labels` and
// `-o save` of both namespaces match line for line, apart from what the
// kernel owns (timeouts, ids, use counts). What no CLI listing shows
// (masters, seqadj) is compared through `ctmigratectl dump --format json`.
//
// The source is the lab router: it holds the traffic-made entries, and the
// CLI recipes are inserted into it too, so one table has every kind at once.

import * as assert from 'node:assert/strict';
import { join } from 'node:path';
import {
  ctl,
  ctlOk,
  dumpJson,
  flowKey,
  JsonFlow,
  outputLines,
  prepareTarget,
} from './cli-runner';
import { diff, insert, listExtended, listSave, normalize, normalizeLine, parseExtended, TableSnapshot } from './lab/conntrack-cli';
import { cliRecipes, missingFromRouter, TrafficOutcome, trafficRecipes } from './lab/entry-kinds';
import { Lab, NetNs, reapStaleNamespaces } from './lab/netns';
import { ADDR, NatTopology } from './lab/topology';

/**
 * An FTP server behind the router's DNAT (wan:21 → client:21). Its PASV
 * reply names 192,0,2,2; the kernel's FTP NAT helper rewrites that to
 * 198,51,100,1, three bytes longer, and from then on adjusts the sequence
 * numbers of the control connection (status SEQ_ADJUST, CTA_SEQ_ADJ_*).
 * The lab router's own helper rule (tcp dport 21, after DNAT) assigns "ftp".
 */
const SEQADJ_DNAT = `table ip ctm_rt_seqadj {
  chain prerouting_nat {
    type nat hook prerouting priority dstnat; policy accept;
    iifname "wan0" ip daddr ${ADDR.routerWan4} tcp dport 21 dnat to ${ADDR.client4}:21
  }
}
`;
const SEQADJ_CLIENT_PORT = 41110;

/** SYNPROXY in front of a server port (nftables wiki recipe). */
const SYNPROXY_PORT = 7200;
const SYNPROXY = `table inet ctm_synproxy {
  chain prerouting {
    type filter hook prerouting priority raw; policy accept;
    tcp dport ${SYNPROXY_PORT} tcp flags syn notrack
  }
  chain input {
    type filter hook input priority filter; policy accept;
    tcp dport ${SYNPROXY_PORT} ct state invalid,untracked synproxy mss 1460 wscale 7 timestamp sack-perm
    ct state invalid drop
  }
}
`;

/** IP_CT_TCP_FLAG_BE_LIBERAL. */
const TCP_FLAG_BE_LIBERAL = 0x08;

/** Listings with the kernel's timeouts, and the same normalised. */
interface RawTable {
  readonly extended: readonly string[];
  readonly save: readonly string[];
  readonly normalized: TableSnapshot;
}

async function rawTable(ns: NetNs): Promise<RawTable> {
  const extended = await listExtended(ns);
  const save = await listSave(ns);
  return { extended, save, normalized: { extended: normalize(extended), save: normalize(save) } };
}

function showDiff(what: string, source: readonly string[], target: readonly string[]): string {
  const { onlyA, onlyB } = diff(source, target);
  return `${what} differ\nonly in source:\n  ${onlyA.join('\n  ')}\nonly in target:\n  ${onlyB.join('\n  ')}`;
}

/** Timeout of each normalised line (first occurrence; lines are unique per table). */
function timeouts(lines: readonly string[], pick: (line: string) => number | undefined): Map<string, number> {
  const m = new Map<string, number>();
  for (const l of lines) {
    const t = pick(l);
    if (t !== undefined) m.set(normalizeLine(l), t);
  }
  return m;
}

function saveTimeout(line: string): number | undefined {
  const m = /(?:^|\s)-t (\d+)(?:\s|$)/.exec(line);
  return m ? Number(m[1]) : undefined;
}

function extendedTimeout(line: string): number | undefined {
  return parseExtended(line).timeout;
}

/**
 * Waits until no timeout in ns grows between two listings. Right after the
 * traffic, a TCP entry with data not yet acknowledged has the short
 * retransmission timeout (300 s) and jumps to 5 days when the ACK comes;
 * that would look like the copy lengthening a timeout.
 */
async function settle(ns: NetNs, deadlineMs = 5_000): Promise<void> {
  const end = Date.now() + deadlineMs;
  let prev = timeouts(await listExtended(ns), extendedTimeout);
  for (;;) {
    await new Promise((r) => setTimeout(r, 300));
    const now = timeouts(await listExtended(ns), extendedTimeout);
    const grew = [...now].filter(([l, t]) => t > (prev.get(l) ?? Infinity));
    if (grew.length === 0 || Date.now() > end) return;
    prev = now;
  }
}

describe('round trip: ctmigratectl dump → load into a second namespace', function () {
  this.timeout(120_000);
  const lab = new Lab();
  let topo: NatTopology;
  let source: NetNs;
  let dir: string;
  const traffic = new Map<string, TrafficOutcome>();

  before(async () => {
    await reapStaleNamespaces();
    topo = await NatTopology.build(lab);
    source = topo.router;
    dir = await lab.tempDir('roundtrip');
    await source.enableLabels();
    await source.nft(SEQADJ_DNAT);
    for (const recipe of cliRecipes) for (const args of recipe.inserts) await insert(source, args);
    for (const recipe of trafficRecipes) {
      const outcome = await recipe.run(topo);
      assert.deepEqual(await missingFromRouter(topo, outcome), [], `lab recipe ${recipe.name} did not make its entries`);
      traffic.set(recipe.name, outcome);
    }
    await topo.agent(topo.client, ['ftp-server', ADDR.client4, '21'], /ready/);
    await topo.agent(topo.server, ['ftp-client', ADDR.routerWan4, '21', 'PASV', 'data', String(SEQADJ_CLIENT_PORT)], /data (\d+) (\d+)/);
    await settle(source);
  });

  after(() => lab.cleanup());

  for (const format of ['binary', 'json'] as const) {
    describe(`${format} format`, () => {
      let target: NetNs;
      let sourceTable: RawTable;
      let targetTable: RawTable;
      let sourceJson: JsonFlow[];
      let targetJson: JsonFlow[];
      let loadOutput: string;

      before(async () => {
        target = await lab.netns(`rt-${format}`);
        await prepareTarget(target);
        sourceTable = await rawTable(source);
        sourceJson = await dumpJson(source);
        if (format === 'binary') {
          const file = join(dir, 'all.ctm');
          await ctlOk(source, ['dump', '--output', file]);
          loadOutput = (await ctlOk(target, ['load', '--input', file])).stdout;
        } else {
          // stdout → stdin, as a person would pipe it.
          const dump = await ctlOk(source, ['dump', '--format', 'json']);
          loadOutput = (await ctlOk(target, ['load'], { input: dump.stdout })).stdout;
        }
        targetTable = await rawTable(target);
        targetJson = await dumpJson(target);
      });

      it('creates every entry and reports it in one summary line', () => {
        assert.deepEqual(outputLines(loadOutput), [`created ${sourceTable.extended.length}, replaced 0, failed 0`]);
      });

      for (const recipe of cliRecipes) {
        it(`carries ${recipe.name}: ${recipe.note}`, () => {
          for (const l of recipe.extended) {
            assert.ok(sourceTable.normalized.extended.includes(l), `lab: source lacks ${l}`);
            assert.ok(targetTable.normalized.extended.includes(l), `-o extended,labels: target lacks\n  ${l}\n${showDiff('tables', sourceTable.normalized.extended, targetTable.normalized.extended)}`);
          }
          for (const l of recipe.save) {
            assert.ok(targetTable.normalized.save.includes(l), `-o save: target lacks\n  ${l}\n${showDiff('tables', sourceTable.normalized.save, targetTable.normalized.save)}`);
          }
        });
      }

      for (const recipe of trafficRecipes) {
        it(`carries kernel-made ${recipe.name}: ${recipe.note}`, () => {
          const outcome = traffic.get(recipe.name);
          assert.ok(outcome, 'recipe ran');
          for (const [patterns, src, dst, what] of [
            [outcome.extended, sourceTable.normalized.extended, targetTable.normalized.extended, '-o extended,labels'],
            [outcome.save, sourceTable.normalized.save, targetTable.normalized.save, '-o save'],
          ] as const) {
            for (const p of patterns) {
              const lines = src.filter((l) => p.test(l));
              assert.ok(lines.length > 0, `lab: source has no line matching ${p.source}`);
              for (const l of lines) assert.ok(dst.includes(l), `${what}: target lacks\n  ${l}\ntarget has:\n  ${dst.filter((x) => p.test(x)).join('\n  ')}`);
            }
          }
        });
      }

      it('carries the FTP control connection behind DNAT with its helper and sequence adjustment', () => {
        const isCtl = (f: JsonFlow): boolean => f.orig.sport === SEQADJ_CLIENT_PORT && f.orig.dst === ADDR.routerWan4;
        const src = sourceJson.find(isCtl);
        assert.ok(src, `lab: no control entry from port ${SEQADJ_CLIENT_PORT}`);
        assert.equal(src.helper, 'ftp');
        assert.ok(src.status.includes('SEQ_ADJUST'), `lab: the PASV rewrite set no SEQ_ADJUST: ${JSON.stringify(src)}`);
        assert.ok(src.seqadj !== undefined, `ctmigratectl dump shows no seqadj for ${JSON.stringify(src)}`);
        const dst = targetJson.find(isCtl);
        assert.ok(dst, 'target lacks the control entry');
        assert.equal(dst.helper, 'ftp');
        assert.deepEqual(dst.status, src.status);
        assert.deepEqual(dst.seqadj, src.seqadj);
      });

      it('re-creates RELATED data flows with their master (EXPECTED status, same master tuple)', () => {
        const related = sourceJson.filter((f) => f.status.includes('EXPECTED'));
        // FTP over IPv4 (PASV, SNAT), IPv6 (EPSV, masquerade), and behind DNAT.
        assert.ok(related.length >= 3, `lab: expected 3 RELATED data flows, source has ${related.length}`);
        const byKey = new Map(targetJson.map((f) => [flowKey(f), f]));
        for (const f of related) {
          assert.ok(f.master !== undefined, `ctmigratectl dump shows no master for RELATED ${JSON.stringify(f)}`);
          const t = byKey.get(flowKey(f));
          assert.ok(t, `target lacks RELATED ${flowKey(f)}`);
          assert.ok(t.status.includes('EXPECTED'), `target entry is not RELATED: ${JSON.stringify(t)}`);
          assert.deepEqual(t.master, f.master);
        }
      });

      it('leaves both listings equal line for line (all kinds at once)', () => {
        const cliEntries = cliRecipes.flatMap((r) => r.inserts).length;
        assert.ok(sourceTable.extended.length >= cliEntries + 10, `lab: only ${sourceTable.extended.length} entries in the source`);
        assert.deepEqual(targetTable.normalized.extended, sourceTable.normalized.extended, showDiff('-o extended,labels', sourceTable.normalized.extended, targetTable.normalized.extended));
        assert.deepEqual(targetTable.normalized.save, sourceTable.normalized.save, showDiff('-o save', sourceTable.normalized.save, targetTable.normalized.save));
      });

      it('keeps every field ctmigratectl itself reads, apart from timeouts and ids', () => {
        // load creates TCP entries with "be liberal" (documented in its --help):
        // window positions cannot be carried, so that flag bit may differ.
        const strip = (f: JsonFlow): string => {
          const { timeout: _t, id: _i, use: _u, counters: _c, timestamp: _s, ...kept } = f;
          const rest: Record<string, unknown> = { ...kept };
          const tcp = rest.tcp as { flags_orig: number; flags_reply: number } | undefined;
          if (tcp !== undefined) {
            rest.tcp = { ...tcp, flags_orig: tcp.flags_orig & ~TCP_FLAG_BE_LIBERAL, flags_reply: tcp.flags_reply & ~TCP_FLAG_BE_LIBERAL };
          }
          return JSON.stringify(rest);
        };
        const src = sourceJson.map(strip).sort();
        const dst = targetJson.map(strip).sort();
        assert.deepEqual(dst, src, showDiff('json dumps', src, dst));
      });

      // The kernel holds a vtag as it appears on the wire. The conntrack CLI
      // byte-swaps --orig-vtag/--reply-vtag twice on the way in and out
      // (htonl in conntrack, again in libnetfilter_conntrack), so `-o save`
      // shows the byte-swap of the kernel's value; JSON shows the kernel's.
      it('shows SCTP verification tags in JSON as the kernel holds them (conntrack -o save shows them byte-swapped)', () => {
        const swap = (x: number): number => ((x & 0xff) << 24 | (x & 0xff00) << 8 | ((x >>> 8) & 0xff00) | (x >>> 24)) >>> 0;
        for (const f of sourceJson.filter((x) => x.proto === 'sctp')) {
          const sctp = f.sctp as { vtag_orig: number; vtag_reply: number };
          const save = sourceTable.normalized.save.find((l) => l.includes(` --sport ${f.orig.sport} `) && l.includes('-p sctp'));
          assert.ok(save, `lab: no -o save line for SCTP port ${f.orig.sport}`);
          assert.ok(
            save.includes(`--orig-vtag ${swap(sctp.vtag_orig)} --reply-vtag ${swap(sctp.vtag_reply)}`),
            `ctmigratectl dump --format json shows vtags ${sctp.vtag_orig}/${sctp.vtag_reply}; conntrack: ${save}`,
          );
        }
      });

      it('never gives an entry a longer timeout than it had on the source', () => {
        for (const [what, src, dst, pick] of [
          ['-o extended', sourceTable.extended, targetTable.extended, extendedTimeout],
          ['-o save', sourceTable.save, targetTable.save, saveTimeout],
        ] as const) {
          const s = timeouts(src, pick);
          const longer: string[] = [];
          for (const [line, t] of timeouts(dst, pick)) {
            const was = s.get(line);
            if (was !== undefined && t > was) longer.push(`${t} > ${was}: ${line}`);
          }
          assert.deepEqual(longer, [], `${what}: timeouts grew`);
        }
      });
    });
  }

  describe('synproxy', () => {
    // The server answers SYNs through SYNPROXY: its entry for the client's
    // flow carries the synproxy extension (isn, its, tsoff) and sequence
    // adjustment between the proxy's and the server's own numbers.
    it('carries an entry made by SYNPROXY with its synproxy and seqadj state', async () => {
      const server = topo.server;
      await server.sysctl({ 'net.netfilter.nf_conntrack_tcp_loose': '0' });
      await server.nft(SYNPROXY);
      await topo.agent(server, ['tcp-server', ADDR.server4, String(SYNPROXY_PORT)], /ready/);
      await topo.agent(topo.client, ['tcp-client', ADDR.server4, String(SYNPROXY_PORT), '41120'], /connected/);
      const pick = (f: JsonFlow): boolean => f.orig.dport === SYNPROXY_PORT && f.protonum === 6;
      const src = (await dumpJson(server)).filter(pick);
      assert.equal(src.length, 1, `lab: server entries for port ${SYNPROXY_PORT}: ${JSON.stringify(src)}`);
      const flow = src[0] as JsonFlow;
      assert.ok(flow.synproxy !== undefined, `lab/dump: no synproxy state in ${JSON.stringify(flow)}`);
      const target = await lab.netns('rt-synproxy');
      await prepareTarget(target);
      const file = join(dir, 'synproxy.ctm');
      await ctlOk(server, ['dump', '--address', ADDR.routerWan4, '--output', file]);
      await ctlOk(target, ['load', '--input', file]);
      const dst = (await dumpJson(target)).filter(pick);
      assert.equal(dst.length, 1, 'target lacks the entry');
      assert.deepEqual((dst[0] as JsonFlow).synproxy, flow.synproxy);
      assert.deepEqual((dst[0] as JsonFlow).seqadj, flow.seqadj);
      assert.deepEqual((dst[0] as JsonFlow).status, flow.status);
    });
  });

  describe('filters', () => {
    let all: string[];
    before(async () => {
      all = normalize(await listExtended(source));
    });

    /** Source lines (normalised extended) that a filter must keep. */
    function expected(keep: (e: ReturnType<typeof parseExtended>) => boolean): string[] {
      return all.filter((l) => keep(parseExtended(l)));
    }

    const involves = (addrs: readonly string[]) => (e: ReturnType<typeof parseExtended>): boolean =>
      [e.orig.src, e.orig.dst, e.reply.src, e.reply.dst].some((a) => a !== undefined && addrs.includes(a));

    async function dumpAndLoad(label: string, args: readonly string[]): Promise<string[]> {
      const target = await lab.netns(label);
      await prepareTarget(target);
      const file = join(dir, `${label}.ctm`);
      await ctlOk(source, ['dump', ...args, '--output', file]);
      await ctlOk(target, ['load', '--input', file]);
      const listed = normalize(await listExtended(target));
      await target.destroy();
      return listed;
    }

    const cases: ReadonlyArray<{ name: string; args: string[]; keep: (e: ReturnType<typeof parseExtended>) => boolean; atLeast: number }> = [
      {
        name: '--address of the router wan (IPv4): SNAT replies, DNAT originals, the FTP flows',
        args: ['--address', ADDR.routerWan4],
        keep: involves([ADDR.routerWan4]),
        atLeast: 6,
      },
      {
        name: '--address of a NAT address only in reply tuples (IPv4)',
        args: ['--address', '198.51.100.20'],
        keep: involves(['198.51.100.20']),
        atLeast: 2,
      },
      {
        name: '--address of the client (IPv6), in uncompressed spelling',
        args: ['--address', '2001:0db8:0001:0000:0000:0000:0000:0002'],
        keep: involves([ADDR.client6]),
        atLeast: 4,
      },
      {
        name: '--address twice (IPv4 and IPv6): the union',
        args: ['--address', '192.0.2.10', '--address', '2001:db8:a::17'],
        keep: involves(['192.0.2.10', '2001:db8:a::17']),
        atLeast: 20,
      },
      {
        name: '--zone 7: entries of zone 7 only',
        args: ['--zone', '7'],
        keep: (e) => e.meta.zone === '7',
        atLeast: 1,
      },
      {
        name: '--zone 12 --address: both must hold',
        args: ['--zone', '12', '--address', '198.51.100.10'],
        keep: (e) => e.meta.zone === '12' && involves(['198.51.100.10'])(e),
        atLeast: 1,
      },
      {
        name: '--mark 0xdeadbeef: exact mark',
        args: ['--mark', '0xdeadbeef'],
        keep: (e) => e.meta.mark === String(0xdeadbeef),
        atLeast: 1,
      },
      {
        name: '--mark 0x100/0xf00: mark under a mask',
        args: ['--mark', '0x100/0xf00'],
        keep: (e) => ((Number(e.meta.mark) & 0xf00) >>> 0) === 0x100,
        atLeast: 1,
      },
    ];

    cases.forEach((c, i) => {
      it(`dumps exactly the matching entries: ${c.name}`, async () => {
        const want = expected(c.keep);
        assert.ok(want.length >= c.atLeast, `lab: only ${want.length} source entries match`);
        const got = await dumpAndLoad(`flt-${i}`, c.args);
        assert.deepEqual(got, want, showDiff(`dump ${c.args.join(' ')}`, want, got));
      });
    });

    it('dumps nothing (and succeeds) for an address no entry has', async () => {
      const r = await ctl(source, ['dump', '--format', 'json', '--address', '203.0.113.254']);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, '');
    });
  });
});
