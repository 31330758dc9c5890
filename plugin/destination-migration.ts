import { createHash, timingSafeEqual } from 'node:crypto';
import { ConnectionTable, Scan } from './connection-table';
import { L4, R_FLAGS, R_L4PROTO, R_PROTO_STATE, RecordFlag } from './flow';
import { flowMatches, FlowFilter } from './flow-filter';
import { CloseReason, MessageKind, OfferMessage, PeerMessage } from './peer-protocol';
import { BlockerPort } from './ports/blocker-port';
import { Clock } from './ports/clock';
import { ConntrackPort, WriteReport } from './ports/conntrack-port';
import { Log } from './ports/log-port';
import { PeerConnection } from './ports/peer-port';
import { ImportProgress, isReady, Readiness } from './readiness';
import { Session } from './session';
import { decodeSnapshot, SnapshotDecoder } from './snapshot-decoder';
import { VmSpec, vmAddressTexts, vmFilter } from './vm';
import { VmStateReference } from './vmstate-reference';

export interface DestinationSettings {
  tableCapacity: number;
  blockTimeoutMs: number;
  onBlockTimeout: 'open' | 'block';
  /** How long to wait for the source's Offer. */
  offerTimeoutMs: number;
}

const TCP_ESTABLISHED = 3;

/** The final delta did not arrive in time (the only Load failure fail-open covers). */
export class FinalTimeoutError extends Error {
  constructor(ms: number) {
    super(`final delta did not arrive within ${ms} ms`);
    this.name = 'FinalTimeoutError';
  }
}

/**
 * The destination side of one migration. The VM's traffic is dropped
 * before this starts (the engine blocks first); this pulls the snapshot and
 * the change stream, commits each part to the kernel as it arrives, and at
 * the Final lifts the drop once the readiness policy is met.
 *
 * Only entries that involve the VM's own addresses (and zone, mark) are
 * accepted; the rest are counted as refused and never reach the kernel.
 * What was created is remembered in `imported`, so a failure removes
 * exactly that and nothing else.
 */
export class DestinationMigration {
  private readonly filter: FlowFilter;
  private readonly imported: ConnectionTable;
  private readonly progress: ImportProgress = {
    snapshotApplied: false,
    finalApplied: false,
    finalEstablishedApplied: false,
    announced: null,
    committed: 0,
  };
  private final: { version: number; digest: Uint8Array } | null = null;
  private waiters: Array<{ resolve: () => void; reject: (e: Error) => void }> = [];
  private cancelTimeout: (() => void) | null = null;
  private ended = false;
  private rolledBack = false;

  constructor(
    readonly session: Session,
    readonly vm: VmSpec,
    private readonly conn: PeerConnection,
    private readonly conntrack: ConntrackPort,
    private readonly blocker: BlockerPort,
    private readonly clock: Clock,
    private readonly log: Log,
    private readonly readiness: Readiness,
    private readonly settings: DestinationSettings,
  ) {
    this.filter = vmFilter(vm);
    this.imported = ConnectionTable.create({ capacity: settings.tableCapacity });
  }

  /** Ask for the state, wait for the Offer (errors here reach the caller of prepare-incoming). */
  async open(): Promise<OfferMessage> {
    this.cancelTimeout = this.clock.after(this.settings.blockTimeoutMs, () => void this.blockTimedOut());
    await this.conn.send({
      kind: MessageKind.Start,
      sessionId: this.session.id,
      vm: this.vm.uuid,
      addresses: vmAddressTexts(this.vm),
      zone: this.vm.zone,
      mark: this.vm.mark,
    });
    const first = await this.conn.receive(this.settings.offerTimeoutMs);
    if (first.kind === MessageKind.Error) throw new Error(`source refused: ${first.text}`);
    if (first.kind !== MessageKind.Offer) throw new Error(`source answered ${MessageKind[first.kind]} instead of an offer`);
    if (first.vm !== this.vm.uuid || first.sessionId !== this.session.id) throw new Error('source offered another VM or session');
    this.progress.announced = first.announcedEntries;
    this.session.moveTo('precopy');
    return first;
  }

  /** Take every message until the session ends; never throws (failures end the session). */
  async run(offer: OfferMessage): Promise<void> {
    const snapshot = new SnapshotDecoder({ maxEntries: this.settings.tableCapacity });
    let received = 0;
    let bytes = 0;
    try {
      for (;;) {
        const m: PeerMessage = await this.conn.receive();
        if (m.kind === MessageKind.SnapshotChunk) {
          snapshot.write(m.bytes);
          bytes += m.bytes.length;
          if (m.last) {
            const decoded = snapshot.end();
            received += decoded.entries;
            this.session.update({ received, bytes });
            await this.apply(decoded.table, false);
            this.progress.snapshotApplied = true;
            this.session.update({ version: offer.snapshotVersion });
            this.session.moveTo('streaming');
            await this.conn.acknowledge(offer.snapshotVersion);
            this.log.info('snapshot imported', { vm: this.vm.uuid, session: this.session.id, entries: decoded.entries, committed: this.progress.committed });
            await this.checkReady();
          }
        } else if (m.kind === MessageKind.Changes || m.kind === MessageKind.Final) {
          if (!this.progress.snapshotApplied) throw new Error(`source sent ${MessageKind[m.kind]} before the snapshot ended`);
          if (m.kind === MessageKind.Final) {
            const digest = createHash('sha256').update(m.bytes).digest();
            if (digest.length !== m.digest.length || !timingSafeEqual(digest, Buffer.from(m.digest))) throw new Error('final delta does not match its digest; nothing of it imported');
          }
          const decoded = decodeSnapshot(m.bytes, { maxEntries: this.settings.tableCapacity });
          received += decoded.entries;
          bytes += m.bytes.length;
          this.session.update({ received, bytes });
          await this.apply(decoded.table, m.kind === MessageKind.Final);
          this.session.update({ version: m.to });
          await this.conn.acknowledge(m.to);
          // fraction:F may be met by changes (more entries committed) before the cut-over.
          if (m.kind === MessageKind.Changes) await this.checkReady();
          if (m.kind === MessageKind.Final) {
            this.progress.finalApplied = true;
            this.session.moveTo('cutover');
            this.log.info('residual delta imported', { vm: this.vm.uuid, session: this.session.id, entries: decoded.entries, version: m.to });
            await this.checkReady();
            // Only now: Load() returns (and QEMU resumes the VM) once the drop is lifted, not while it is being lifted.
            this.final = { version: m.to, digest: Uint8Array.from(m.digest) };
            this.session.moveTo('ready');
            this.settle();
          }
        } else if (m.kind === MessageKind.Close) {
          if (m.reason === CloseReason.Migrated && this.final) break;
          throw new Error(`source ended the session: ${m.text || CloseReason[m.reason]}`);
        } else if (m.kind === MessageKind.Error) {
          throw new Error(`source reported: ${m.text}`);
        } else {
          throw new Error(`unexpected ${MessageKind[m.kind]} from the source`);
        }
      }
    } catch (e) {
      if (!this.final) await this.fail(this.describe(e));
      else this.log.info('peer connection ended after the final delta', { vm: this.vm.uuid, session: this.session.id });
    }
    await this.conn.close().catch(() => undefined);
  }

  private describe(e: unknown): string {
    const msg = e instanceof Error ? e.message : String(e);
    return msg;
  }

  /**
   * Commit a decoded part: live entries of the VM are created (or replace),
   * tombstones delete what we imported before. Established TCP entries go
   * first in the final delta, so `tcp-established` readiness can lift the
   * drop before the rest.
   */
  private async apply(staged: ConnectionTable, final: boolean): Promise<void> {
    const n = Math.max(16, staged.size + staged.tombstones);
    const first = ConnectionTable.create({ capacity: n });
    const rest = ConnectionTable.create({ capacity: n });
    const gone = ConnectionTable.create({ capacity: n });
    let refused = 0;
    const cur = staged.cursor().reset(Scan.Delta, 0, staged.version);
    const v = cur.view;
    while (cur.next()) {
      if (!flowMatches(this.filter, v)) {
        refused++;
        continue;
      }
      if ((v.u8[v.rec + R_FLAGS] & RecordFlag.Live) === 0) {
        if (this.imported.remove(v) >= 0) gone.upsert(v);
        continue;
      }
      const established = v.u8[v.rec + R_L4PROTO] === L4.TCP && v.u8[v.rec + R_PROTO_STATE] === TCP_ESTABLISHED && (v.u8[v.rec + R_FLAGS] & RecordFlag.HasProtoInfo) !== 0;
      (final && established ? first : rest).upsert(v);
    }
    // The import table only needs live entries; free its tombstones now and
    // then (a scan of the table) so heavy churn cannot fill it.
    if (this.imported.tombstones > 4096 && this.imported.tombstones > this.imported.size >> 3) this.imported.reclaim(this.imported.version);
    if (refused > 0) {
      this.session.update({ refused: this.session.info.refused + refused });
      this.log.warn(`refused ${refused} entries that do not belong to the VM`, { vm: this.vm.uuid, session: this.session.id });
    }
    if (gone.size > 0) {
      const r = await this.conntrack.remove({ table: gone });
      const real = r.failures.filter((f) => f.code !== 'ENOENT');
      for (const f of real) this.log.warn(`could not delete ${f.flow}: ${f.reason}`, { vm: this.vm.uuid });
    }
    if (first.size > 0) {
      await this.commit(first);
      this.progress.finalEstablishedApplied = true;
      await this.checkReady();
    } else if (final) this.progress.finalEstablishedApplied = true;
    if (rest.size > 0) await this.commit(rest);
  }

  private async commit(part: ConnectionTable): Promise<void> {
    if (this.ended) throw new Error(`session ${this.session.id} ended; nothing more is imported`);
    const report: WriteReport = await this.conntrack.create({ table: part });
    if (this.ended) {
      // The session failed while this part was on its way in; the rollback did not know of it.
      await this.conntrack.remove({ table: part }).catch((e: Error) => this.log.error(`could not remove entries imported during the rollback: ${e.message}`, { vm: this.vm.uuid }));
      throw new Error(`session ${this.session.id} ended during a commit; its entries were removed`);
    }
    const cur = part.cursor().reset(Scan.Snapshot, 0, part.version);
    while (cur.next()) this.imported.upsert(cur.view);
    this.progress.committed += report.created + report.replaced;
    for (const f of report.failures.slice(0, 10)) this.log.warn(`kernel refused ${f.flow}: ${f.reason}`, { vm: this.vm.uuid, session: this.session.id });
    if (report.failures.length > 10) this.log.warn(`kernel refused ${report.failures.length - 10} more entries`, { vm: this.vm.uuid });
    this.session.update({ committed: this.progress.committed });
  }

  private async checkReady(): Promise<void> {
    if (!this.session.info.blocked || !isReady(this.readiness, this.progress)) return;
    await this.lift();
    this.session.update({ blocked: false, readyAt: this.clock.now() });
    this.session.announceReady();
    this.log.info('state ready; traffic unblocked', { vm: this.vm.uuid, session: this.session.id, committed: this.progress.committed });
  }

  private async lift(): Promise<void> {
    this.cancelTimeout?.();
    this.cancelTimeout = null;
    await this.blocker.unblock(this.vm.uuid);
  }

  private async blockTimedOut(): Promise<void> {
    if (!this.session.info.blocked || this.ended) return;
    if (this.settings.onBlockTimeout === 'open') {
      await this.lift().catch((e: Error) => this.log.error(`could not lift the drop: ${e.message}`, { vm: this.vm.uuid }));
      this.session.update({ blocked: false });
      this.session.failOpen(`state not ready after ${this.settings.blockTimeoutMs / 1000} s; traffic unblocked without it (policy: open)`);
      this.log.warn('block timeout: traffic unblocked before the state was ready', { vm: this.vm.uuid, session: this.session.id });
    } else {
      this.log.warn('block timeout: still waiting for the state; traffic stays blocked (policy: block)', { vm: this.vm.uuid, session: this.session.id });
    }
  }

  /**
   * QEMU's Load(): resolve once the final delta the reference names has been
   * applied (and the drop lifted when the policy allows).
   */
  waitFinal(ref: VmStateReference, timeoutMs: number): Promise<void> {
    if (ref.kind !== 'session') return Promise.resolve();
    if (ref.sessionId !== this.session.id) return Promise.reject(new Error(`vmstate names session ${ref.sessionId}, this VM's session is ${this.session.id}`));
    const check = (): void => {
      if (!this.final) return;
      if (this.final.version !== ref.finalVersion || !timingSafeEqual(Buffer.from(this.final.digest), Buffer.from(ref.digest))) {
        throw new Error(`vmstate names final version ${ref.finalVersion}, the peer channel delivered ${this.final.version} (or another digest)`);
      }
    };
    if (this.final) {
      check();
      return Promise.resolve();
    }
    if (this.ended) return Promise.reject(new Error(`session ${this.session.id} ${this.session.info.error || 'ended'}`));
    return new Promise<void>((resolve, reject) => {
      const cancel = this.clock.after(timeoutMs, () => reject(new FinalTimeoutError(timeoutMs)));
      this.waiters.push({
        resolve: () => {
          cancel();
          try {
            check();
            resolve();
          } catch (e) {
            reject(e as Error);
          }
        },
        reject: (e) => {
          cancel();
          reject(e);
        },
      });
    });
  }

  private settle(error?: Error): void {
    const w = this.waiters;
    this.waiters = [];
    for (const x of w) if (error) x.reject(error);
    else x.resolve();
  }

  /** Fail and roll back: remove what was imported, lift the drop. */
  async fail(reason: string): Promise<void> {
    if (this.ended) return;
    this.ended = true;
    this.session.fail(reason);
    this.log.warn(`session failed: ${reason}; rolling back`, { vm: this.vm.uuid, session: this.session.id });
    this.settle(new Error(reason));
    await this.rollback();
    try {
      await this.conn.send({ kind: MessageKind.Close, reason: CloseReason.Failed, text: reason });
    } catch {
      // the source is gone
    }
    this.conn.destroy();
  }

  private async rollback(): Promise<void> {
    if (this.rolledBack) return;
    this.rolledBack = true;
    this.cancelTimeout?.();
    if (this.imported.size > 0) {
      const r = await this.conntrack.remove({ table: this.imported });
      this.log.info('imported entries removed', { vm: this.vm.uuid, session: this.session.id, deleted: r.deleted });
    }
    await this.blocker.unblock(this.vm.uuid).catch((e: Error) => this.log.error(`could not lift the drop: ${e.message}`, { vm: this.vm.uuid }));
    this.session.update({ blocked: false });
  }

  /** The migration is over (`migrated` keeps the state; `failed` rolls back). */
  async finish(result: 'migrated' | 'failed'): Promise<void> {
    if (result === 'failed') return this.fail('migration failed');
    if (!this.final) return this.fail('finished as migrated before the final delta arrived');
    this.ended = true;
    this.session.closed = true;
    this.cancelTimeout?.();
    if (this.session.info.blocked) {
      // Migrated and complete: whatever the policy, the VM runs here now.
      await this.lift();
      this.session.update({ blocked: false, readyAt: this.session.info.readyAt || this.clock.now() });
    }
    try {
      await this.conn.send({ kind: MessageKind.Close, reason: CloseReason.Migrated, text: 'migrated' });
    } catch {
      // the source already closed
    }
    await this.conn.close().catch(() => undefined);
  }
}
