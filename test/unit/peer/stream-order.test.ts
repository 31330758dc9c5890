import { strict as assert } from 'node:assert';
import { StreamOrder } from '../../../adapters/peer/stream-order';
import { MessageKind, OfferMessage, PeerMessage, PeerProtocolError } from '../../../plugin/peer-protocol';

const VM = '6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b';
const none = new Uint8Array(0);
const offer = (resumeFrom: number | null = null): OfferMessage => ({
  kind: MessageKind.Offer,
  sessionId: 's',
  vm: VM,
  addresses: [],
  snapshotVersion: 10,
  announcedEntries: null,
  resumeFrom,
});
const chunk = (seq: number, last = false): PeerMessage => ({ kind: MessageKind.SnapshotChunk, seq, last, bytes: none });
const changes = (from: number, to: number): PeerMessage => ({ kind: MessageKind.Changes, from, to, bytes: none });
const final = (from: number, to: number): PeerMessage => ({ kind: MessageKind.Final, from, to, digest: none, bytes: none });

function refused(seq: PeerMessage[]): string {
  const o = new StreamOrder();
  try {
    for (const m of seq) o.check(m);
  } catch (err) {
    assert.ok(err instanceof PeerProtocolError && err.problem === 'order');
    return err.message;
  }
  throw new Error('sequence was accepted');
}

describe('session stream order', () => {
  it('accepts snapshot, contiguous changes, then the final delta', () => {
    const o = new StreamOrder();
    for (const m of [offer(), chunk(0), chunk(1, true), changes(10, 12), changes(12, 12), final(12, 15)]) o.check(m);
    assert.ok(o.complete);
  });

  it('accepts a resumed session that starts at the resume point', () => {
    const o = new StreamOrder();
    for (const m of [offer(7), changes(7, 9), final(9, 10)]) o.check(m);
  });

  it('refuses data before an Offer', () => assert.match(refused([chunk(0)]), /before an Offer/));
  it('refuses a skipped snapshot chunk', () => assert.match(refused([offer(), chunk(0), chunk(2)]), /chunk 2 where 1 was due/));
  it('accepts a switchover inside the snapshot: contiguous changes from its version, the established mark, the rest, the Final after it', () => {
    const o = new StreamOrder();
    const mark: PeerMessage = { kind: MessageKind.SnapshotChunk, seq: 2, last: false, established: true, bytes: none };
    for (const m of [offer(), chunk(0), changes(10, 11), changes(11, 13), chunk(1), mark, chunk(3, true), changes(13, 14), final(14, 15)]) o.check(m);
    assert.ok(o.complete);
  });
  it('refuses changes inside the snapshot that do not start at its version', () => assert.match(refused([offer(), chunk(0), changes(9, 11)]), /inside the snapshot of version 10/));
  it('refuses a second hand-over inside the snapshot', () => assert.match(refused([offer(), chunk(0), changes(10, 11), chunk(1), changes(11, 12)]), /before the snapshot ended/));
  it('refuses a Final before the snapshot ended', () => assert.match(refused([offer(), chunk(0), final(10, 11)]), /before the snapshot ended/));
  it('refuses an established mark without a hand-over', () =>
    assert.match(refused([offer(), chunk(0), { kind: MessageKind.SnapshotChunk, seq: 1, last: false, established: true, bytes: none }]), /without changes handed over/));
  it('refuses a gap in versions', () => assert.match(refused([offer(), chunk(0, true), changes(11, 12)]), /\(11, 12\] where \(10, …\] was due/));
  it('refuses a snapshot chunk after the snapshot ended', () => assert.match(refused([offer(), chunk(0, true), chunk(1)]), /after the snapshot ended/));
  it('refuses a snapshot in a resumed session', () => assert.match(refused([offer(3), chunk(0)]), /resumed session/));
  it('refuses data after the final delta', () => assert.match(refused([offer(3), final(3, 4), changes(4, 5)]), /after the final delta/));
  it('refuses a second Offer', () => assert.match(refused([offer(), offer()]), /second Offer/));
});
