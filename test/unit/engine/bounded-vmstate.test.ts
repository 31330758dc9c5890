import 'reflect-metadata';
import assert from 'node:assert/strict';
import { MessageKind } from '../../../plugin/peer-protocol';
import { SAVE_BOUND_MS } from '../../../plugin/source-migration';
import { decodeReference } from '../../../plugin/vmstate-reference';
import { FakeClock } from './fakes/fake-clock';
import { FakeNetwork } from './fakes/fake-peer-network';
import { Host, hostPair, Pair, sessionOf, stopPair, tcp, vm, VM_UUID, VM_V4, vmOnly } from './lab';

describe('migration engine: QEMU never waits long with the VM paused (bounded Save() and Load())', () => {
  let pair: Pair;
  let clock: FakeClock;
  let net: FakeNetwork;
  let a: Host;
  let b: Host;

  beforeEach(async () => {
    pair = await hostPair({ registerOnB: true });
    ({ clock, net, a, b } = pair);
  });

  afterEach(() => stopPair(pair));

  it('a switchover during the snapshot: Save() answers within its bound, Load() within its own, the VM resumes blocked, and the drop lifts once B holds exactly what A held', async () => {
    // The snapshot's first chunk takes 2 s on the wire.
    let slowed = false;
    net.listenerBeforeSend = (m) => {
      if (m.kind !== MessageKind.SnapshotChunk || slowed) return Promise.resolve();
      slowed = true;
      return new Promise((r) => clock.after(2000, r));
    };
    await b.engine.prepareIncoming(vm, { source: a.peerText });
    assert.equal(sessionOf(b).state, 'precopy');
    a.kernel.put(tcp('198.51.100.9', 47000, VM_V4, 22));

    // QEMU's switchover: the VM pauses on A.
    let blob: Uint8Array | null = null;
    const saving = a.vmstate.save(VM_UUID).then((x) => (blob = x));
    await clock.run(SAVE_BOUND_MS);
    await saving;
    assert.ok(blob, `Save() has not answered ${SAVE_BOUND_MS} ms after the pause`);
    const ref = decodeReference(blob as Uint8Array);
    assert.equal(ref.kind, 'session');
    assert.equal(ref.kind === 'session' ? ref.digest.length : -1, 0, 'a reference without a digest: the Final follows');

    let loaded = false;
    const loading = b.vmstate.load(VM_UUID, blob as Uint8Array).then(() => (loaded = true));
    await clock.run(b.config.loadTimeoutMs);
    await loading;
    assert.ok(loaded, 'Load() answered within its bound');
    assert.ok(b.blocker.isBlocked(VM_UUID), 'the VM runs on B, its traffic still dropped');
    assert.ok(b.log.at('warn').some((m) => /QEMU resumes the VM before its state is in/.test(m)));

    await clock.run(2500);
    assert.ok(!b.blocker.isBlocked(VM_UUID), 'the drop lifts once the snapshot and the delta are in');
    assert.deepEqual(b.kernel.texts(vmOnly), a.kernel.texts(vmOnly), 'B ends exact');
    const s = sessionOf(b);
    assert.equal(s.state, 'ready');
    assert.ok(s.resumedAt > 0 && s.readyAt > s.resumedAt, `resumed at ${s.resumedAt}, ready at ${s.readyAt}`);
    assert.ok(s.readyAt - s.resumedAt >= 1900, 'the session says how long the VM ran blocked');
  });

  it('with the pre-copy done, Save() and Load() carry the digest and answer at once, as before', async () => {
    await b.engine.prepareIncoming(vm, { source: a.peerText });
    await clock.run(0);
    const blob = await a.vmstate.save(VM_UUID);
    const ref = decodeReference(blob);
    assert.equal(ref.kind === 'session' ? ref.digest.length : -1, 32);
    await b.vmstate.load(VM_UUID, blob);
    assert.ok(!b.blocker.isBlocked(VM_UUID));
    await clock.run(30);
    const s = sessionOf(b);
    assert.ok(s.resumedAt >= s.readyAt, 'the drop was lifted before the VM resumed');
  });
});
