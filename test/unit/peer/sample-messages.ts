import { CloseReason, MessageKind, PeerErrorCode, PeerMessage, PeerRole } from '../../../plugin/peer-protocol';

const VM = '6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b';

/** One message of every kind, with fields that exercise every optional part. */
export function sampleMessages(): PeerMessage[] {
  const bytes = Uint8Array.from({ length: 300 }, (_, i) => (i * 7) & 0xff);
  return [
    { kind: MessageKind.Hello, protocol: 1, role: PeerRole.Destination, maxFrameBytes: 4 << 20, hostId: 'host-b.example' },
    { kind: MessageKind.Start, sessionId: 's-1', vm: VM, addresses: ['192.0.2.10', '2001:db8::10'], zone: 7, mark: { value: 0x10, mask: 0xff } },
    { kind: MessageKind.Start, sessionId: 's-2', vm: VM, addresses: [] },
    {
      kind: MessageKind.Offer,
      sessionId: 's-1',
      vm: VM,
      addresses: ['198.51.100.4'],
      mark: { value: 1, mask: 0xffffffff },
      snapshotVersion: 2 ** 40 + 3,
      announcedEntries: 100_000,
      resumeFrom: null,
    },
    { kind: MessageKind.Offer, sessionId: 's-1', vm: VM, addresses: [], zone: 0, snapshotVersion: 9, announcedEntries: null, resumeFrom: 5 },
    { kind: MessageKind.Offer, sessionId: 's-3', vm: VM, addresses: ['192.0.2.10'], snapshotVersion: 1, announcedEntries: 2, resumeFrom: null, cutoverPath: 'vmstate-hot' },
    { kind: MessageKind.Offer, sessionId: 's-4', vm: VM, addresses: [], snapshotVersion: 1, announcedEntries: null, resumeFrom: null, cutoverPath: 'hook' },
    { kind: MessageKind.SnapshotChunk, seq: 0, last: false, bytes },
    { kind: MessageKind.SnapshotChunk, seq: 41, last: true, bytes: new Uint8Array(0) },
    { kind: MessageKind.Changes, from: 100, to: 250, bytes },
    { kind: MessageKind.Final, from: 250, to: 251, digest: Uint8Array.from({ length: 32 }, (_, i) => i), bytes },
    { kind: MessageKind.Ack, bytes: 123_456_789, received: 250, committed: 200 },
    { kind: MessageKind.Resume, sessionId: 's-1', vm: VM, lastVersion: Number.MAX_SAFE_INTEGER },
    { kind: MessageKind.Error, code: PeerErrorCode.CannotResume, text: 'cannot resume: tombstones pruned — ünïcode' },
    { kind: MessageKind.Close, reason: CloseReason.Migrated, text: '' },
    { kind: MessageKind.WhoHas, queryId: 0xffffffff, vm: VM },
    { kind: MessageKind.HasVm, queryId: 3, vm: VM, has: true },
    { kind: MessageKind.HasVm, queryId: 4, vm: VM, has: false },
    { kind: MessageKind.ContainerState, container: 'c0ffee', manifest: '{"format":"ctmigrate-checkpoint/1"}', bytes: Uint8Array.from([0x89, 1, 2, 3]) },
    { kind: MessageKind.ContainerHeld, container: 'c0ffee' },
  ];
}

/** Data fields come back as views; compare them as plain arrays. */
export function comparable(m: PeerMessage): unknown {
  const o: Record<string, unknown> = { ...m };
  for (const k of ['bytes', 'digest']) if (o[k] instanceof Uint8Array) o[k] = Array.from(o[k] as Uint8Array);
  return o;
}
