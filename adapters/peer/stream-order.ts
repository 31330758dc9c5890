import { MessageKind, PeerMessage, PeerProtocolError } from '../../plugin/peer-protocol';

/**
 * The order a session's messages must arrive in, checked on receipt so a
 * peer cannot skip versions, reorder changes or slip a snapshot chunk in
 * after the change stream began:
 *
 *   Offer → SnapshotChunk 0..n (last flag) → Changes (from = previous to)… → Final → (nothing more of data)
 *
 * A switchover during the snapshot puts its hand-over inside it: Changes
 * from the snapshot's version on (contiguous, with no chunk between them),
 * and later one empty chunk marked "established" (snapshot-shipment.ts).
 * The Final still comes after the snapshot.
 *
 * After an Offer that answers a Resume, no snapshot comes and the changes
 * start at the resume point. Control messages (Error, Close, WhoHas…) may
 * come at any time; a second Hello or Offer may not.
 */
export class StreamOrder {
  private offered = false;
  private resumed = false;
  private nextSeq = 0;
  private snapshotDone = false;
  private nextFrom = 0;
  private finished = false;
  /** The changes a switchover handed over inside the snapshot have come (one or more contiguous Changes). */
  private handedOver = false;
  /** A snapshot chunk came after them: no more changes until the snapshot ends. */
  private handoverDone = false;
  private marked = false;

  /** Throws PeerProtocolError ('order') when `m` may not come now. */
  check(m: PeerMessage): void {
    switch (m.kind) {
      case MessageKind.Hello:
        throw this.order(m.kind, 'sent a second Hello');
      case MessageKind.Offer:
        if (this.offered) throw this.order(m.kind, 'sent a second Offer');
        this.offered = true;
        this.resumed = m.resumeFrom !== null;
        this.snapshotDone = this.resumed;
        this.nextFrom = m.resumeFrom ?? m.snapshotVersion;
        return;
      case MessageKind.SnapshotChunk:
        this.dataAllowed(m.kind);
        if (this.resumed) throw this.order(m.kind, 'sent a snapshot chunk in a resumed session');
        if (this.snapshotDone) throw this.order(m.kind, 'sent a snapshot chunk after the snapshot ended');
        if (m.seq !== this.nextSeq) throw this.order(m.kind, `sent snapshot chunk ${m.seq} where ${this.nextSeq} was due`);
        if (m.established) {
          if (!this.handedOver || this.marked) throw this.order(m.kind, 'marked the established entries without changes handed over first, or twice');
          this.marked = true;
        }
        this.nextSeq++;
        if (this.handedOver) this.handoverDone = true;
        if (m.last) this.snapshotDone = true;
        return;
      case MessageKind.Changes:
      case MessageKind.Final:
        this.dataAllowed(m.kind);
        if (!this.snapshotDone) {
          // Only the one hand-over of a switchover, right after the snapshot's version.
          if (m.kind === MessageKind.Final || this.handoverDone) throw this.order(m.kind, 'sent changes before the snapshot ended');
          if (m.from !== this.nextFrom) throw this.order(m.kind, `sent versions (${m.from}, ${m.to}] inside the snapshot of version ${this.nextFrom}`);
          this.handedOver = true;
          this.nextFrom = m.to;
          return;
        }
        if (m.from !== this.nextFrom)
          throw this.order(m.kind, `sent versions (${m.from}, ${m.to}] where (${this.nextFrom}, …] was due`);
        this.nextFrom = m.to;
        if (m.kind === MessageKind.Final) this.finished = true;
        return;
      default:
        return;
    }
  }

  /** Whether the final delta has arrived. */
  get complete(): boolean {
    return this.finished;
  }

  private dataAllowed(kind: MessageKind): void {
    if (!this.offered) throw this.order(kind, 'sent session data before an Offer');
    if (this.finished) throw this.order(kind, 'sent session data after the final delta');
  }

  private order(kind: MessageKind, text: string): PeerProtocolError {
    return new PeerProtocolError('order', text, kind);
  }
}
