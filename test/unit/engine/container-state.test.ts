// A container's packed state over the peer channel (criu-action at CRIU's
// network-lock, the destination known): the source's engine sends it, the
// destination's holds it, checked whole, and hands it over once.

import 'reflect-metadata';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { parseAddress } from '../../../plugin/address';
import { encodeManifest, MANIFEST_FORMAT } from '../../../plugin/checkpoint-manifest';
import { Scan } from '../../../plugin/connection-table';
import { ContainerState } from '../../../plugin/migration-service';
import { NoSessionError } from '../../../plugin/service-errors';
import { encodeTableToBuffer } from '../../../plugin/snapshot-encoder';
import { ConnectionTable } from '../../../plugin/connection-table';
import { FakeClock } from './fakes/fake-clock';
import { FakeNetwork } from './fakes/fake-peer-network';
import { Host, startHost, tcp } from './lab';
import { MessageKind, PeerRole } from '../../../plugin/peer-protocol';

function packed(container: string, o: { corrupt?: boolean; claim?: string; address?: string } = {}): ContainerState {
  const table = ConnectionTable.create({ capacity: 16 });
  table.upsert(tcp('203.0.113.100', 50000, '192.0.2.10', 7000));
  table.upsert(tcp('192.0.2.10', 41000, '203.0.113.100', 7001));
  const { bytes, summary } = encodeTableToBuffer(table, { scan: Scan.Snapshot, from: 0, to: table.version });
  const snapshot = Uint8Array.from(bytes);
  const manifest = encodeManifest({
    format: MANIFEST_FORMAT,
    container: o.claim ?? container,
    addresses: [parseAddress(o.address ?? '192.0.2.10')],
    entries: summary.entries,
    bytes: snapshot.length,
    sha256: createHash('sha256').update(snapshot).digest('hex'),
    host: 'a',
    packedAt: 1_700_000_000_000,
  });
  if (o.corrupt) snapshot[snapshot.length - 1] ^= 1;
  return { container, manifest, snapshot };
}

describe('migration engine: a container\'s state over the peer channel', () => {
  let clock: FakeClock;
  let net: FakeNetwork;
  let a: Host;
  let b: Host;

  beforeEach(async () => {
    clock = new FakeClock();
    net = new FakeNetwork(clock);
    a = await startHost(net, clock, 'A', '192.0.2.10');
    b = await startHost(net, clock, 'B', '192.0.2.20');
  });

  afterEach(async () => {
    await a.engine.stop();
    await b.engine.stop();
  });

  it('the destination holds what the source sends and hands it over once', async () => {
    const s = packed('web1');
    await a.engine.sendContainerState(b.peerText, s);
    const got = await b.engine.takeContainerState('web1');
    assert.equal(got.manifest, s.manifest);
    assert.deepEqual(Buffer.from(got.snapshot), Buffer.from(s.snapshot));
    await assert.rejects(b.engine.takeContainerState('web1'), (e: Error) => e instanceof NoSessionError && /no peer sent the state of container web1/.test(e.message));
  });

  it('a state that does not check out is never sent, and one a peer sends is refused with the reason', async () => {
    await assert.rejects(a.engine.sendContainerState(b.peerText, packed('web2', { corrupt: true })), /the state of container web2: the snapshot does not match the manifest's SHA-256/);
    await assert.rejects(a.engine.sendContainerState(b.peerText, packed('web3', { claim: 'other' })), /the manifest names container other, not web3/);
    await assert.rejects(b.engine.takeContainerState('web2'), NoSessionError);
  });

  it('a hostile peer\'s state that does not check out is refused on arrival with the reason, and nothing is held', async () => {
    const conn = await net.port('192.0.2.66').connect(b.address, { role: PeerRole.Source, timeoutMs: 1000 });
    const bad = packed('web6', { corrupt: true });
    await conn.send({ kind: MessageKind.ContainerState, container: bad.container, manifest: bad.manifest, bytes: bad.snapshot });
    const answer = await conn.receive(1000);
    assert.equal(answer.kind, MessageKind.Error);
    assert.match((answer as { text: string }).text, /the state of container web6: the snapshot does not match the manifest's SHA-256/);
    await assert.rejects(b.engine.takeContainerState('web6'), NoSessionError);
  });

  it('a state that names an address of the destination host is refused there', async () => {
    const s = packed('web7', { address: b.ip });
    await assert.rejects(a.engine.sendContainerState(b.peerText, s), new RegExp(`refused the state of container web7: the state of container web7 names ${b.ip.replace(/\./g, '\\.')}, an address of this host`));
    await assert.rejects(b.engine.takeContainerState('web7'), NoSessionError);
  });

  it('a destination that is not there fails the send, saying where', async () => {
    await assert.rejects(a.engine.sendContainerState('192.0.2.99:7471', packed('web4')));
    await assert.rejects(a.engine.sendContainerState('not an address', packed('web4')), /destination/);
  });

  it('a state older than an hour is forgotten', async () => {
    await a.engine.sendContainerState(b.peerText, packed('web5'));
    await clock.run(3_600_001);
    await assert.rejects(b.engine.takeContainerState('web5'), NoSessionError);
  });
});
