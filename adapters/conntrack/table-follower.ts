/**
 * Table follower: keeps a ConnectionTable equal to the kernel's entries that
 * match a filter — initial dump, then new/update/destroy events, and a
 * re-dump with diff whenever the kernel dropped events.
 *
 * Operational catches (why it is built this way):
 * - One socket carries both the dumps and the events. The kernel generates a
 *   dump datagram only when we have read the previous one, so on one socket
 *   every event lands in order with the dump data: a destroy that happens
 *   after an entry was dumped is read after it, never before. (With two
 *   sockets a destroy could be applied before the stale dump copy and the
 *   entry would live on in the table.)
 * - The socket joins the event groups before the first dump request, so no
 *   change between the dump and the subscription is lost.
 * - When the receive buffer is full the kernel drops events and the next
 *   receive fails with ENOBUFS. Then nothing is known about what was lost:
 *   we re-dump; entries the dump does not return (and no event touched
 *   since) become tombstones, changed ones are upserted. Each such repair
 *   is counted (overruns, repaired) and reported through warn().
 * - The kernel marks an entry dying and sends its destroy event before it
 *   unlinks the entry from its hash (a preempted deleter can take a while),
 *   so a dump can still copy the dying entry, even into a datagram queued
 *   after the destroy. A dump copy with the dying status bit, or of a key
 *   destroyed since that dump began, is therefore ignored; a re-created key
 *   arrives by its own NEW event (or, if that was dropped, by the next
 *   repair). Tombstones younger than a running dump are not reclaimed.
 * - This object is the table's only writer (it runs in the feed worker).
 */
import { ConnectionTable } from '../../plugin/connection-table';
import { R_EXT, R_FLAGS, RecordFlag, Status } from '../../plugin/flow';
import { FlowFilter, flowMatches } from '../../plugin/flow-filter';
import { FlowRecord, FlowView } from '../../plugin/flow-view';
import { FeedStats } from '../../plugin/ports/connection-feed';
import { NetlinkFormatError } from './attributes';
import { CtnetlinkSocket } from './ctnetlink-socket';
import { DumpPlan } from './dump-filter';
import { DumpRunner } from './dump-runner';
import { FlowDecoder } from './flow-decoder';
import { mergeEvent, sameFlow } from './flow-merge';
import { CtMsg, messageType } from './netlink-message';

const NLMSG_NOOP = 1;
const NLM_F_REQUEST = 1;
const NLM_F_ACK = 4;

/** Keeps one table in step with the kernel through one socket. */
export class TableFollower {
  readonly stats: FeedStats = { dumped: 0, events: 0, overruns: 0, repaired: 0 };
  private readonly decoder = new FlowDecoder();
  private readonly rec = new FlowRecord();
  private readonly merged = new FlowRecord();
  private readonly stored: FlowView;
  private readonly runner: DumpRunner;
  private seen: Uint8Array | null = null;
  private repairFrom = 0;
  private initialFrom = 0;
  private pendingRepair = false;
  private waitTimer: NodeJS.Timeout | null = null;
  private repairing = false;
  /** Destroy events applied since the running dump began: without any, no dump copy can be stale. */
  private destroyedInDump = 0;
  private stopped = false;
  /** Barriers waiting for their ACK, with how many repairs had started when each was sent. */
  private readonly syncs = new Map<number, { done: () => void; repairsBefore: number }>();
  private repairsStarted = 0;
  private idleWaiters: Array<() => void> = [];

  constructor(
    private readonly sock: CtnetlinkSocket,
    private readonly table: ConnectionTable,
    private readonly filter: FlowFilter,
    private readonly plan: DumpPlan,
    private readonly warn: (message: string) => void,
  ) {
    this.stored = new FlowView(table.u8, table.u16, table.u32);
    this.runner = new DumpRunner(sock, (b, o, e) => this.initialEntry(b, o, e));
    sock.handlers = {
      reply: (b, o, e, s) => void this.runner.reply(b, o, e, s),
      done: (s, e) => void this.runner.done(s, e),
      ack: (s, e) => {
        const synced = this.syncs.get(s);
        if (synced) {
          this.syncs.delete(s);
          synced.done();
        } else void this.runner.ack(s, e);
      },
      event: (b, o, e) => this.event(b, o, e),
      overrun: () => this.overrun(),
      drained: () => this.drained(),
      failure: (err, fatal) => {
        this.warn(`conntrack socket problem: ${err.message}`);
        if (fatal) this.runner.abort(err);
      },
    };
  }

  /** Run the initial dump; resolves when its entries are in the table. */
  async start(): Promise<FeedStats> {
    this.initialFrom = this.table.version;
    this.destroyedInDump = 0;
    this.repairing = true;
    try {
      await this.runner.run(this.plan.requests);
    } finally {
      this.repairing = false;
    }
    return { ...this.stats };
  }

  /**
   * Resolves once every event the kernel queued for us before this call is
   * in the table (and any repair it set off has finished). The barrier is a
   * NOOP request with ACK on the event socket: its answer is queued behind
   * those events, and the reader hands datagrams over in order. A full
   * queue drops that ACK like any event (an overrun, or silently while the
   * socket is still congested from one); a repair that started after the
   * barrier was sent covers it instead (see repair()).
   */
  sync(): Promise<void> {
    const seq = this.sock.reserve(1);
    const msg = Buffer.alloc(16);
    msg.writeUInt32LE(16, 0);
    msg.writeUInt16LE(NLMSG_NOOP, 4);
    msg.writeUInt16LE(NLM_F_REQUEST | NLM_F_ACK, 6);
    msg.writeUInt32LE(seq, 8);
    return new Promise<void>((resolve) => {
      this.syncs.set(seq, {
        repairsBefore: this.repairsStarted,
        done: () => {
          if (!this.repairing && !this.pendingRepair) resolve();
          else this.idleWaiters.push(resolve);
        },
      });
      this.sock.send(msg);
    });
  }

  /** Free tombstones up to `upTo` (every session has shipped them); this thread is the table's writer. */
  reclaim(upTo: number): number {
    // A running dump needs its tombstones to recognise stale copies.
    const from = this.dumpFrom();
    return this.table.reclaim(from < 0 ? upTo : Math.min(upTo, from));
  }

  /** Table version when the running dump began, or -1 when none runs. */
  private dumpFrom(): number {
    if (!this.repairing) return -1;
    return this.seen !== null ? this.repairFrom : this.initialFrom;
  }

  /** True when rec's key was destroyed (is a tombstone) after version `from`. */
  private destroyedSince(rec: FlowView, from: number): boolean {
    if (this.destroyedInDump === 0) return false;
    const t = this.table;
    const slot = t.find(rec);
    if (slot < 0) return false;
    return (t.u8[t.recordOffset(slot) + R_FLAGS] & RecordFlag.Tombstone) !== 0 && t.versionOf(slot) > from;
  }

  /** Stop reacting (the owner closes the socket). */
  stop(): void {
    this.stopped = true;
    if (this.waitTimer) clearTimeout(this.waitTimer);
  }

  private decode(buf: Buffer, off: number, end: number): boolean {
    try {
      this.decoder.decode(buf, off, end, this.rec);
      return true;
    } catch (err) {
      if (err instanceof NetlinkFormatError) {
        this.warn(err.message);
        return false;
      }
      throw err;
    }
  }

  /** Slot of the live table entry with rec's key, viewed by this.stored; -1 if none. */
  private findLive(rec: FlowView): number {
    const t = this.table;
    const slot = t.find(rec);
    if (slot < 0) return -1;
    const r = t.recordOffset(slot);
    if ((t.u8[r + R_FLAGS] & RecordFlag.Live) === 0) return -1;
    const ext = t.u32[(r + R_EXT) >> 2];
    this.stored.at(r, ext === 0 ? -1 : t.extOffset(ext - 1));
    return slot;
  }

  private initialEntry(buf: Buffer, off: number, end: number): void {
    if (!this.decode(buf, off, end)) return;
    const rec = this.rec;
    if ((rec.status & Status.Dying) !== 0) return;
    if (!flowMatches(this.filter, rec) || this.destroyedSince(rec, this.initialFrom)) return;
    this.table.upsert(rec);
    if (this.table.previousVersion <= this.initialFrom) this.stats.dumped++;
  }

  private repairEntry(buf: Buffer, off: number, end: number): void {
    if (!this.decode(buf, off, end)) return;
    const rec = this.rec;
    // Not seen: a live copy in the table is swept as gone.
    if ((rec.status & Status.Dying) !== 0) return;
    const slot = this.findLive(rec);
    const seen = this.seen as Uint8Array;
    if (!flowMatches(this.filter, rec)) {
      if (slot >= 0) {
        this.table.remove(rec);
        this.stats.repaired++;
      }
      return;
    }
    if (slot >= 0) {
      seen[slot] = 1;
      if (sameFlow(this.stored, rec)) return;
    } else if (this.destroyedSince(rec, this.repairFrom)) return;
    seen[this.table.upsert(rec)] = 1;
    this.stats.repaired++;
  }

  private event(buf: Buffer, off: number, end: number): void {
    if (this.stopped || !this.decode(buf, off, end)) return;
    const rec = this.rec;
    this.stats.events++;
    if ((messageType(buf, off) & 0xff) === CtMsg.Delete) {
      if (this.table.remove(rec) >= 0 && this.repairing) this.destroyedInDump++;
      return;
    }
    const slot = this.findLive(rec);
    const next = slot >= 0 ? mergeEvent(this.stored, rec, this.decoder.seen, this.merged) : rec;
    if (flowMatches(this.filter, next)) {
      const s = this.table.upsert(next);
      if (this.seen !== null) this.seen[s] = 1;
    } else if (slot >= 0) {
      this.table.remove(next);
    }
  }

  private overrun(): void {
    if (this.stopped) return;
    this.stats.overruns++;
    this.warn(
      `conntrack event socket overrun (ENOBUFS): the kernel dropped events; re-dumping to repair the table (overrun ${this.stats.overruns})`,
    );
    // Repair only once the queue has drained: until then the kernel may
    // keep dropping events without telling us again.
    this.pendingRepair = true;
    this.watchQuiet(this.sock.received);
  }

  /** Fallback for a queue that emptied on the ENOBUFS itself: 100 ms without a datagram. */
  private watchQuiet(seen: number): void {
    if (this.waitTimer) clearTimeout(this.waitTimer);
    this.waitTimer = setTimeout(() => {
      this.waitTimer = null;
      if (!this.pendingRepair || this.stopped) return;
      if (this.sock.received === seen) this.drained();
      else this.watchQuiet(this.sock.received);
    }, 100);
  }

  private drained(): void {
    if (this.pendingRepair && !this.repairing && !this.stopped) void this.repair();
  }

  /** Re-dump and diff: upsert what changed, tombstone what is gone. */
  private async repair(): Promise<void> {
    this.pendingRepair = false;
    this.repairing = true;
    this.repairsStarted++;
    const t = this.table;
    this.seen ??= new Uint8Array(t.capacity);
    this.seen.fill(0);
    this.repairFrom = t.version;
    this.destroyedInDump = 0;
    this.runner.setSink((b, o, e) => this.repairEntry(b, o, e));
    try {
      await this.runner.run(this.plan.requests);
      const seen = this.seen;
      const cur = t.cursor().reset(0, 0, this.repairFrom);
      while (cur.next()) {
        if (seen[cur.slot] === 0) {
          t.remove(cur.view);
          this.stats.repaired++;
        }
      }
    } catch (err) {
      this.warn(`repair dump failed: ${(err as Error).message}; will retry on the next overrun`);
    } finally {
      this.seen = null;
      this.repairing = false;
      this.runner.setSink((b, o, e) => this.initialEntry(b, o, e));
      // An overrun during this repair asked for another one; its quiet-queue
      // timer may already have fired (and been ignored while we ran), so
      // watch again or the repair would wait for traffic that never comes.
      if (this.pendingRepair && !this.stopped) this.watchQuiet(this.sock.received);
      if (!this.pendingRepair) {
        const waiters = this.idleWaiters;
        this.idleWaiters = [];
        for (const w of waiters) w();
        // Barriers sent before this repair's dump began are covered by it,
        // whether or not their ACK survived the overrun.
        for (const [seq, b] of this.syncs) {
          if (b.repairsBefore >= this.repairsStarted) continue;
          this.syncs.delete(seq);
          b.done();
        }
      }
    }
  }
}
