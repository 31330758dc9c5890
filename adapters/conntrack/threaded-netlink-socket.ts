/**
 * ThreadedNetlinkSocket: the same face as NetlinkSocket, with the socket
 * itself on a reader thread (netlink-reader.ts). Datagram batches arrive
 * here in order, as transferred buffers, while the reader is already in the
 * kernel fetching the next one.
 *
 * Construction waits (Atomics.wait) until the socket is open, so it works
 * only off the main thread: the conntrack feed worker uses it.
 */
import { EventEmitter } from 'node:events';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { CONTROL_TEXT_OFFSET, ReaderCommand, ReaderData, ReaderMessage } from './netlink-reader-protocol';
import { NetlinkErrno, NetlinkSocketOptions, RawNetlinkSocket } from './netlink-socket';

export interface ThreadedSocketOptions extends NetlinkSocketOptions {
  groups: number[];
  forceRecvBuffer: boolean;
}

/** How long to wait for the reader thread to open its socket. */
const OPEN_TIMEOUT_MS = 10_000;

export class ThreadedNetlinkSocket extends EventEmitter implements RawNetlinkSocket {
  private readonly worker: Worker;
  private readonly exited: Promise<void>;
  private readonly recvBytes: number;
  private readonly sendBytes: number;
  private readonly pending = new Map<number, (err?: NetlinkErrno) => void>();
  private nextId = 1;
  private open = true;

  constructor(protocol: number, options: ThreadedSocketOptions) {
    super();
    const control = new SharedArrayBuffer(CONTROL_TEXT_OFFSET + 512);
    const ctl = new Int32Array(control, 0, 4);
    const data: ReaderData = {
      protocol,
      receiveBytes: options.receiveBytes,
      recvBufferSize: options.recvBufferSize,
      sendBufferSize: options.sendBufferSize,
      groups: options.groups,
      forceRecvBuffer: options.forceRecvBuffer,
      control,
    };
    this.worker = new Worker(join(__dirname, 'netlink-reader.js'), { workerData: data });
    this.exited = new Promise<void>((resolve) => this.worker.once('exit', () => resolve()));
    if (Atomics.wait(ctl, 0, 0, OPEN_TIMEOUT_MS) === 'timed-out' || Atomics.load(ctl, 0) !== 1) {
      const text = Atomics.load(ctl, 0) === -1 ? Buffer.from(new Uint8Array(control, CONTROL_TEXT_OFFSET, ctl[3])).toString() : 'reader thread did not start';
      void this.worker.terminate();
      throw new Error(`cannot open a netlink socket: ${text}`);
    }
    this.recvBytes = ctl[1];
    this.sendBytes = ctl[2];
    this.worker.on('message', (m: ReaderMessage) => this.deliver(m));
    this.worker.on('error', (e: Error) => {
      if (this.listenerCount('error') > 0) this.emit('error', Object.assign(e, { errno: 0, code: 'EIO', syscall: 'worker' }));
    });
  }

  private deliver(m: ReaderMessage): void {
    if (m.k === 'data') this.emit('message', Buffer.from(m.b), m.d);
    else if (m.k === 'truncated') this.emit('truncatedMessage', Buffer.alloc(0));
    else if (m.k === 'error') {
      if (this.listenerCount('error') > 0) this.emit('error', Object.assign(new Error(m.message), { errno: m.errno, code: m.code, syscall: m.syscall }));
    } else {
      const cb = this.pending.get(m.id);
      this.pending.delete(m.id);
      cb?.(m.errno ? Object.assign(new Error(m.message), { errno: m.errno, code: m.code, syscall: 'sendmsg' }) : undefined);
    }
  }

  forceRecvBufferSize(): number {
    return this.recvBytes;
  }
  addMembership(): void {
    throw new Error('ThreadedNetlinkSocket joins its groups when it opens');
  }
  getRecvBufferSize(): number {
    return this.recvBytes;
  }
  getSendBufferSize(): number {
    return this.sendBytes;
  }

  /** Send one datagram; the bytes are copied, so the caller may reuse its buffer at once. */
  send(data: Buffer, cb: (err?: NetlinkErrno) => void): void {
    if (!this.open) {
      cb(Object.assign(new Error('netlink socket is closed'), { errno: 9, code: 'EBADF', syscall: 'sendmsg' }));
      return;
    }
    const id = this.nextId++;
    this.pending.set(id, cb);
    const copy = Uint8Array.prototype.slice.call(data).buffer as ArrayBuffer;
    const cmd: ReaderCommand = { k: 'send', id, b: copy };
    this.worker.postMessage(cmd, [copy]);
  }

  unref(): void {
    this.worker.unref();
  }
  ref(): void {
    this.worker.ref();
  }

  close(): void {
    if (!this.open) return;
    this.open = false;
    this.worker.postMessage({ k: 'close' } satisfies ReaderCommand);
  }

  /**
   * Resolves once the reader thread has closed its socket and ended. A
   * thread that owns this socket must wait for it before it ends itself:
   * tearing the reader down in the middle of a native callback aborts the
   * process.
   */
  closed(): Promise<void> {
    this.close();
    return this.exited;
  }


}
