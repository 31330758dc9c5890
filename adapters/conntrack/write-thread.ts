/**
 * Write thread: hands ConntrackNetlink's creates and deletes to the write
 * worker (write-worker.ts) and matches its answers to the calls. The
 * worker starts on the first write and is unref'd while no write is in
 * flight, so it never keeps a process alive.
 */
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { ConnectionTable } from '../../plugin/connection-table';
import { WriteReport } from '../../plugin/ports/conntrack-port';
import { CloseCommand, WriteAnswer, WriteJob, WriteWorkerData } from './write-worker';

/** How long close() lets a thread finish its jobs and end before it is terminated. */
const CLOSE_TIMEOUT_MS = 3000;

interface Pending {
  resolve: (r: WriteReport) => void;
  reject: (e: Error) => void;
  onProgress?: (done: number, total: number) => void;
  total: number;
}

export class WriteThread {
  private worker: Worker | null = null;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private closed = false;

  constructor(private readonly data: WriteWorkerData) {}

  /**
   * Let the jobs in flight finish, then end the thread with its socket
   * closed (a thread torn down by process.exit mid-write used to abort the
   * process in the binding). Later runs are refused.
   */
  async close(): Promise<void> {
    this.closed = true;
    const w = this.worker;
    if (!w) return;
    w.ref();
    const ended = new Promise<void>((resolve) => w.once('exit', () => resolve()));
    w.postMessage({ op: 'close' } satisfies CloseCommand);
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'late'>((resolve) => {
      timer = setTimeout(() => resolve('late'), CLOSE_TIMEOUT_MS);
    });
    const how = await Promise.race([ended, late]);
    clearTimeout(timer);
    if (how === 'late') await w.terminate();
  }

  /** Write `plain` then `related` (create), or `related` then `plain` (remove), from `table`. */
  run(op: WriteJob['op'], table: ConnectionTable, plain: number[], related: number[], onProgress?: (done: number, total: number) => void, keep: number[] = []): Promise<WriteReport> {
    let w: Worker;
    if (this.closed) return Promise.reject(new Error('conntrack writer closed (the daemon is stopping)'));
    try {
      w = this.start();
    } catch (e) {
      return Promise.reject(e as Error);
    }
    const id = this.nextId++;
    const job: WriteJob = { id, op, sab: table.sab, plain: Uint32Array.from(plain), related: Uint32Array.from(related), keep: Uint32Array.from(keep) };
    return new Promise<WriteReport>((resolve, reject) => {
      this.pending.set(id, { resolve, reject, onProgress, total: plain.length + related.length });
      if (this.pending.size === 1) w.ref();
      w.postMessage(job, [job.plain.buffer as ArrayBuffer, job.related.buffer as ArrayBuffer]);
    });
  }

  /** Boot the worker ahead of the first write (unref'd: it keeps nothing alive); errors surface on that write. */
  warm(): void {
    if (this.closed) return;
    try {
      this.start();
    } catch {
      // run() starts it again and reports the failure.
    }
  }

  private start(): Worker {
    if (this.worker) return this.worker;
    const w = new Worker(join(__dirname, 'write-worker.js'), { workerData: this.data });
    w.unref();
    w.on('message', (a: WriteAnswer) => this.answer(a));
    w.on('error', (e: Error) => this.failAll(`conntrack write thread crashed: ${e.message}`));
    w.on('exit', () => {
      if (this.worker === w) this.worker = null;
      this.failAll('conntrack write thread ended');
    });
    this.worker = w;
    return w;
  }

  private answer(a: WriteAnswer): void {
    const p = this.pending.get(a.id);
    if (!p) return;
    if (a.kind === 'progress') {
      p.onProgress?.(a.done, p.total);
      return;
    }
    this.pending.delete(a.id);
    if (this.pending.size === 0) this.worker?.unref();
    if (a.kind === 'done') p.resolve(a.report);
    else p.reject(new Error(`conntrack write failed: ${a.message}`));
  }

  private failAll(message: string): void {
    const all = [...this.pending.values()];
    this.pending.clear();
    for (const p of all) p.reject(new Error(message));
  }
}
