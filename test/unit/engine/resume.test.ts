import 'reflect-metadata';
import assert from 'node:assert/strict';
import { MessageKind } from '../../../plugin/peer-protocol';
import { FakeClock } from './fakes/fake-clock';
import { FakeNetwork } from './fakes/fake-peer-network';
import { BLOCK_TIMEOUT_MS, CHANGE_INTERVAL_MS, Host, hostPair, Pair, sessionOf, stopPair, tcp, udp, vm, VM_UUID, VM_V4, vmFlows, vmOnly } from './lab';

describe('migration engine: a partition during pre-copy resumes from the last acknowledged version', () => {
  let pair: Pair;
  let clock: FakeClock;
  let net: FakeNetwork;
  let a: Host;
  let b: Host;

  beforeEach(async () => {
    pair = await hostPair();
    ({ clock, net, a, b } = pair);
  });

  afterEach(() => stopPair(pair));

  /** Snapshot chunks A sent on any connection after connection `from`. */
  const snapshotChunksAfter = (from: number): number =>
    net.pairs
      .slice(from)
      .flatMap(([, listener]) => listener.sent)
      .filter((m) => m.kind === MessageKind.SnapshotChunk).length;

  it('B keeps the drop, redials, and A ships only the changes since (deletions included); B ends exact', async () => {
    await b.engine.prepareIncoming(vm, { source: a.peerText });
    await clock.run(CHANGE_INTERVAL_MS * 3);
    assert.equal(sessionOf(b).state, 'streaming');
    const pairsBefore = net.pairs.length;
    const acked = sessionOf(b).version;

    net.partition('192.0.2.10', '192.0.2.20');
    // Churn while the link is down: a new flow, an update, a deletion.
    a.kernel.put(tcp('198.51.100.9', 40400, VM_V4, 22));
    a.kernel.put(tcp('198.51.100.9', 40001, VM_V4, 22, { timeout: 9 }));
    a.kernel.delete(udp(VM_V4, 5353, '198.51.100.53', 53));
    await clock.run(3000);
    assert.ok(b.blocker.isBlocked(VM_UUID), 'B keeps the VM blocked while the link is down');
    assert.equal(sessionOf(b).state, 'streaming');
    assert.equal(sessionOf(a).state, 'streaming', 'A waits for the resume');

    net.heal();
    await clock.run(1000);
    await clock.run(CHANGE_INTERVAL_MS * 3);
    assert.deepEqual(b.kernel.texts(vmOnly), a.kernel.texts(vmOnly), 'after the resume B holds what A holds, the deletion too');
    assert.equal(snapshotChunksAfter(pairsBefore), 0, 'no new snapshot after the resume');
    const offers = net.pairs.slice(pairsBefore).flatMap(([, l]) => l.sent).filter((m) => m.kind === MessageKind.Offer);
    assert.equal(offers.length, 1);
    assert.equal(offers[0]?.kind === MessageKind.Offer ? offers[0].resumeFrom : -1, acked, 'the resume starts at the version B had acknowledged');
    assert.ok(b.log.at('info').includes('session resumed'));

    await b.vmstate.load(VM_UUID, await a.vmstate.save(VM_UUID));
    assert.equal(sessionOf(b).state, 'ready');
    assert.ok(!b.blocker.isBlocked(VM_UUID));
    assert.deepEqual(b.kernel.texts(vmOnly), a.kernel.texts(vmOnly));
  });

  it('a link down past the block timeout fails both sessions cleanly: nothing imported left on B, no drop, A keeps its entries', async () => {
    await b.engine.prepareIncoming(vm, { source: a.peerText });
    await clock.run(CHANGE_INTERVAL_MS * 3);
    net.partition('192.0.2.10', '192.0.2.20');
    await clock.run(BLOCK_TIMEOUT_MS + 2000);
    const bs = sessionOf(b);
    assert.equal(bs.state, 'failed');
    assert.match(bs.error, /not resumed within 30 s/);
    assert.ok(!b.blocker.isBlocked(VM_UUID));
    assert.deepEqual(b.kernel.texts(vmOnly), []);
    await clock.run(10_000);
    assert.equal(sessionOf(a).state, 'failed');
    assert.match(sessionOf(a).error, /not resumed within/);
    assert.equal(a.kernel.texts(vmOnly).length, vmFlows().length);
  });

  it('a resume from another host than the session was with is refused', async () => {
    await b.engine.prepareIncoming(vm, { source: a.peerText });
    await clock.run(CHANGE_INTERVAL_MS * 3);
    const id = sessionOf(a).id;
    const stranger = net.dial('192.0.2.99', a.address, 1);
    await stranger.send({ kind: MessageKind.Resume, sessionId: id, vm: VM_UUID, lastVersion: 1 });
    const answer = await stranger.receive(1000);
    assert.equal(answer.kind, MessageKind.Error);
    assert.match(answer.kind === MessageKind.Error ? answer.text : '', /belongs to 192\.0\.2\.20/);
    assert.equal(sessionOf(a).state, 'streaming', "the session with B goes on");
  });
});
