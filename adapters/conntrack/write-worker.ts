/**
 * Write worker: the thread that runs ConntrackNetlink's bulk writes when it
 * is built with `writerThread` (see write-thread.ts).
 *
 * Why a thread: a create costs the kernel ≈1–2 µs per entry inside our
 * send() plus the encoding before it, all on the calling thread. A daemon
 * importing a snapshot would otherwise decode the next part and write the
 * last one one after the other; here the decoder's thread decodes while
 * this one writes, straight from the same SharedArrayBuffer table (reads
 * use the records' seqlocks: the decoder may be writing other records).
 *
 *   in:  WriteJob (one at a time, in order), then maybe { op: 'close' }: the
 *        thread closes its socket and ends once the jobs before it are done
 *   out: { id, kind: 'progress', done } | { id, kind: 'done', report } | { id, kind: 'failed', message }
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { parentPort, workerData } from 'node:worker_threads';
import { ConnectionTable } from '../../plugin/connection-table';
import { WriteReport } from '../../plugin/ports/conntrack-port';
import { FlowView } from '../../plugin/flow-view';
import { WARM_UP_ENTRIES, warmUpTable } from '../../plugin/warm-up';
import { BulkWriter, DEFAULT_BATCH } from './bulk-writer';
import { CtnetlinkSocket, CtnetlinkSocketOptions } from './ctnetlink-socket';
import { FlowEncoder, MAX_MESSAGE_BYTES } from './flow-encoder';
import { KernelTurn } from './kernel-turn';
import { NlmFlag } from './netlink-message';

/**
 * A full collection of this thread's heap, run once it is idle. The thread
 * allocates little, so V8 may not collect it for hours, and every table a
 * job attached (a SharedArrayBuffer whose written pages are resident) stays
 * alive until it does: the daemon's RSS grew with every session (a soak of
 * 40 migrations: +70 MiB while the main heap stayed flat). It runs only
 * after IDLE_COLLECT_MS without a job: a collection costs 10–15 ms here,
 * and the destination writes a small batch for every change tick during a
 * pre-copy; collecting after each one made every batch wait for the last
 * collection (10 entries took 15 ms instead of 1.3 ms, measured), and left
 * the destination behind the source when QEMU stopped the VM.
 */
const IDLE_COLLECT_MS = 2000;

function idleCollector(): () => void {
  try {
    setFlagsFromString('--expose_gc');
    const gc = runInNewContext('gc') as unknown;
    if (typeof gc === 'function') return () => (gc as () => void)();
  } catch {
    // No collector to call: the heap is collected whenever V8 decides.
  }
  return () => undefined;
}

/** What the thread is started with. */
export interface WriteWorkerData {
  socket: CtnetlinkSocketOptions;
  batchSize?: number;
  /** The turn this thread shares with its sibling writers (kernel-turn.ts). */
  turn?: SharedArrayBuffer;
}

/** One write: the table's memory and the slots to write, entries without a master first. */
export interface WriteJob {
  id: number;
  op: 'create' | 'remove';
  sab: SharedArrayBuffer;
  plain: Uint32Array;
  related: Uint32Array;
  /** Slots whose existing kernel entry is left alone instead of replaced (WriteSelection.keepExisting). */
  keep: Uint32Array;
}

/** The last message a thread gets: end once every job before it is done. */
export interface CloseCommand {
  op: 'close';
}

export type WriteAnswer =
  | { id: number; kind: 'progress'; done: number }
  | { id: number; kind: 'done'; report: WriteReport }
  | { id: number; kind: 'failed'; message: string };

function run(data: WriteWorkerData, port: NonNullable<typeof parentPort>): void {
  let sock: CtnetlinkSocket | null = null;
  let writer: BulkWriter | null = null;
  let chain: Promise<void> = Promise.resolve();
  let queued = 0;
  const turn = data.turn ? new KernelTurn(data.turn) : null;
  const collect = idleCollector();
  let idle: NodeJS.Timeout | null = null;
  // The socket lives only while jobs are queued: a thread that ends (the
  // process exits) with a netlink socket still open aborts in native code.
  const close = (): void => {
    sock?.close();
    sock = null;
    writer = null;
  };

  const job = async (j: WriteJob): Promise<void> => {
    const table = ConnectionTable.attach(j.sab);
    if (sock === null || writer === null) {
      sock = new CtnetlinkSocket(data.socket);
      writer = new BulkWriter(sock, table, data.batchSize ?? DEFAULT_BATCH, turn);
    } else writer.useTable(table);
    const report: WriteReport = { created: 0, replaced: 0, deleted: 0, failures: [] };
    const kept = j.keep.length > 0 ? new Set(j.keep) : null;
    if (j.op === 'create') {
      await writer.create(j.plain, report, (d) => port.postMessage({ id: j.id, kind: 'progress', done: d } satisfies WriteAnswer), kept);
      await writer.create(j.related, report, (d) => port.postMessage({ id: j.id, kind: 'progress', done: j.plain.length + d } satisfies WriteAnswer), kept);
    } else {
      await writer.remove(j.related, report);
      await writer.remove(j.plain, report);
    }
    // Close before answering: the answer may be the last thing the process
    // waits for, and a thread torn down with a socket still polling dies in
    // the binding's native callback. Close outside that callback, too (the
    // last ACK resolved us from inside it, and it goes on reading after).
    await new Promise<void>((resolve) => setImmediate(resolve));
    if (queued === 1) close();
    port.postMessage({ id: j.id, kind: 'done', report } satisfies WriteAnswer);
  };

  port.on('message', (j: WriteJob | CloseCommand) => {
    if (j.op === 'close') {
      // After the jobs before it; the thread then has nothing open and ends by itself.
      if (idle) clearTimeout(idle);
      idle = null;
      const end = (): void => {
        close();
        port.close();
      };
      chain = chain.then(end, end);
      return;
    }
    queued++;
    if (idle) clearTimeout(idle);
    idle = null;
    chain = chain.then(
      () => job(j),
      () => job(j),
    );
    chain.then(
      () => {
        queued--;
        // Idle, the last table let go (close() dropped the writer): free it
        // soon, not when V8 gets round to it, unless more work comes first.
        if (queued === 0) idle = setTimeout(collect, IDLE_COLLECT_MS);
      },
      (e: unknown) => {
        queued--;
        // A socket that failed is opened anew for the next job.
        close();
        port.postMessage({ id: j.id, kind: 'failed', message: e instanceof Error ? e.message : String(e) } satisfies WriteAnswer);
      },
    );
  });
}

/**
 * Encode made-up entries once at thread start, before any job: V8 runs the
 * encoder slowly until it has compiled it, and the first import should not
 * pay for that (see plugin/warm-up.ts). Nothing is sent.
 */
function warmUp(): void {
  const t = warmUpTable(WARM_UP_ENTRIES);
  const enc = new FlowEncoder();
  const buf = Buffer.allocUnsafe(1 << 20);
  const v = new FlowView(t.u8, t.u16, t.u32);
  let off = 0;
  for (let slot = 0; slot < WARM_UP_ENTRIES; slot++) {
    off = enc.encodeCreate(v.at(t.recordOffset(slot), -1), buf, off, slot, NlmFlag.Request | NlmFlag.Create | NlmFlag.Excl);
    if (off > buf.length - 2 * MAX_MESSAGE_BYTES) off = 0;
  }
}

if (parentPort) {
  warmUp();
  run(workerData as WriteWorkerData, parentPort);
}
