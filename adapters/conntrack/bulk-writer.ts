/**
 * Bulk writer: creates, replaces and deletes many kernel entries with few
 * syscalls, and matches every answer to its entry by sequence number.
 *
 * How a batch works (and why):
 * - Up to a thousand-odd requests are encoded into one preallocated buffer
 *   and sent with one send(); the kernel processes them all inside that
 *   syscall (ctnetlink requests run under one mutex, so a second socket on
 *   another thread buys little kernel parallelism).
 * - Only the last request asks for an ACK. Without NLM_F_ACK the kernel still
 *   answers every failure with an NLMSG_ERROR carrying the request's sequence
 *   number, so success is silence and the last ACK is the batch's barrier.
 * - Every answer is queued into our receive buffer at once, and an error
 *   echoes its whole request (~1.3 KB of buffer each). A batch is therefore
 *   never larger than the receive buffer can hold if every request fails;
 *   otherwise answers would be dropped (ENOBUFS) and failures could go
 *   unreported.
 * - Replace: create with NLM_F_CREATE|NLM_F_EXCL; on EEXIST the next batch
 *   carries a delete and a second create for that entry, unless the caller
 *   said to keep what exists for it (an import whose entry is the VM's only
 *   through NAT may collide with a flow of the host's own): then EEXIST is
 *   its failure and the existing entry stays.
 */
import { ConnectionTable } from '../../plugin/connection-table';
import { R_EXT, R_SEQ } from '../../plugin/flow';
import { FlowView } from '../../plugin/flow-view';
import { WriteReport } from '../../plugin/ports/conntrack-port';
import { CtnetlinkSocket } from './ctnetlink-socket';
import { FlowEncoder, hasLabels, MAX_MESSAGE_BYTES } from './flow-encoder';
import { KernelTurn } from './kernel-turn';
import { Errno, NlmFlag } from './netlink-message';
import { WriteStep, writeFailure } from './write-failure';

/** Queue-buffer cost the kernel charges per error answer (skb truesize of a ~200-byte echo), bytes. */
export const ERROR_ANSWER_BYTES = 1536;
/** Default largest batch (requests per send). */
export const DEFAULT_BATCH = 2048;
/** Largest datagram we send (bounded by SO_SNDBUF too). */
const MAX_SEND_BYTES = 1 << 20;

const enum Op {
  Create = 0,
  /** Second create after deleting an existing entry (replace). */
  Recreate = 1,
  /** Delete before a Recreate; its answer is informative only. */
  ReplaceDelete = 2,
  Labels = 3,
  Delete = 4,
}

/** One batch in flight: its requests, and the answers that came back. */
class Batch {
  first = 0;
  count = 0;
  uncertain = false;
  settled: Promise<void> = Promise.resolve();
  resolve: (() => void) | null = null;
  readonly kind: Uint8Array;
  readonly slotOf: Int32Array;
  readonly errnos: Int32Array;
  constructor(readonly out: Buffer, size: number) {
    this.kind = new Uint8Array(size);
    this.slotOf = new Int32Array(size);
    this.errnos = new Int32Array(size);
  }
}

/**
 * Writes many table records to the kernel; one per socket (and thread).
 * Two batches are in flight at a time: the next one is sent before the
 * previous one's answers are read, so the kernel never waits for the event
 * loop (each batch is sized so that both can fail entirely without
 * overrunning the receive buffer).
 */
export class BulkWriter {
  private readonly encoder = new FlowEncoder();
  private readonly maxOps: number;
  private readonly batches: [Batch, Batch];
  private view: FlowView;
  private turn = 0;

  constructor(
    private readonly sock: CtnetlinkSocket,
    private table: ConnectionTable,
    batch = DEFAULT_BATCH,
    /** Shared with the other writer threads: one send() in the kernel at a time (kernel-turn.ts). */
    private readonly kernelTurn: KernelTurn | null = null,
  ) {
    const byRecv = Math.floor(sock.recvBufferSize / (2 * ERROR_ANSWER_BYTES));
    this.maxOps = Math.max(4, Math.min(batch, byRecv));
    const bytes = Math.min(MAX_SEND_BYTES, Math.max(4096, sock.sendBufferSize - 1024));
    this.batches = [new Batch(Buffer.allocUnsafe(bytes), this.maxOps), new Batch(Buffer.allocUnsafe(bytes), this.maxOps)];
    this.view = new FlowView(table.u8, table.u16, table.u32);
    sock.handlers.ack = (seq, errno) => this.answer(seq, errno);
    sock.handlers.overrun = () => this.overrun();
  }

  /** Write from another table from now on (a writer thread keeps one writer and its buffers). */
  useTable(table: ConnectionTable): void {
    this.table = table;
    this.view = new FlowView(table.u8, table.u16, table.u32);
  }

  /** Requests per batch this writer uses (bounded by the receive buffer). */
  get batchSize(): number {
    return this.maxOps;
  }

  /** Create (or replace) the entries in `slots`, in order; fills `report`. */
  async create(slots: ArrayLike<number>, report: WriteReport, onBatch?: (done: number) => void, keep: ReadonlySet<number> | null = null): Promise<void> {
    const again: number[] = [];
    this.undo = [];
    this.keep = keep;
    await this.pass(Array.from(slots), Op.Create, report, again, onBatch);
    this.keep = null;
    if (again.length > 0) await this.pass(again, Op.Recreate, report, []);
    // An entry the kernel created without its labels is not the entry we
    // were given: take it out again rather than leave it half-applied.
    if (this.undo.length > 0) {
      const undo = this.undo;
      this.undo = [];
      await this.pass(undo, Op.Delete, { created: 0, replaced: 0, deleted: 0, failures: [] }, []);
    }
  }

  /** Slots of the create in progress whose existing kernel entry is never replaced. */
  private keep: ReadonlySet<number> | null = null;

  /** Entries created whose labels the kernel refused; deleted after the create passes. */
  private undo: number[] = [];

  /** Delete the entries in `slots`; absent ones are failures with ENOENT. */
  async remove(slots: ArrayLike<number>, report: WriteReport): Promise<void> {
    await this.pass(Array.from(slots), Op.Delete, report, []);
  }

  private at(slot: number): FlowView {
    const t = this.table;
    const rec = t.recordOffset(slot);
    const ext = t.u32[(rec + R_EXT) >> 2];
    return this.view.at(rec, ext === 0 ? -1 : t.extOffset(ext - 1));
  }

  private async pass(queue: number[], mode: Op, report: WriteReport, again: number[], onBatch?: (done: number) => void): Promise<void> {
    let prev: Batch | null = null;
    let done = 0;
    for (let i = 0; i < queue.length; ) {
      const b = this.batches[this.turn++ & 1];
      const taken = this.fill(b, queue, i, mode);
      i += taken;
      if (b.count > 0) this.send(b);
      if (prev !== null) {
        await prev.settled;
        done += this.settle(prev, report, again);
        onBatch?.(done);
      }
      prev = b.count > 0 ? b : null;
    }
    if (prev !== null) {
      await prev.settled;
      done += this.settle(prev, report, again);
      onBatch?.(done);
    }
  }

  private lastEnd = 0;

  /** The kernel processes the whole batch inside this call. */
  private send(b: Batch): void {
    const turn = this.kernelTurn;
    if (turn === null) {
      this.sock.send(b.out.subarray(0, this.lastEnd));
      return;
    }
    turn.take();
    try {
      this.sock.send(b.out.subarray(0, this.lastEnd));
    } finally {
      turn.give();
    }
  }

  /** Encode requests for queue[from..] into b; returns how many entries it took. */
  private fill(b: Batch, queue: number[], from: number, mode: Op): number {
    const buf = b.out;
    const limit = buf.length - 3 * MAX_MESSAGE_BYTES;
    const first = this.sock.reserve(this.maxOps);
    const t = this.table;
    this.fN = 0;
    this.fOff = 0;
    this.fLast = 0;
    let taken = 0;
    while (from + taken < queue.length && this.fN + 3 <= this.maxOps && this.fOff < limit) {
      const slot = queue[from + taken];
      const rec = t.recordOffset(slot);
      const seqI = (rec + R_SEQ) >> 2;
      let seq = t.waitStable(rec);
      const n0 = this.fN;
      const off0 = this.fOff;
      const last0 = this.fLast;
      this.encodeSlot(b, slot, mode, first);
      // Another thread may write the table meanwhile (a writer thread encodes
      // while the decoder fills the next part): a record that changed while
      // it was encoded is encoded again.
      while (Atomics.load(t.u32, seqI) !== seq) {
        seq = t.waitStable(rec);
        this.fN = n0;
        this.fOff = off0;
        this.fLast = last0;
        this.encodeSlot(b, slot, mode, first);
      }
      taken++;
    }
    const n = this.fN;
    b.first = first;
    b.count = n;
    b.uncertain = false;
    b.errnos.fill(0, 0, n);
    this.lastEnd = this.fOff;
    if (n > 0) {
      const last = this.fLast;
      buf.writeUInt16LE(buf.readUInt16LE(last + 6) | NlmFlag.Ack, last + 6);
      b.settled = new Promise<void>((resolve) => {
        b.resolve = resolve;
      });
    }
    return taken;
  }

  /** Where fill() is: requests so far, end of the encoded bytes, start of the last request. */
  private fN = 0;
  private fOff = 0;
  private fLast = 0;

  /** Encode the requests for one slot at fOff (request numbers from fN). */
  private encodeSlot(b: Batch, slot: number, mode: Op, first: number): void {
    const buf = b.out;
    const kind = b.kind;
    const slotOf = b.slotOf;
    const base = NlmFlag.Request;
    const v = this.at(slot);
    if (mode === Op.Delete) {
      this.fLast = this.fOff;
      this.fOff = this.encoder.encodeDelete(v, buf, this.fOff, first + this.fN, base);
      kind[this.fN] = Op.Delete;
      slotOf[this.fN++] = slot;
      return;
    }
    if (mode === Op.Recreate) {
      this.fLast = this.fOff;
      this.fOff = this.encoder.encodeDelete(v, buf, this.fOff, first + this.fN, base);
      kind[this.fN] = Op.ReplaceDelete;
      slotOf[this.fN++] = slot;
    }
    this.fLast = this.fOff;
    this.fOff = this.encoder.encodeCreate(v, buf, this.fOff, first + this.fN, base | NlmFlag.Create | NlmFlag.Excl);
    kind[this.fN] = mode;
    slotOf[this.fN++] = slot;
    if (hasLabels(v)) {
      this.fLast = this.fOff;
      this.fOff = this.encoder.encodeLabels(v, buf, this.fOff, first + this.fN, base);
      kind[this.fN] = Op.Labels;
      slotOf[this.fN++] = slot;
    }
  }

  private answer(seq: number, errno: number): void {
    for (const b of this.batches) {
      if (b.resolve === null) continue;
      const idx = (seq - b.first) >>> 0;
      if (idx >= b.count) continue;
      if (errno !== 0) b.errnos[idx] = errno;
      if (idx === b.count - 1) {
        const r = b.resolve;
        b.resolve = null;
        r();
      }
      return;
    }
  }

  private overrun(): void {
    // Answers were dropped: a barrier may never come. Whatever has not
    // answered by the time the queue drains is reported as unknown.
    for (const b of this.batches) {
      if (b.resolve === null) continue;
      b.uncertain = true;
      setTimeout(() => {
        const r = b.resolve;
        b.resolve = null;
        r?.();
      }, 200);
    }
  }

  /** Count and report a batch's outcome; returns how many entries it covered. */
  private settle(b: Batch, report: WriteReport, again: number[]): number {
    const kind = b.kind;
    const errnos = b.errnos;
    const slotOf = b.slotOf;
    let createFailed = false;
    let counted: Op | null = null;
    let entries = 0;
    for (let i = 0; i < b.count; i++) {
      const k = kind[i];
      const e = errnos[i];
      if (k === Op.ReplaceDelete) continue;
      if (k === Op.Labels) {
        if (e !== 0 && !createFailed) {
          report.failures.push(writeFailure(WriteStep.Labels, e, slotOf[i], this.at(slotOf[i])));
          if (counted === Op.Create) report.created--;
          else if (counted === Op.Recreate) report.replaced--;
          this.undo.push(slotOf[i]);
        }
        continue;
      }
      entries++;
      counted = null;
      createFailed = e !== 0;
      const step = k === Op.Delete ? WriteStep.Delete : WriteStep.Create;
      if (e === 0) {
        if (b.uncertain) {
          report.failures.push(writeFailure(step, Errno.ENOBUFS, slotOf[i], this.at(slotOf[i])));
          createFailed = true;
        } else if (k === Op.Create) {
          report.created++;
          counted = Op.Create;
        } else if (k === Op.Recreate) {
          report.replaced++;
          counted = Op.Recreate;
        } else report.deleted++;
      } else if (k === Op.Create && e === Errno.EEXIST && this.keep !== null && this.keep.has(slotOf[i])) {
        report.failures.push({ ...writeFailure(step, e, slotOf[i], this.at(slotOf[i])), reason: "an entry that is not the VM's holds this tuple; left alone" });
      } else if (k === Op.Create && (e === Errno.EEXIST || e === Errno.EAGAIN)) {
        again.push(slotOf[i]);
      } else {
        report.failures.push(writeFailure(step, e, slotOf[i], this.at(slotOf[i])));
      }
    }
    return entries;
  }
}
