import { createHash } from 'node:crypto';
import { ConnectionTable, Scan } from './connection-table';
import { CutoverPath } from './cutover-path';
import { CloseReason, MessageKind, PeerErrorCode, resumeProblem, StartMessage } from './peer-protocol';
import { Clock } from './ports/clock';
import { Feed } from './ports/connection-feed';
import { ConntrackPort } from './ports/conntrack-port';
import { Log } from './ports/log-port';
import { formatPeerAddress, PeerConnection } from './ports/peer-port';
import { Session } from './session';
import { DEFAULT_CHUNK_BYTES, encodeTableToBuffer } from './snapshot-encoder';
import { streamSnapshot } from './snapshot-shipment';
import { VmSpec, vmAddressTexts } from './vm';
import { VmTracker } from './vm-tracker';
import { VmStateReference } from './vmstate-reference';

export interface SourceSettings {
  tableCapacity: number;
  changeIntervalMs: number;
  /** Told once when the session is over (`migrated`: the VM runs on the destination now). */
  onClosed?: (migrated: boolean) => void;
  /**
   * How long a session whose peer link was lost during pre-copy waits for
   * its destination to resume it; 0 (default): it ends at once.
   */
  resumeGraceMs?: number;
}

/** Longest QEMU's Save() waits for the residual delta to be shipped (with the VM paused). */
export const SAVE_BOUND_MS = 25;

/** Room kept free in a frame for the message header around codec bytes. */
const FRAME_SLACK = 256;

/** The snapshot's first chunk (≈1000 entries); chunks double from there up to the full size. */
const FIRST_CHUNK_BYTES = 64 * 1024;

/**
 * The source side of one migration: follow the VM's entries into a table,
 * ship a snapshot, then every change in version order, and at cut-over the
 * residual delta (deletions included) as the Final message.
 *
 * All shipping runs through one promise chain, so a change tick, the
 * cut-over and a finish never interleave on the connection.
 */
export class SourceMigration {
  private table: ConnectionTable | null = null;
  private feed: Feed | null = null;
  private shipped = 0;
  private final: VmStateReference | null = null;
  private work: Promise<unknown> = Promise.resolve();
  private cancelTick: (() => void) | null = null;
  private ended = false;
  /** Jobs on the shipping chain, running or waiting (the snapshot, change ticks, the cut-over). */
  private queued = 0;
  /** Highest version the destination has acknowledged as committed (any connection of the session). */
  private acked = 0;
  /** Tombstones up to this version are gone: a resume must start at or after it. */
  private reclaimedTo = 0;
  /** Version of the snapshot this session shipped. */
  private snapshotVersion = Number.MAX_SAFE_INTEGER;
  /** The peer link was lost during pre-copy: cancels the wait for a resume. */
  private cancelGrace: (() => void) | null = null;
  /** The cut-over was asked for: a snapshot still going out changes its order (snapshot-shipment.ts). */
  private switchedOver = false;

  constructor(
    readonly session: Session,
    readonly vm: VmSpec,
    private conn: PeerConnection,
    private readonly tracker: VmTracker,
    private readonly conntrack: ConntrackPort,
    private readonly clock: Clock,
    private readonly log: Log,
    private readonly settings: SourceSettings,
  ) {
    this.watch(conn);
  }

  /** Whether the session waits for its destination to resume it over a new connection. */
  get detached(): boolean {
    return this.cancelGrace !== null;
  }

  /** Follow one connection of the session: its messages, its acks, its end. */
  private watch(conn: PeerConnection): void {
    conn.onAck((a) => {
      if (a.committed > this.acked) this.acked = a.committed;
    });
    void conn.closed.then((info) => {
      if (this.ended || conn !== this.conn) return;
      // Before cut-over the destination cannot have everything: nothing to undo here.
      if (this.session.state === 'cutover') return;
      const why = info.error ? info.error.message : 'the destination closed the connection';
      // A destination that means to end says so (Close) first, which ends the
      // session before this. A link lost after the snapshot (a partition, a
      // reset, a relay that died) may come back:
      // the destination resumes from what it acknowledged.
      // Only a destination that has the whole snapshot in can resume (it says so by acknowledging its version).
      if (this.session.state === 'streaming' && this.acked >= this.snapshotVersion && (this.settings.resumeGraceMs ?? 0) > 0) this.detach(why);
      else void this.end(`peer connection lost before cut-over: ${why}`);
    });
    void this.read(conn);
  }

  private detach(why: string): void {
    if (this.cancelGrace) return;
    this.cancelTick?.();
    this.cancelTick = null;
    const grace = this.settings.resumeGraceMs ?? 0;
    this.log.warn(`peer connection lost during pre-copy (${why}); waiting ${Math.round(grace / 1000)} s for the destination to resume`, { vm: this.vm.uuid, session: this.session.id });
    this.cancelGrace = this.clock.after(grace, () => {
      this.cancelGrace = null;
      void this.end(`peer connection lost before cut-over: ${why}; not resumed within ${Math.round(grace / 1000)} s`);
    });
  }

  /**
   * The destination came back over `conn` and asks to go on after
   * `lastVersion`: answer with an Offer that says so, then ship the changes
   * since. Refused (and the session ended) when the tombstones it would
   * need are gone. A link that still looks alive here is the old one,
   * dead on the other side: it is dropped.
   */
  async resume(conn: PeerConnection, lastVersion: number): Promise<void> {
    if (this.ended || this.final || !this.table) throw new Error(`session ${this.session.id} is ${this.session.state}; it cannot be resumed`);
    const old = this.conn;
    this.cancelGrace?.();
    this.cancelGrace = null;
    this.cancelTick?.();
    this.cancelTick = null;
    this.conn = conn;
    old.destroy(new Error('the destination resumed the session over a new connection'));
    const problem = resumeProblem(lastVersion, this.reclaimedTo, this.table.version);
    if (problem) {
      await conn.send({ kind: MessageKind.Error, code: PeerErrorCode.CannotResume, text: problem }).catch(() => undefined);
      await this.end(problem);
      return;
    }
    this.watch(conn);
    await this.serial(async () => {
      await conn.send({
        kind: MessageKind.Offer,
        sessionId: this.session.id,
        vm: this.vm.uuid,
        addresses: vmAddressTexts(this.vm),
        zone: this.vm.zone,
        mark: this.vm.mark,
        snapshotVersion: lastVersion,
        announcedEntries: null,
        resumeFrom: lastVersion,
        ...(this.session.info.path ? { cutoverPath: this.session.info.path as CutoverPath } : {}),
      });
      this.shipped = lastVersion;
      if (lastVersion > this.acked) this.acked = lastVersion;
    });
    this.log.info('session resumed', { vm: this.vm.uuid, session: this.session.id, from: lastVersion, current: this.table.version });
    this.scheduleTick();
  }

  /**
   * Take what the destination sends: only its Close belongs in a session
   * (acknowledgements never reach the inbox). Anything else breaks the
   * protocol and ends the connection; it must not wait untaken either,
   * or a peer could park a session here behind a paused socket.
   */
  private async read(conn: PeerConnection): Promise<void> {
    try {
      for await (const m of conn) {
        if (m.kind === MessageKind.Close) {
          // The destination rolled back (its QEMU died, libvirt cancelled, an
          // operator aborted): the VM stays here, with its entries. After the
          // cut-over nothing else would end this session (libvirt calls no
          // hook on a source after a failed migration), and a hot-attached
          // object would stay in the QEMU that keeps running.
          if (m.reason === CloseReason.Failed && conn === this.conn) void this.end(`the destination ended the session: ${m.text || 'failed'}`);
          continue;
        }
        const text = `sent ${MessageKind[m.kind]} inside a session; connection closed`;
        this.log.warn(`destination ${formatPeerAddress(conn.remote)} ${text}`, { vm: this.vm.uuid, session: this.session.id });
        conn.destroy(new Error(`destination ${formatPeerAddress(conn.remote)} ${text}`));
        return;
      }
    } catch {
      // The connection failed: conn.closed reports it.
    }
  }

  /**
   * Follow the VM's entries, answer the Start with an Offer, ship the
   * snapshot, start streaming. The snapshot runs on the shipping chain too:
   * a cut-over that comes while it is still on the wire (QEMU may stop a
   * small VM before a big table is across) waits for it instead of sending
   * the Final in the middle of the snapshot.
   */
  async start(request: StartMessage): Promise<void> {
    await this.serial(() => this.shipSnapshot(request));
    this.scheduleTick();
  }

  private async shipSnapshot(request: StartMessage): Promise<void> {
    // The VM's table has been kept current since it was registered: no dump here.
    await this.tracker.ready();
    const table = this.tracker.table;
    const feed = this.tracker.feed;
    this.table = table;
    this.feed = feed;
    this.tracker.busy = true;
    const v0 = await feed.sync();
    // Tombstones older than the snapshot are of no use to this session.
    await feed.reclaim(v0);
    this.reclaimedTo = v0;
    this.snapshotVersion = v0;
    await this.conn.send({
      kind: MessageKind.Offer,
      sessionId: request.sessionId,
      vm: request.vm,
      addresses: request.addresses,
      zone: request.zone,
      mark: request.mark,
      snapshotVersion: v0,
      announcedEntries: table.size,
      resumeFrom: null,
      ...(this.session.info.path ? { cutoverPath: this.session.info.path as CutoverPath } : {}),
    });
    this.session.moveTo('precopy');
    let seq = 0;
    let bytes = 0;
    // Chunks must fit the frame limit the destination announced, which may be below the codec's default.
    const chunkBytes = Math.min(DEFAULT_CHUNK_BYTES, this.conn.peer.maxFrameBytes - FRAME_SLACK);
    // Every chunk goes out as soon as it is full, small ones first: the
    // destination's kernel writes start on the first entries instead of
    // waiting for a whole chunk (and for the next one to be encoded). An
    // empty chunk says "last".
    const summary = await streamSnapshot(
      table,
      v0,
      async (chunk) => {
        bytes += chunk.length;
        await this.conn.send({ kind: MessageKind.SnapshotChunk, seq: seq++, last: false, bytes: chunk });
      },
      {
        switchedOver: () => this.switchedOver,
        handOver: async () => {
          // What changed since the snapshot's version, the deletions too: the
          // VM's state at its stop, but for the snapshot's unchanged tail.
          const to = await feed.sync();
          const before = this.session.info.sent;
          await this.shipChanges(v0, to);
          this.log.info('switchover before the snapshot ended: the changes since the snapshot go first, then its remaining established TCP entries, then the rest', {
            vm: this.vm.uuid,
            session: this.session.id,
            changes: this.session.info.sent - before,
            version: to,
          });
        },
        establishedSent: () => this.conn.send({ kind: MessageKind.SnapshotChunk, seq: seq++, last: false, established: true, bytes: new Uint8Array(0) }),
      },
      chunkBytes,
      Math.min(chunkBytes, FIRST_CHUNK_BYTES),
    );
    await this.conn.send({ kind: MessageKind.SnapshotChunk, seq: seq++, last: true, bytes: new Uint8Array(0) });
    if (this.shipped < v0) this.shipped = v0;
    this.session.update({ sent: this.session.info.sent + summary.entries, bytes: this.session.info.bytes + bytes, version: this.shipped });
    this.session.moveTo('streaming');
    this.log.info('snapshot shipped', { vm: this.vm.uuid, session: this.session.id, entries: summary.entries, bytes, version: v0 });
  }

  private scheduleTick(): void {
    if (this.ended || this.final || this.cancelGrace) return;
    this.cancelTick = this.clock.after(this.settings.changeIntervalMs, () => {
      this.cancelTick = null;
      const conn = this.conn;
      this.serial(() => this.tick()).then(
        () => this.scheduleTick(),
        (e: Error) => void this.tickFailed(conn, e),
      );
    });
  }

  /**
   * A shipment failed. When its connection died under it, the connection's
   * end decides (wait for a resume, or end the session). Anything else ends
   * the session.
   */
  private async tickFailed(conn: PeerConnection, e: Error): Promise<void> {
    const closed = await Promise.race([conn.closed.then(() => true), new Promise<boolean>((r) => this.clock.after(1000, () => r(false)))]);
    if (this.ended) return;
    // A resume schedules its own shipments.
    if (closed) return;
    await this.end(`shipping changes failed: ${e.message}`);
  }

  private async tick(): Promise<void> {
    if (this.ended || this.final || !this.table || !this.feed) return;
    const to = this.table.version;
    if (to <= this.shipped) return;
    await this.shipChanges(this.shipped, to);
    // Only what the destination has committed: a resume starts from there,
    // and must still find the deletions after it.
    const upTo = Math.min(this.acked, this.shipped);
    if (upTo > this.reclaimedTo) {
      await this.feed.reclaim(upTo);
      this.reclaimedTo = upTo;
    }
  }

  /** Ship (from, to] as Changes, halving the range while it is too big for one frame. */
  private async shipChanges(from: number, to: number): Promise<void> {
    const table = this.table as ConnectionTable;
    const { bytes, summary } = encodeTableToBuffer(table, { scan: Scan.Delta, from, to });
    if (bytes.length > this.conn.peer.maxFrameBytes - FRAME_SLACK && to - from > 1) {
      const mid = from + Math.floor((to - from) / 2);
      await this.shipChanges(from, mid);
      await this.shipChanges(mid, to);
      return;
    }
    await this.conn.send({ kind: MessageKind.Changes, from, to, bytes });
    this.shipped = to;
    this.session.update({ sent: this.session.info.sent + summary.entries, bytes: this.session.info.bytes + bytes.length, version: to });
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    this.queued++;
    const run = (): Promise<T> => fn().finally(() => this.queued--);
    const next = this.work.then(run, run);
    this.work = next.catch(() => undefined);
    return next;
  }

  /**
   * The VM has stopped: wait until every kernel change before now is in the
   * table, ship the residual delta as Final, and return the reference for
   * QEMU's blob. Idempotent: a second call returns the same reference.
   * `paused`: QEMU waits for the answer (Save()), so the session's reports
   * are held until it has been given.
   */
  cutover(options: { paused?: boolean } = {}): Promise<VmStateReference> {
    if (this.final) return Promise.resolve(this.final);
    this.switchedOver = true;
    this.cancelTick?.();
    this.cancelTick = null;
    if (options.paused) {
      // QEMU's Save(): the session's signals follow its answer.
      this.session.hold();
      const busy = this.queued > 0;
      const done = this.cutover();
      if (!busy) {
        void done.finally(() => this.session.releaseSoon()).catch(() => undefined);
        return done;
      }
      // The snapshot (or a big batch of changes) is still on the wire: QEMU
      // must not wait for it with the VM paused. After SAVE_BOUND_MS it gets
      // a reference without a digest, naming the version at its pause; the
      // Final follows on the peer channel once the chain is free, covering
      // at least that version.
      const atPause = this.table?.version ?? 0;
      return new Promise<VmStateReference>((resolve, reject) => {
        let answered = false;
        const cancel = this.clock.after(SAVE_BOUND_MS, () => {
          answered = true;
          this.session.releaseSoon();
          this.log.warn(`QEMU stopped the VM before the pre-copy ended: Save() answers now, the residual delta follows after ${this.queued} job(s) on the peer channel`, { vm: this.vm.uuid, session: this.session.id });
          resolve({ kind: 'session', sessionId: this.session.id, finalVersion: atPause, digest: new Uint8Array(0) });
        });
        done.then(
          (ref) => {
            if (answered) return;
            cancel();
            this.session.releaseSoon();
            resolve(ref);
          },
          (e: Error) => {
            if (answered) {
              this.log.error(`the residual delta could not be shipped after Save() answered: ${e.message}`, { vm: this.vm.uuid, session: this.session.id });
              return;
            }
            cancel();
            this.session.releaseSoon();
            reject(e);
          },
        );
      });
    }
    return this.serial(async () => {
      if (this.final) return this.final;
      if (this.ended || !this.table || !this.feed) throw new Error(`session ${this.session.id} is ${this.session.state}; nothing to cut over`);
      const stop = await this.feed.sync();
      const from = this.shipped;
      const { bytes, summary } = encodeTableToBuffer(this.table, { scan: Scan.Delta, from, to: stop });
      if (bytes.length > this.conn.peer.maxFrameBytes - FRAME_SLACK) {
        // Too much for one frame: ship most of it as changes, keep the tail final.
        await this.shipChanges(from, stop - 1);
        return this.finalFrom(this.shipped, stop);
      }
      const digest = createHash('sha256').update(bytes).digest();
      await this.conn.send({ kind: MessageKind.Final, from, to: stop, digest, bytes });
      return this.sealed(stop, digest, summary.entries, bytes.length);
    });
  }

  private async finalFrom(from: number, stop: number): Promise<VmStateReference> {
    const { bytes, summary } = encodeTableToBuffer(this.table as ConnectionTable, { scan: Scan.Delta, from, to: stop });
    const digest = createHash('sha256').update(bytes).digest();
    await this.conn.send({ kind: MessageKind.Final, from, to: stop, digest, bytes });
    return this.sealed(stop, digest, summary.entries, bytes.length);
  }

  private sealed(stop: number, digest: Uint8Array, entries: number, bytes: number): VmStateReference {
    this.shipped = stop;
    this.final = { kind: 'session', sessionId: this.session.id, finalVersion: stop, digest };
    this.session.update({ sent: this.session.info.sent + entries, bytes: this.session.info.bytes + bytes, version: stop });
    this.session.moveTo('cutover');
    this.log.info('residual delta shipped', { vm: this.vm.uuid, session: this.session.id, entries, bytes, version: stop });
    return this.final;
  }

  /**
   * Close the session. `migrated`: the VM runs on the destination now, so
   * its entries here are deleted. Anything else: this host keeps its
   * entries as they are.
   */
  async finish(result: 'migrated' | 'failed', reason = 'migration failed'): Promise<void> {
    if (result === 'migrated' && !this.final) await this.cutover();
    await this.serial(async () => undefined);
    if (result === 'migrated') {
      const table = this.table as ConnectionTable;
      const report = await this.conntrack.remove({ table });
      const gone = report.failures.filter((f) => f.code !== 'ENOENT');
      for (const f of gone) this.log.warn(`could not delete ${f.flow}: ${f.reason}`, { vm: this.vm.uuid, session: this.session.id });
      this.log.info('source entries deleted', { vm: this.vm.uuid, session: this.session.id, deleted: report.deleted });
      await this.close(CloseReason.Migrated, 'migrated');
      this.session.moveTo('migrated');
    } else {
      await this.end(reason);
    }
  }

  /** Fail: stop streaming, leave this host's entries alone, tell the peer. */
  async end(reason: string): Promise<void> {
    if (this.ended) return;
    this.cancelGrace?.();
    this.cancelGrace = null;
    this.session.fail(reason);
    await this.close(CloseReason.Failed, reason);
  }

  private async close(reason: CloseReason, text: string): Promise<void> {
    if (this.ended) return;
    this.ended = true;
    this.cancelTick?.();
    try {
      await this.conn.send({ kind: MessageKind.Close, reason, text });
    } catch {
      // The peer is gone already.
    }
    await this.conn.close().catch(() => undefined);
    // The tracker (and its feed) belongs to the registration, not to the session.
    this.tracker.busy = false;
    this.settings.onClosed?.(reason === CloseReason.Migrated);
  }
}
