import { createHash, timingSafeEqual } from 'node:crypto';
import { ConnectionTable, Scan } from './connection-table';
import { isEstablishedTcp } from './established-tcp';
import { ExtFlag, R_EXT, R_FLAGS, RecordFlag, X_PRESENT } from './flow';
import { FlowView } from './flow-view';
import { confine, confineKey, ownsOriginalTuple, Refusal, refusalSummary, REFUSAL_KINDS } from './import-confinement';
import { CloseReason, MessageKind, OfferMessage, PeerMessage } from './peer-protocol';
import { BlockerPort } from './ports/blocker-port';
import { Clock } from './ports/clock';
import { ConntrackPort, WriteReport, WriteSelection } from './ports/conntrack-port';
import { JournalStore } from './ports/journal-store';
import { Log } from './ports/log-port';
import { PeerConnection } from './ports/peer-port';
import { ImportProgress, isReady, Readiness } from './readiness';
import { Session } from './session';
import { decodeSnapshot, SnapshotDecoder } from './snapshot-decoder';
import { SnapshotKind } from './snapshot-format';
import { VmSpec, vmAddressTexts } from './vm';
import { VmStateReference } from './vmstate-reference';

export interface DestinationSettings {
  tableCapacity: number;
  blockTimeoutMs: number;
  onBlockTimeout: 'open' | 'block';
  /** How long to wait for the source's Offer. */
  offerTimeoutMs: number;
  /**
   * Dial the source again and ask it to go on after `lastVersion` (a
   * Resume, answered by an Offer that says so); absent: a lost link ends
   * the session. Rejects with ResumeRefusedError when the source cannot.
   */
  resume?: (lastVersion: number) => Promise<PeerConnection>;
  /** Pause between two tries to resume (default 1 s). */
  resumeRetryMs?: number;
}

/** The source answered a Resume with "cannot": trying again is no use. */
export class ResumeRefusedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ResumeRefusedError';
  }
}


/**
 * Snapshot parts queued for the kernel at once. Two: the writers start the
 * next part the moment they finish one (at 1M entries, waiting for the
 * decoder at each boundary left the kernel idle ~5 ms per part, 6% of the
 * import), and at most one part's memory is decoded ahead.
 */
const PARTS_IN_FLIGHT = 2;

/**
 * What the session did with one slot of its table (bits of `state`): whether
 * a create under the slot's key went to the kernel, and which commit in
 * progress (or to come) selects it.
 */
const enum Slot {
  /** A create under this key was sent (whether the kernel took it or not): a rollback deletes it. */
  Imported = 1,
  /** Selected by the commit in progress: established TCP of the final delta. */
  First = 2,
  /** Selected by the commit in progress. */
  Rest = 4,
  /** A related entry of the snapshot: committed after the last chunk, when every master is in. */
  Deferred = 8,
}

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
 * The snapshot is committed chunk by chunk while it streams in: each chunk
 * is decoded straight into the session table, and the entries it added are
 * created at once, so kernel writes overlap with the network and with the
 * source's encoding. A malformed entry is refused before anything after it
 * is committed; the checksum covers the whole snapshot and is only known at
 * its end (TLS protects the bytes in transit): if it does not match, the
 * session fails and what was committed is removed again. Related entries
 * (with a master) are held back to the end of the snapshot, since their
 * master may come in a later chunk.
 *
 * Only entries that are the VM's by the import confinement rule
 * (import-confinement.ts) are accepted; the rest are counted as refused,
 * logged by reason, and never reach the kernel.
 * The session table holds every entry received (refused ones too, which are
 * never written); `state` marks, slot by slot, which keys were created, so
 * a failure removes exactly that and nothing else.
 */
export class DestinationMigration {
  /** Refused entries by Refusal reason since the last log line. */
  private readonly refusals = new Uint32Array(REFUSAL_KINDS);
  /** The snapshot as decoded, then every accepted change: the session's view of the VM's entries. */
  private readonly table: ConnectionTable;
  /** Slot bits of `table` (see Slot). */
  private readonly state: Uint8Array;
  /** Slots of related snapshot entries waiting for the end of the snapshot. */
  private deferred: number[] = [];
  /** Slots below this were looked at by earlier snapshot parts. */
  private scannedTo = 0;
  /** Some create was sent (a rollback has something to remove). */
  private anyImported = false;
  private readonly progress: ImportProgress = {
    snapshotApplied: false,
    finalApplied: false,
    finalEstablishedApplied: false,
    establishedApplied: false,
    announced: null,
    committed: 0,
  };
  private final: { version: number; digest: Uint8Array } | null = null;
  private waiters: Array<{ resolve: () => void; reject: (e: Error) => void }> = [];
  private cancelTimeout: (() => void) | null = null;
  private ended = false;
  private rolledBack = false;
  /** Creates on their way to the kernel: a rollback waits for them, so it removes what they wrote. */
  private readonly writes = new Set<Promise<WriteReport>>();

  constructor(
    readonly session: Session,
    readonly vm: VmSpec,
    private conn: PeerConnection,
    private readonly conntrack: ConntrackPort,
    private readonly blocker: BlockerPort,
    private readonly clock: Clock,
    private readonly log: Log,
    private readonly readiness: Readiness,
    private readonly settings: DestinationSettings,
    private readonly journal: JournalStore,
  ) {
    // Every snapshot entry may carry an extension; untouched capacity costs address space only.
    this.table = ConnectionTable.create({ capacity: settings.tableCapacity, extCapacity: settings.tableCapacity });
    this.state = new Uint8Array(this.table.capacity);
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
    if (first.cutoverPath) this.session.update({ path: first.cutoverPath });
    this.session.moveTo('precopy');
    return first;
  }

  /** Take every message until the session ends; never throws (failures end the session). */
  async run(offer: OfferMessage): Promise<void> {
    const table = this.table;
    // A snapshot holds no deletions: a delta here is refused, so no part can delete what another part is still creating.
    const snapshot = new SnapshotDecoder({ maxEntries: this.settings.tableCapacity, staging: table, kind: SnapshotKind.Snapshot });
    /** Version of the session table up to which the snapshot is committed. */
    let committedTo = table.version;
    let received = 0;
    let bytes = 0;
    let refused = 0;
    /** Version up to which the source handed over changes during the snapshot (a switchover came first). */
    let handedTo = 0;
    let handedOver = false;
    /** A snapshot chunk came after the hand-over: it is complete. */
    let handoverDone = false;
    /**
     * Parts of the snapshot on their way into the kernel, oldest first. The
     * kernel writes run on their own threads: the next part is received,
     * decoded and queued behind the last while it is written, so the
     * writers never wait for the decoder at a part boundary; the oldest is
     * awaited once PARTS_IN_FLIGHT are queued.
     */
    const inFlight: Promise<number>[] = [];
    try {
      for (;;) {
        let m: PeerMessage;
        try {
          m = await this.conn.receive();
        } catch (e) {
          await this.reconnect(e);
          continue;
        }
        // A failure from outside (abort, stop) may have rolled back meanwhile: never touch the table again.
        if (this.ended) throw new Error(`session ${this.session.id} ended; nothing more is imported`);
        if (m.kind === MessageKind.SnapshotChunk && m.established) {
          handoverDone = true;
          // After a switchover during the snapshot: every established TCP
          // entry of the VM's state at its stop is here once what came
          // before this mark is in the kernel.
          while (inFlight.length > 0) refused += await (inFlight.shift() as Promise<number>);
          if (handedOver && !this.progress.establishedApplied) {
            this.progress.establishedApplied = true;
            this.log.info('established TCP entries imported ahead of the snapshot\'s rest', { vm: this.vm.uuid, session: this.session.id, committed: this.progress.committed });
            await this.checkReady();
          }
        } else if (m.kind === MessageKind.SnapshotChunk) {
          if (handedOver) handoverDone = true;
          // Throws on the first malformed entry, before anything after it is committed.
          snapshot.write(m.bytes);
          bytes += m.bytes.length;
          // The last part goes in only once the trailer's count and CRC matched.
          const decoded = m.last ? snapshot.end() : null;
          if (decoded) received += decoded.entries;
          this.session.update({ received, bytes });
          const part = this.applySnapshotPart(committedTo, table.version);
          // Awaited later; a failure before then must not go unhandled.
          part.catch(() => undefined);
          inFlight.push(part);
          committedTo = table.version;
          // After the last chunk, every part must be in.
          while (inFlight.length >= (decoded ? 1 : PARTS_IN_FLIGHT)) refused += await (inFlight.shift() as Promise<number>);
          if (!decoded) continue;
          if (refused > 0) this.logRefusals(refused);
          // Every master of the snapshot is in: now its related entries.
          if (this.deferred.length > 0) {
            // A key that came twice may be listed twice; it is created once.
            const related = [...new Set(this.deferred)];
            this.deferred = [];
            await this.commit(0, table.version, Slot.Deferred, related);
          }
          this.progress.snapshotApplied = true;
          const version = Math.max(offer.snapshotVersion, handedTo);
          this.session.update({ version });
          this.session.moveTo('streaming');
          await this.conn.acknowledge(version);
          this.log.info('snapshot imported', { vm: this.vm.uuid, session: this.session.id, entries: decoded.entries, committed: this.progress.committed });
          await this.checkReady();
        } else if (m.kind === MessageKind.Changes && !this.progress.snapshotApplied) {
          // A switchover came before the snapshot ended: the source hands
          // over what changed since the snapshot's version ahead of its rest
          // (snapshot-shipment.ts). Once, right after the snapshot's version.
          // Contiguous when it takes more than one frame, and no chunk between them.
          if (handoverDone || m.from !== (handedOver ? handedTo : offer.snapshotVersion)) throw new Error(`source sent changes (${m.from}, ${m.to}] during the snapshot of version ${offer.snapshotVersion}`);
          const decoded = decodeSnapshot(m.bytes, { maxEntries: this.settings.tableCapacity });
          // A deletion here may name an entry a part still on its way in creates: those land first.
          while (inFlight.length > 0) refused += await (inFlight.shift() as Promise<number>);
          received += decoded.entries;
          bytes += m.bytes.length;
          this.session.update({ received, bytes });
          await this.apply(decoded.table, false);
          // The snapshot's next part starts after these versions.
          committedTo = table.version;
          handedTo = m.to;
          handedOver = true;
          // Not acknowledged before the snapshot's end: an acknowledgement past the snapshot's version says "the whole snapshot is in".
          await this.checkReady();
        } else if (m.kind === MessageKind.Changes || m.kind === MessageKind.Final) {
          if (!this.progress.snapshotApplied) throw new Error(`source sent ${MessageKind[m.kind]} before the snapshot ended`);
          if (m.kind === MessageKind.Final) {
            const digest = createHash('sha256').update(m.bytes).digest();
            if (digest.length !== m.digest.length || !timingSafeEqual(digest, Buffer.from(m.digest))) throw new Error('final delta does not match its digest; nothing of it imported');
          }
          const decoded = decodeSnapshot(m.bytes, { maxEntries: this.settings.tableCapacity });
          received += decoded.entries;
          bytes += m.bytes.length;
          if (m.kind === MessageKind.Changes) {
            this.session.update({ received, bytes });
            await this.apply(decoded.table, false);
            this.session.update({ version: m.to });
            await this.conn.acknowledge(m.to);
            // fraction:F may be met by changes (more entries committed) before the cut-over.
            await this.checkReady();
          } else {
            // The VM is paused from here until Load() returns: the kernel
            // writes and the lift come first; the session's D-Bus signals
            // are held until Load() has answered.
            this.session.hold();
            try {
              this.session.update({ received, bytes });
              await this.apply(decoded.table, true);
              this.progress.finalApplied = true;
              this.session.moveTo('cutover');
              this.log.info('residual delta imported', { vm: this.vm.uuid, session: this.session.id, entries: decoded.entries, version: m.to });
              await this.checkReady();
              // Only now: Load() returns (and QEMU resumes the VM) once the drop is lifted, not while it is being lifted.
              this.final = { version: m.to, digest: Uint8Array.from(m.digest) };
              // The VM may resume here on this state: a restart after a crash keeps it.
              this.noteReady();
              this.session.update({ version: m.to });
              this.session.moveTo('ready');
              this.settle();
            } finally {
              // After the Load() reply has gone out (its promise settles in this turn).
              this.session.releaseSoon();
            }
            await this.conn.acknowledge(m.to);
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
      // Parts still on their way in finish first (commit() removes them again once the session has ended).
      for (const part of inFlight) await part.catch(() => undefined);
      if (!this.final) await this.fail(this.describe(e));
      else this.log.info('peer connection ended after the final delta', { vm: this.vm.uuid, session: this.session.id });
    }
    await this.conn.close().catch(() => undefined);
  }

  /**
   * The link to the source failed under a receive. After the snapshot, and
   * before the final delta, the session resumes over a new connection from
   * the last version it applied: tried every second until the block
   * timeout has passed since the loss (the drop stays meanwhile). Anything
   * else rethrows the failure, which ends the session.
   */
  private async reconnect(failure: unknown): Promise<void> {
    // A receive fails with its connection; a connection still open failed for another reason.
    const info = await Promise.race([this.conn.closed, new Promise<null>((r) => this.clock.after(1000, () => r(null)))]);
    if (info === null) throw failure;
    const resume = this.settings.resume;
    // A source that means to end says so (Close) first: a connection that just
    // ends (a reset, a silent link, a relay that died) may come back.
    if (this.ended || !resume || !this.progress.snapshotApplied || this.final) throw failure;
    const why = info.error ? info.error.message : 'the connection ended without a Close';
    const from = this.session.info.version;
    const deadline = this.clock.now() + this.settings.blockTimeoutMs;
    const fields = { vm: this.vm.uuid, session: this.session.id, from };
    this.log.warn(`peer link to the source lost (${why}); resuming from version ${from}, the drop stays`, fields);
    let last = why;
    for (let attempt = 1; ; attempt++) {
      if (this.ended) throw new Error(`session ${this.session.id} ended; nothing more is imported`);
      try {
        const conn = await resume(from);
        if (this.ended) {
          conn.destroy();
          throw new Error(`session ${this.session.id} ended; nothing more is imported`);
        }
        this.conn = conn;
        this.log.info('session resumed', { ...fields, attempts: attempt });
        return;
      } catch (e) {
        if (e instanceof ResumeRefusedError) throw new Error(`peer link lost (${why}) and the source cannot resume: ${e.message}`);
        last = (e as Error).message;
      }
      if (this.clock.now() >= deadline) throw new Error(`peer link lost (${why}) and not resumed within ${this.settings.blockTimeoutMs / 1000} s (last try: ${last})`);
      await new Promise<void>((r) => this.clock.after(this.settings.resumeRetryMs ?? 1000, r));
    }
  }

  private noteReady(): void {
    void this.journal
      .write({ session: this.session.id, phase: 'ready', since: this.session.info.createdAt, vm: this.vm })
      .catch((e: Error) => this.log.error(`session journal: ${e.message}`, { vm: this.vm.uuid }));
  }

  /** The session is over and the kernel holds what it should: nothing to undo after a crash. */
  private async forgetJournal(): Promise<void> {
    await this.journal.forget(this.vm.uuid).catch((e: Error) => this.log.error(`session journal: ${e.message}`, { vm: this.vm.uuid }));
  }

  private describe(e: unknown): string {
    const msg = e instanceof Error ? e.message : String(e);
    return msg;
  }

  /**
   * Commit what the snapshot decoder added to the session table in (from,
   * upTo]: entries of the VM are created (straight from the table, no copy),
   * related ones are held back for the end of the snapshot, the rest is
   * refused. Returns how many were refused. The commit is sent before this
   * returns its promise (no await comes first), so the next part is always
   * scanned after this one's slots were picked.
   */
  private async applySnapshotPart(from: number, upTo: number): Promise<number> {
    if (upTo <= from) return 0;
    const t = this.table;
    const st = this.state;
    const rest: number[] = [];
    let refused = 0;
    // The decoder puts new keys into fresh slots, one version each: look past
    // what earlier parts reached, and scan the whole table only if that does
    // not account for every version (a key that came again).
    const cur = t.cursor().reset(Scan.Delta, from, upTo);
    cur.slot = this.scannedTo - 1;
    const found: number[] = [];
    while (cur.next()) found.push(cur.slot);
    this.scannedTo = cur.slot;
    if (found.length !== upTo - from) {
      found.length = 0;
      cur.reset(Scan.Delta, from, upTo);
      while (cur.next()) found.push(cur.slot);
    }
    const v = new FlowView(t.u8, t.u16, t.u32);
    for (const s of found) {
      const rec = t.recordOffset(s);
      const ext = t.u32[(rec + R_EXT) >> 2];
      v.at(rec, ext === 0 ? -1 : t.extOffset(ext - 1));
      // The decoder refuses deltas and tombstones in a snapshot: a part only ever adds.
      if ((t.u8[v.rec + R_FLAGS] & RecordFlag.Live) === 0) throw new Error('snapshot part holds a deletion; nothing of it imported');
      if (this.refuses(v)) {
        refused++;
        // An earlier version under the same key may be in the kernel already: it stays ours to remove.
        st[s] &= Slot.Imported;
        continue;
      }
      if (ext !== 0 && (t.u32[(t.extOffset(ext - 1) + X_PRESENT) >> 2] & ExtFlag.Master) !== 0) {
        st[s] = (st[s] & Slot.Imported) | Slot.Deferred;
        this.deferred.push(s);
        continue;
      }
      st[s] = (st[s] & Slot.Imported) | Slot.Rest;
      rest.push(s);
    }
    if (refused > 0) this.session.update({ refused: this.session.info.refused + refused });
    if (rest.length > 0) await this.commit(from, upTo, Slot.Rest, rest);
    return refused;
  }

  /**
   * Commit a decoded change set: live entries of the VM go into the session
   * table and are created (or replace), tombstones delete what we imported
   * under their key. Established TCP entries go first in the final delta,
   * so `tcp-established` readiness can lift the drop before the rest.
   */
  private async apply(staged: ConnectionTable, final: boolean): Promise<void> {
    const t = this.table;
    const st = this.state;
    const from = t.version;
    const first: number[] = [];
    const rest: number[] = [];
    let gone: ConnectionTable | null = null;
    let refused = 0;
    const cur = staged.cursor().reset(Scan.Delta, 0, staged.version);
    const v = cur.view;
    while (cur.next()) {
      if ((v.u8[v.rec + R_FLAGS] & RecordFlag.Live) === 0) {
        // Only what this session created under the key is deleted: never an entry B had of its own.
        const s = t.find(v);
        if (s >= 0 && (st[s] & Slot.Imported) !== 0) {
          (gone ??= ConnectionTable.create({ capacity: Math.max(16, staged.tombstones) })).upsert(v);
          t.remove(v);
          st[s] = 0;
        } else if (this.refuses(v, true)) refused++;
        else if (s >= 0) {
          // Not in the kernel yet (a related entry held for the snapshot's end): it never goes.
          t.remove(v);
          st[s] = 0;
        }
        continue;
      }
      if (this.refuses(v)) {
        refused++;
        continue;
      }
      const established = isEstablishedTcp(v);
      const s = t.upsert(v);
      if (!this.progress.snapshotApplied && v.ext >= 0 && (v.u32[(v.ext + X_PRESENT) >> 2] & ExtFlag.Master) !== 0) {
        // Changes handed over during the snapshot: the master may be in its rest.
        st[s] = (st[s] & Slot.Imported) | Slot.Deferred;
        this.deferred.push(s);
      } else if (final && established) {
        st[s] = (st[s] & Slot.Imported) | Slot.First;
        first.push(s);
      } else {
        st[s] = (st[s] & Slot.Imported) | Slot.Rest;
        rest.push(s);
      }
    }
    const upTo = t.version;
    // Deleted keys stay as tombstones; free them now and then (a scan of the
    // table) so heavy churn cannot fill it. Their slots hold nothing of ours.
    if (t.tombstones > 4096 && t.tombstones > t.size >> 3) t.reclaim(upTo);
    if (refused > 0) {
      this.session.update({ refused: this.session.info.refused + refused });
      this.logRefusals(refused);
    }
    if (gone) await this.removeGone(gone);
    if (first.length > 0) {
      await this.commit(from, upTo, Slot.First, first);
      this.progress.finalEstablishedApplied = true;
      await this.checkReady();
    } else if (final) this.progress.finalEstablishedApplied = true;
    if (rest.length > 0) await this.commit(from, upTo, Slot.Rest, rest);
  }

  /** True (and counted by reason) when the entry is not the VM's to import. */
  private refuses(v: FlowView, deletion = false): boolean {
    const why = deletion ? confineKey(this.vm, v) : confine(this.vm, v);
    if (why === Refusal.Accepted) return false;
    this.refusals[why]++;
    return true;
  }

  private logRefusals(refused: number): void {
    this.log.warn(`refused ${refused} entries that do not belong to the VM: ${refusalSummary(this.refusals)}`, { vm: this.vm.uuid, session: this.session.id });
    this.refusals.fill(0);
  }

  private async removeGone(gone: ConnectionTable): Promise<void> {
    const r = await this.conntrack.remove({ table: gone });
    const real = r.failures.filter((f) => f.code !== 'ENOENT');
    for (const f of real) this.log.warn(`could not delete ${f.flow}: ${f.reason}`, { vm: this.vm.uuid });
  }

  /**
   * Create the session table's records in (from, upTo] whose slot carries
   * `mark` (`slots` lists them). They count as imported from the moment the
   * create is sent: the next snapshot part is scanned while this one is
   * still on its way in, and a deletion there must know what this one
   * brings.
   */
  private async commit(from: number, upTo: number, mark: Slot, slots: number[]): Promise<void> {
    if (this.ended) throw new Error(`session ${this.session.id} ended; nothing more is imported`);
    const st = this.state;
    const picked: number[] = [];
    for (const s of slots) {
      if ((st[s] & mark) === 0) continue;
      st[s] = (st[s] & ~mark) | Slot.Imported;
      picked.push(s);
    }
    if (picked.length === 0) return;
    this.anyImported = true;
    // An entry that is the VM's only through its NAT binding never replaces what holds its original tuple.
    const selection: WriteSelection = { table: this.table, from, upTo, slots: picked, keepExisting: (v) => !ownsOriginalTuple(this.vm, v) };
    const write = this.conntrack.create(selection);
    this.writes.add(write);
    let report: WriteReport;
    try {
      report = await write;
    } finally {
      this.writes.delete(write);
    }
    // The session failed while this part was on its way in; the rollback waited for it and removes it.
    if (this.ended) throw new Error(`session ${this.session.id} ended during a commit; its entries are removed with the rest`);
    // A create the kernel refused made nothing: a rollback must not delete
    // the entry that holds its key (a flow of the host's own). Only a lost
    // answer (ENOBUFS) leaves it unknown, and stays marked.
    let collisions = 0;
    for (const f of report.failures) {
      if (f.code === 'ENOBUFS') continue;
      st[f.slot] &= ~Slot.Imported;
      if (f.code === 'EEXIST') collisions++;
    }
    if (collisions > 0) {
      this.session.update({ refused: this.session.info.refused + collisions });
      this.log.warn(`refused ${collisions} entries whose original tuple an entry that is not the VM's already holds; those entries are left alone`, { vm: this.vm.uuid, session: this.session.id });
    }
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
    // During the final the VM is paused until Load() returns.
    await this.blocker.unblock(this.vm.uuid, { paused: this.progress.finalApplied || this.progress.finalEstablishedApplied || this.progress.establishedApplied });
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
   * QEMU resumed the VM here before its state was in (Load() answered at its
   * bound): its traffic stays dropped until the readiness policy is met or
   * the block timeout applies.
   */
  resumedBlocked(boundMs: number): void {
    this.log.warn(`QEMU resumes the VM before its state is in (Load() answered after ${boundMs} ms): its traffic stays blocked until the state is ready`, {
      vm: this.vm.uuid,
      session: this.session.id,
      committed: this.progress.committed,
    });
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
      // A reference without a digest came from a Save() that answered before
      // the pre-copy ended: the Final covers at least the version it names.
      const deferred = ref.digest.length === 0;
      const versionOk = deferred ? this.final.version >= ref.finalVersion : this.final.version === ref.finalVersion;
      if (!versionOk || (!deferred && !timingSafeEqual(Buffer.from(this.final.digest), Buffer.from(ref.digest)))) {
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
    // No create starts once the session has ended; the ones under way land first, then everything goes.
    while (this.writes.size > 0) await Promise.allSettled([...this.writes]);
    if (this.anyImported) {
      const st = this.state;
      const r = await this.conntrack.remove({ table: this.table, filter: (_v, s) => (st[s] & Slot.Imported) !== 0 });
      this.log.info('imported entries removed', { vm: this.vm.uuid, session: this.session.id, deleted: r.deleted });
    }
    await this.blocker.unblock(this.vm.uuid).catch((e: Error) => this.log.error(`could not lift the drop: ${e.message}`, { vm: this.vm.uuid }));
    this.session.update({ blocked: false });
    await this.forgetJournal();
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
    await this.forgetJournal();
    try {
      await this.conn.send({ kind: MessageKind.Close, reason: CloseReason.Migrated, text: 'migrated' });
    } catch {
      // the source already closed
    }
    await this.conn.close().catch(() => undefined);
  }
}
