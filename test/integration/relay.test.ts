// Migration through a relay (issue 10): three hosts in namespaces, the
// direct peer path between A and B cut (lab/relay-lab.ts).

import { strict as assert } from 'node:assert';
import { bulkLoad } from './lab/bulk';
import { ADDR, PEER_PORT, VM_UUID } from './lab/migration-lab';
import { reapStaleNamespaces } from './lab/netns';
import { RELAY, RelayLab, relayLab } from './lab/relay-lab';
import { setTimeout as sleep } from 'node:timers/promises';

const say = (line: string): void => {
  if (process.env.CTMIGRATE_LAB_VERBOSE) process.stderr.write(`      ${line}\n`);
};

describe('migration through a relay (ctmigrated --relay, --via; direct peer path cut)', function () {
  this.timeout(180_000);
  let lab: RelayLab | undefined;

  before(async function () {
    if (process.getuid?.() !== 0) this.skip();
    await reapStaleNamespaces();
  });

  afterEach(async () => {
    await lab?.m.close();
    lab = undefined;
  });

  it('a migration with busy TCP flows goes A -> relay -> B and keeps every flow; status shows the route', async () => {
    lab = await relayLab();
    const { m } = lab;
    // The direct path really is cut.
    const direct = await m.b.ns.exec('timeout', ['2', 'bash', '-c', `exec 3<>/dev/tcp/${ADDR.peerA}/${PEER_PORT}`], { timeoutMs: 5000 });
    assert.notEqual(direct.code, 0, 'B reaches A directly on the peer port');
    const out = await m.migrate({ mode: 'vmstate', flows: 100, churn: 10, progress: say });
    say(`relay: ${out.flows.kept}/100 flows kept, longest stall ${out.flows.maxStallMs} ms, blackout ${out.blackoutMs} ms, ${out.destination?.received} entries carried`);
    assert.equal(out.flows.broken, 0, JSON.stringify(out.flows.reasons));
    assert.equal(out.flows.kept, 100);
    // Typically ~300 ms, as without a relay; one segment lost to a retransmit timeout reads ~1.1 s (seen once in 4 runs on 2 CPUs).
    assert.ok(out.flows.maxStallMs < 1500, `a flow stalled ${out.flows.maxStallMs} ms`);
    assert.equal(out.destination?.route, `via ${RELAY.onB}:${RELAY.port}`);
    assert.equal(out.source?.route, `via ${RELAY.onA}:${RELAY.port}`);
    assert.equal(out.destination?.state, 'ready');
    assert.equal(out.entriesA, 0);
    assert.ok(out.entriesB >= 100);
    const text = (await m.ctlOk(m.b, ['status'])).stdout;
    assert.match(text, new RegExp(`via ${RELAY.onB}:${RELAY.port}`));
  });

  it('killing the relay mid-pre-copy rolls both hosts back; with the relay down prepare-incoming fails clearly and leaves nothing', async () => {
    // A short block timeout: B tries to resume through the dead relay until it passes.
    lab = await relayLab(['--block-timeout', '5']);
    const { m } = lab;
    const N = 120_000;
    const lines = Array.from({ length: N }, (_, i) => `-A -t 3600 -u SEEN_REPLY,ASSURED -s ${ADDR.vm} -d 198.51.100.${10 + Math.floor(i / 60_000)} -p tcp --sport ${1024 + (i % 60_000)} --dport 443 --state ESTABLISHED`);
    await bulkLoad(m.a.ns, lines);
    await m.register(m.a);
    await m.prepareIncoming();
    const deadline = Date.now() + 30_000;
    for (;;) {
      const s = await m.session(m.b);
      if (s && s.committed > 0) break;
      if (Date.now() > deadline) throw new Error(`B never started importing: ${JSON.stringify(s)}`);
      await sleep(20);
    }
    lab.relay.killNow();
    say('relay killed (SIGKILL) while B imports');
    const b = await m.waitSession(m.b, (x) => x.state === 'failed' && !x.blocked, 'failed on B', 30_000);
    say(`B: ${b.error}`);
    const until = Date.now() + 10_000;
    while ((await m.conntrack(m.b)).length > 0 && Date.now() < until) await sleep(200);
    assert.equal((await m.conntrack(m.b)).length, 0, 'B removed what it imported');
    assert.ok(!(await m.nftTables(m.b)).includes('table inet ctmigrate'), 'no drop left on B');
    await m.waitSession(m.a, (x) => x.state === 'failed', 'failed on A', 30_000);
    assert.equal((await m.conntrack(m.a)).length, N, 'A keeps every entry');

    const r = await m.ctl(m.b, ['prepare-incoming', '--vm', VM_UUID, '--address', ADDR.vm]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, new RegExp(`via relay ${RELAY.onB}:${RELAY.port}: connect ECONNREFUSED`), r.stderr);
    assert.match(r.stderr, /the drop was lifted, nothing imported/);
    assert.ok(!(await m.nftTables(m.b)).includes('table inet ctmigrate'));
    assert.equal((await m.conntrack(m.b)).length, 0);
  });

  it('a target the relay does not allow is refused, and prepare-incoming says so', async () => {
    lab = await relayLab();
    const { m } = lab;
    await m.register(m.a);
    const r = await m.ctl(m.b, ['prepare-incoming', '--vm', VM_UUID, '--address', ADDR.vm, '--source', '198.51.100.9:7471']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /relay 203\.0\.113\.25:7472 closed the connection to 198\.51\.100\.9:7471 before any reply \(the target is not among its --relay-allow targets/);
    assert.match(r.stderr, /the drop was lifted, nothing imported/);
    assert.ok(!(await m.nftTables(m.b)).includes('table inet ctmigrate'));
    await sleep(200);
    assert.match(lab.relay.stderr, /refused .*: target 198\.51\.100\.9:7471 is not allowed/);
  });
});
