import 'reflect-metadata';
import assert from 'node:assert/strict';
import { DaemonMetrics } from '../../../adapters/metrics/daemon-metrics';
import { MeteredFeed } from '../../../adapters/metrics/metered-feed';
import { serveMetrics } from '../../../adapters/metrics/metrics-server';
import { ConnectionTable } from '../../../plugin/connection-table';
import { RELEASE_AFTER_ANSWER_MS } from '../../../plugin/session';
import { ConnectionFeed, Feed, FeedStats } from '../../../plugin/ports/connection-feed';
import { vmSpec, vmFilter } from '../../../plugin/vm';
import { FakeClock } from '../engine/fakes/fake-clock';
import { FakeNetwork } from '../engine/fakes/fake-peer-network';
import { BLOCK_TIMEOUT_MS, foreignFlows, Host, put, sessionOf, startHost, vm, VM_UUID, vmFlows } from '../engine/lab';

/** The value of one sample of the exposition text ("name" or "name{labels}" exactly as printed). */
function sample(text: string, series: string): number {
  for (const line of text.split('\n')) {
    if (line.startsWith(`${series} `)) return Number(line.slice(series.length + 1));
  }
  throw new Error(`no sample ${series} in:\n${text.split('\n').filter((l) => l.startsWith('ctmigrate_') && !l.includes('nodejs') && !l.includes('process')).join('\n')}`);
}

describe('metrics: what Prometheus sees of the engine', () => {
  let clock: FakeClock;
  let net: FakeNetwork;
  let a: Host;
  let b: Host;
  let ma: DaemonMetrics;
  let mb: DaemonMetrics;

  const metered = (m: DaemonMetrics) => ({ feed: (f: ConnectionFeed) => m.meterFeed(f), peers: m.meterPeers.bind(m), vmstate: m.timeVmState.bind(m) });

  beforeEach(async () => {
    clock = new FakeClock();
    net = new FakeNetwork(clock);
    ma = new DaemonMetrics();
    mb = new DaemonMetrics();
    a = await startHost(net, clock, 'A', '192.0.2.10', {}, undefined, metered(ma));
    b = await startHost(net, clock, 'B', '192.0.2.20', {}, undefined, metered(mb));
    ma.watch(a.engine);
    mb.watch(b.engine);
    put(a, vmFlows());
    put(a, foreignFlows());
    await a.engine.register(vm);
    await b.engine.register(vm);
  });

  afterEach(async () => {
    await a.engine.stop();
    await b.engine.stop();
  });

  it('counts a vmstate migration on both sides: result, entries, blocked time, Save/Load, pre-copy rate', async () => {
    const blockedAt = clock.now();
    await b.engine.prepareIncoming(vm, { source: a.peerText });
    await clock.run(0);
    let tb = await mb.text();
    assert.equal(sample(tb, 'ctmigrate_vms_blocked'), 1, 'B drops the VM traffic now');
    assert.equal(sample(tb, 'ctmigrate_sessions_active{role="destination"}'), 1);
    await clock.run(250);
    const blob = await a.vmstate.save(VM_UUID);
    await b.vmstate.load(VM_UUID, blob);
    // The session's reports follow QEMU's answer by a moment (Session.releaseSoon).
    await clock.run(RELEASE_AFTER_ANSWER_MS + 1);
    await a.engine.finish(VM_UUID, 'migrated');
    await b.engine.finish(VM_UUID, 'migrated');

    const ta = await ma.text();
    tb = await mb.text();
    const sa = sessionOf(a);
    const sb = sessionOf(b);
    assert.equal(sample(ta, 'ctmigrate_migrations_total{role="source",result="migrated"}'), 1);
    assert.equal(sample(ta, 'ctmigrate_migrations_total{role="source",result="failed"}'), 0);
    assert.equal(sample(tb, 'ctmigrate_migrations_total{role="destination",result="migrated"}'), 1);
    assert.equal(sample(ta, 'ctmigrate_entries_sent_total'), sa.sent);
    assert.ok(sa.sent >= vmFlows().length);
    assert.equal(sample(tb, 'ctmigrate_entries_received_total'), sb.received);
    assert.equal(sample(tb, 'ctmigrate_entries_imported_total'), sb.committed);
    assert.equal(sample(tb, 'ctmigrate_entries_refused_total'), 0);
    // The fake clock makes the blocked time exact: from prepare-incoming to ready.
    assert.equal(sample(tb, 'ctmigrate_vm_blocked_seconds_count'), 1);
    assert.equal(sample(tb, 'ctmigrate_vm_blocked_seconds_sum'), (sb.readyAt - blockedAt) / 1000);
    assert.equal(sample(tb, 'ctmigrate_vms_blocked'), 0);
    // The state was in before QEMU resumed the VM: it never ran blocked.
    assert.equal(sample(tb, 'ctmigrate_vm_blocked_after_resume_seconds_count'), 1);
    assert.equal(sample(tb, 'ctmigrate_vm_blocked_after_resume_seconds_sum'), 0);
    assert.equal(sample(ta, 'ctmigrate_vmstate_save_duration_seconds_count{result="ok"}'), 1);
    assert.equal(sample(tb, 'ctmigrate_vmstate_load_duration_seconds_count{result="ok"}'), 1);
    assert.equal(sample(ta, 'ctmigrate_fail_open_total'), 0);
    assert.ok(sample(ta, 'ctmigrate_state_bytes_total{role="source"}') > 0);
    assert.equal(sample(ta, 'ctmigrate_sessions_active{role="source"}'), 0);
  });

  it('labels an abort as aborted and a Load() that refuses as an error', async () => {
    await b.engine.prepareIncoming(vm, { source: a.peerText });
    await clock.run(0);
    await assert.rejects(b.vmstate.load(VM_UUID, new Uint8Array([1, 2, 3])));
    await b.engine.abort(VM_UUID);
    await clock.run(0);
    const tb = await mb.text();
    assert.equal(sample(tb, 'ctmigrate_vmstate_load_duration_seconds_count{result="error"}'), 1);
    const ended = ['migrated', 'failed', 'aborted'].map((r) => sample(tb, `ctmigrate_migrations_total{role="destination",result="${r}"}`));
    assert.equal(ended.reduce((x, y) => x + y), 1, 'one end per session');
    assert.equal(sample(tb, 'ctmigrate_vm_blocked_seconds_count'), 1, 'the rollback lifted the drop: the blocked time is observed');
  });

  it('counts a fail-open at the block timeout', async () => {
    await b.engine.prepareIncoming(vm, { source: a.peerText });
    // A stalls: nothing it sends arrives while B waits.
    await clock.run(BLOCK_TIMEOUT_MS);
    const tb = await mb.text();
    assert.equal(sample(tb, 'ctmigrate_fail_open_total'), 1);
    assert.equal(sample(tb, 'ctmigrate_vm_blocked_seconds_count'), 1);
    assert.equal(sample(tb, 'ctmigrate_vm_blocked_seconds_sum'), BLOCK_TIMEOUT_MS / 1000);
  });

  it('counts a request the source refuses (a VM it does not run)', async () => {
    const stranger = vmSpec('0e4d5c6b-7a89-4b1c-9d2e-3f4a5b6c7d8e', ['192.0.2.77']);
    await b.engine.register(stranger);
    await b.engine.prepareIncoming(stranger, { source: a.peerText }).catch(() => undefined);
    await clock.run(0);
    const ta = await ma.text();
    assert.equal(sample(ta, 'ctmigrate_peers_refused_total{stage="request"}'), 1);
    assert.equal(sample(ta, 'ctmigrate_peers_refused_total{stage="handshake"}'), 0);
    assert.equal(sample(await mb.text(), 'ctmigrate_migrations_total{role="destination",result="failed"}'), 1);
  });
});

describe('metrics: feed health and the endpoint', () => {
  /** A feed whose counts the test sets. */
  class CountingFeed implements ConnectionFeed {
    readonly stats: FeedStats = { dumped: 0, events: 0, overruns: 0, repaired: 0 };
    start(table: ConnectionTable): Feed {
      const stats = this.stats;
      return {
        table,
        ready: Promise.resolve({ ...stats }),
        stats: async () => ({ ...stats }),
        sync: async () => 0,
        reclaim: async () => 0,
        stop: async () => ({ ...stats }),
      };
    }
  }

  it('sums overruns and repairs of live and stopped feeds, and never goes back', async () => {
    const inner = new CountingFeed();
    const m = new DaemonMetrics();
    const feed = m.meterFeed(inner) as MeteredFeed;
    const table = ConnectionTable.create({ capacity: 1024 });
    const f = feed.start(table, { filter: vmFilter(vmSpec('6f1c2a3e-9b4d-4c5e-8f70-112233445566', ['192.0.2.50'])), follow: true });
    inner.stats.overruns = 2;
    inner.stats.repaired = 17;
    let t = await m.text();
    assert.equal(sample(t, 'ctmigrate_feed_overruns_total'), 2);
    assert.equal(sample(t, 'ctmigrate_feed_repaired_entries_total'), 17);
    await f.stop();
    inner.stats.overruns = 0;
    t = await m.text();
    assert.equal(sample(t, 'ctmigrate_feed_overruns_total'), 2, "a stopped feed's overruns stay counted");
  });

  it('serves GET /metrics as Prometheus text, 404 elsewhere, 405 for other methods', async () => {
    const m = new DaemonMetrics();
    const server = await serveMetrics({ host: '127.0.0.1', port: 0 }, m);
    try {
      const base = `http://127.0.0.1:${server.address.port}`;
      const r = await fetch(`${base}/metrics`);
      assert.equal(r.status, 200);
      assert.match(r.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
      const text = await r.text();
      assert.match(text, /^# TYPE ctmigrate_migrations_total counter$/m);
      assert.ok(text.split('\n').every((l) => l === '' || l.startsWith('# ') || l.startsWith('ctmigrate_')), 'every family is prefixed ctmigrate_');
      assert.equal((await fetch(`${base}/`)).status, 404);
      assert.equal((await fetch(`${base}/metrics`, { method: 'POST' })).status, 405);
    } finally {
      await server.close();
    }
  });

  it('says which address it could not bind', async () => {
    const m = new DaemonMetrics();
    const first = await serveMetrics({ host: '127.0.0.1', port: 0 }, m);
    try {
      await assert.rejects(serveMetrics({ host: '127.0.0.1', port: first.address.port }, m), (e: Error) => e.message === `cannot serve metrics on 127.0.0.1:${first.address.port}: EADDRINUSE`);
    } finally {
      await first.close();
    }
  });
});
