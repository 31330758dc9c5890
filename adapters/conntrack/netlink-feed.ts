/**
 * NetlinkFeed: the ConnectionFeed over ctnetlink. start() spawns a worker
 * thread (feed-worker.js, next to this file once compiled) that owns the
 * netlink socket and writes the shared table; the caller reads the table.
 *
 * Operational catches:
 * - The worker opens its socket in the process's network namespace.
 * - The event socket asks for a large receive buffer (default 32 MiB),
 *   capped by net.core.rmem_max (the kernel grants twice the capped value).
 *   We do not change sysctls; on a busy host raise rmem_max so bursts fit.
 *   Overruns are repaired by a re-dump either way (counted in FeedStats).
 * - ready rejects if the worker cannot open its socket or the dump fails;
 *   warnings (repaired overruns, malformed messages) go to onWarning.
 */
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { ConnectionTable } from '../../plugin/connection-table';
import { ConnectionFeed, Feed, FeedOptions, FeedStats } from '../../plugin/ports/connection-feed';
import { KernelVersion } from './dump-filter';
import { FeedCommand, FeedWorkerData } from './feed-worker';

/** Settings of a NetlinkFeed; all optional. */
export interface NetlinkFeedOptions {
  /** Requested SO_RCVBUF of the event socket; default 32 MiB (capped by rmem_max). */
  recvBufferSize?: number;
  /** Fixed receive buffer per datagram (0 = peek each size); default 32768. */
  receiveBytes?: number;
  kernel?: KernelVersion;
}

/** Default event socket buffer request. */
export const FEED_RECV_BUFFER = 32 << 20;

type WorkerMessage =
  | { type: 'ready'; stats: FeedStats }
  | { type: 'stats'; id: number; stats: FeedStats }
  | { type: 'warning'; message: string }
  | { type: 'stopped'; stats: FeedStats }
  | { type: 'synced'; id: number; version: number }
  | { type: 'reclaimed'; id: number; freed: number }
  | { type: 'failed'; message: string };

/** The feed failed (socket or dump); the worker has ended. */
export class FeedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FeedError';
  }
}

/** Keeps shared tables in step with the kernel through a worker thread. */
export class NetlinkFeed implements ConnectionFeed {
  constructor(private readonly options: NetlinkFeedOptions = {}) {}

  start(table: ConnectionTable, options: FeedOptions): Feed {
    const data: FeedWorkerData = {
      sab: table.sab,
      filter: options.filter,
      follow: options.follow,
      recvBufferSize: this.options.recvBufferSize ?? FEED_RECV_BUFFER,
      receiveBytes: this.options.receiveBytes,
      kernel: this.options.kernel,
    };
    return new WorkerFeed(table, new Worker(join(__dirname, 'feed-worker.js'), { workerData: data }), options.onWarning);
  }
}

class WorkerFeed implements Feed {
  readonly ready: Promise<FeedStats>;
  private last: FeedStats = { dumped: 0, events: 0, overruns: 0, repaired: 0 };
  private nextId = 1;
  private readonly pending = new Map<number, (s: FeedStats) => void>();
  private readonly answers = new Map<number, (n: number) => void>();
  private exited = false;
  private stopping: Promise<FeedStats> | null = null;
  private settleReady: { resolve: (s: FeedStats) => void; reject: (e: Error) => void } | null = null;
  private onStopped: ((s: FeedStats) => void) | null = null;

  constructor(
    readonly table: ConnectionTable,
    private readonly worker: Worker,
    private readonly warn?: (message: string) => void,
  ) {
    this.ready = new Promise<FeedStats>((resolve, reject) => {
      this.settleReady = { resolve, reject };
    });
    // Nobody may be waiting on ready; a failure must not become an unhandled rejection.
    this.ready.catch(() => undefined);
    worker.on('message', (m: WorkerMessage) => this.message(m));
    worker.on('error', (err) => this.fail(`conntrack feed worker crashed: ${err.message}`));
    worker.on('exit', () => {
      this.exited = true;
      this.fail('conntrack feed worker ended');
      for (const r of this.pending.values()) r(this.last);
      this.pending.clear();
      for (const r of this.answers.values()) r(-1);
      this.answers.clear();
      this.onStopped?.(this.last);
    });
  }

  private message(m: WorkerMessage): void {
    switch (m.type) {
      case 'ready':
        this.last = m.stats;
        this.settleReady?.resolve(m.stats);
        this.settleReady = null;
        break;
      case 'stats': {
        this.last = m.stats;
        const r = this.pending.get(m.id);
        this.pending.delete(m.id);
        r?.(m.stats);
        break;
      }
      case 'synced':
      case 'reclaimed': {
        const r = this.answers.get(m.id);
        this.answers.delete(m.id);
        r?.(m.type === 'synced' ? m.version : m.freed);
        break;
      }
      case 'warning':
        this.warn?.(m.message);
        break;
      case 'stopped':
        this.last = m.stats;
        this.onStopped?.(m.stats);
        break;
      case 'failed':
        this.fail(m.message);
        void this.worker.terminate();
        break;
    }
  }

  private fail(message: string): void {
    if (this.settleReady) {
      this.settleReady.reject(new FeedError(message));
      this.settleReady = null;
    } else if (!this.exited || this.stopping === null) {
      if (this.stopping === null) this.warn?.(message);
    }
  }

  stats(): Promise<FeedStats> {
    if (this.exited) return Promise.resolve(this.last);
    const id = this.nextId++;
    return new Promise((resolve) => {
      this.pending.set(id, resolve);
      this.worker.postMessage({ type: 'stats', id } satisfies FeedCommand);
    });
  }

  sync(): Promise<number> {
    return this.ask((id) => ({ type: 'sync', id }));
  }

  reclaim(upTo: number): Promise<number> {
    return this.ask((id) => ({ type: 'reclaim', id, upTo }));
  }

  private ask(cmd: (id: number) => FeedCommand): Promise<number> {
    if (this.exited) return Promise.reject(new FeedError('conntrack feed has ended'));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.answers.set(id, (n) => (n < 0 ? reject(new FeedError('conntrack feed ended before answering')) : resolve(n)));
      this.worker.postMessage(cmd(id));
    });
  }

  stop(): Promise<FeedStats> {
    if (this.stopping) return this.stopping;
    if (this.exited) return (this.stopping = Promise.resolve(this.last));
    this.stopping = new Promise<FeedStats>((resolve) => {
      this.onStopped = (s) => {
        this.onStopped = null;
        resolve(s);
        void this.worker.terminate();
      };
      this.worker.postMessage({ type: 'stop' } satisfies FeedCommand);
    });
    return this.stopping;
  }
}
