// Smoke test of the integration lab: every entry-kind recipe really produces
// the entries it promises in a kernel table, the CLI's limits are still what
// kernel-entries.md says, and conntrackd replicates and commits. Everything
// lives in namespaces this run creates; the after hook removes them all.

import * as assert from 'node:assert/strict';
import { bulkLoad, syntheticEntries } from './lab/bulk';
import { conntrack, count, diff, insert, listExtended, listSave, load, normalize, parseExtended, snapshot } from './lab/conntrack-cli';
import { ConntrackdPair } from './lab/conntrackd';
import { cliLimits, cliRecipes, missingFromRouter, trafficRecipes } from './lab/entry-kinds';
import { Lab, NetNs, reapStaleNamespaces } from './lab/netns';
import { ADDR, NatTopology } from './lab/topology';

describe('integration lab: conntrack entries in network namespaces', function () {
  this.timeout(60_000);
  const lab = new Lab();
  before(() => reapStaleNamespaces());
  after(() => lab.cleanup());

  describe('entries made with conntrack -I', () => {
    let ns: NetNs;
    let extended: string[];
    let save: string[];

    before(async () => {
      ns = await lab.netns('cli');
      await ns.enableLabels();
      for (const recipe of cliRecipes) for (const args of recipe.inserts) await insert(ns, args);
      const table = await snapshot(ns);
      extended = [...table.extended];
      save = [...table.save];
    });

    for (const recipe of cliRecipes) {
      it(`lists ${recipe.name}: ${recipe.note}`, () => {
        for (const l of recipe.extended) assert.ok(extended.includes(l), `missing from -o extended,labels: ${l}\ngot:\n${extended.join('\n')}`);
        for (const l of recipe.save) assert.ok(save.includes(l), `missing from -o save: ${l}\ngot:\n${save.join('\n')}`);
      });
    }

    it('holds exactly the recipes\' entries, nothing else', async () => {
      const expected = cliRecipes.flatMap((r) => r.inserts).length;
      assert.equal(await count(ns), expected);
      assert.deepEqual(extended, normalize(cliRecipes.flatMap((r) => r.extended)));
    });

    it('parses an extended line into tuples, flags and meta', () => {
      const e = parseExtended(extended.find((l) => l.includes('zone-reply=4')) as string);
      assert.equal(e.state, 'ESTABLISHED');
      assert.equal(e.orig.sport, '40503');
      assert.equal(e.reply['zone-reply'], '4');
      assert.deepEqual(e.flags, ['ASSURED']);
      assert.equal(e.meta.mark, '0');
    });

    it('round-trips through -o save and conntrack -R, except what -o save cannot carry', async () => {
      const copy = await lab.netns('cli-copy');
      await copy.enableLabels();
      await load(copy, await listSave(ns));
      const after = await snapshot(copy);
      const lossy = new Set(cliRecipes.filter((r) => r.saveLoses !== undefined).flatMap((r) => [...r.extended, ...r.save]));
      for (const [before, copied] of [[extended, after.extended], [save, after.save]] as const) {
        const { onlyA, onlyB } = diff(before, copied);
        assert.deepEqual(onlyA.filter((l) => !lossy.has(l)), [], 'lost in the copy');
        assert.equal(onlyB.length, onlyA.length, 'every lossy entry still has a (different) copy');
      }
      // The losses are real: each lossy recipe's extended lines are absent in the copy.
      for (const r of cliRecipes.filter((x) => x.saveLoses !== undefined)) {
        for (const l of r.extended) assert.ok(!after.extended.includes(l), `${r.name} no longer loses ${r.saveLoses}`);
      }
    });
  });

  describe('what the CLI and kernel refuse or change', () => {
    let ns: NetNs;
    before(async () => {
      ns = await lab.netns('limits');
    });

    for (const limit of cliLimits) {
      it(`${limit.name}: ${limit.why}`, async () => {
        const r = await conntrack(ns, ['-I', ...limit.insert]);
        if (limit.fails !== undefined) {
          assert.notEqual(r.code, 0, `expected failure, got: ${r.stderr}`);
          assert.match(r.stderr, limit.fails);
        } else {
          assert.equal(r.code, 0, r.stderr);
          const all = [...normalize(await listExtended(ns)), ...normalize(await listSave(ns))];
          assert.ok(all.includes(limit.lists as string), `not listed: ${limit.lists}\ngot:\n${all.join('\n')}`);
        }
      });
    }

    it('drops labels silently where no rule uses ct label', async () => {
      const bare = await lab.netns('nolabels');
      await insert(bare, ['-p', 'udp', '-s', '192.0.2.40', '-d', '198.51.100.40', '--sport', '1', '--dport', '2', '--label-add', 'l1', '-t', '60']);
      const [line] = normalize(await listExtended(bare));
      assert.equal(line, 'ipv4 2 udp 17 src=192.0.2.40 dst=198.51.100.40 sport=1 dport=2 [UNREPLIED] src=198.51.100.40 dst=192.0.2.40 sport=2 dport=1 mark=0');
    });
  });

  describe('entries the kernel makes from real traffic', () => {
    let topo: NatTopology;
    before(async () => {
      topo = await NatTopology.build(lab);
    });

    it('tracks nothing in a namespace until a rule uses conntrack', async () => {
      // The client namespace has no rules; its UDP exchange leaves no entry there.
      await topo.agent(topo.server, ['udp-echo', ADDR.server4, '7100'], /ready/);
      await topo.agent(topo.client, ['udp-client', ADDR.server4, '7100', '41200'], /replied/);
      assert.equal(await count(topo.client), 0);
      await topo.client.enableTracking();
      await topo.agent(topo.client, ['udp-client', ADDR.server4, '7100', '41201'], /replied/);
      const lines = normalize(await listExtended(topo.client));
      assert.deepEqual(lines, [
        `ipv4 2 udp 17 src=${ADDR.client4} dst=${ADDR.server4} sport=41201 dport=7100 src=${ADDR.server4} dst=${ADDR.client4} sport=7100 dport=41201 mark=0`,
      ]);
    });

    for (const recipe of trafficRecipes) {
      it(`${recipe.name}: ${recipe.note}`, async () => {
        const outcome = await recipe.run(topo);
        assert.deepEqual(await missingFromRouter(topo, outcome), []);
      });
    }
  });

  describe('conntrackd FTFW between two namespaces', () => {
    it('replicates 10k entries to the peer\'s external cache and commits them', async () => {
      const [a, b] = await Promise.all([lab.netns('ctd-a'), lab.netns('ctd-b')]);
      const pair = await ConntrackdPair.start(lab, a, b);
      const entries = [...syntheticEntries(9_000), ...syntheticEntries(1_000, { proto: 'udp', family: 'ipv6' })];
      await bulkLoad(a, entries);
      await pair.waitReplicated(entries.length, 30_000);
      assert.equal(await count(b), 0);
      const commit = await pair.commit();
      assert.equal(commit.committed, entries.length);
      assert.equal(await count(b), entries.length);
      assert.deepEqual(diff(normalize(await listSave(a)), normalize(await listSave(b))), { onlyA: [], onlyB: [] });
    });
  });
});
