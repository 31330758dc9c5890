/**
 * Ctnetlink socket: one NETLINK_NETFILTER socket from the `netlink` package,
 * with every received datagram split into messages and routed by kind:
 * dump replies, events, ACK/errors, end of dump, and overruns.
 *
 * Operational catches:
 * - A netlink socket sees only the network namespace of the thread that
 *   opened it; run the process inside the namespace (`ip netns exec`).
 * - The kernel answers requests and queues errors into the receive buffer
 *   without waiting; if that buffer is full it drops answers and the next
 *   receive fails with ENOBUFS. Callers size their batches to the buffer.
 * - SO_RCVBUF/SO_SNDBUF requests are capped by net.core.rmem_max/wmem_max
 *   (the kernel doubles the value it grants); only the rebuilt binding can
 *   go past them with SO_RCVBUFFORCE (forceRecvBuffer).
 * - After an overrun the kernel reports ENOBUFS once and then drops events
 *   silently until our queue has been emptied. A "drained" notice is only
 *   passed on when no new drop was reported between it and its delivery.
 */
import { NetlinkFormatError } from './attributes';
import {
  erroredSeq,
  Errno,
  messageEnd,
  messageErrno,
  messageSeq,
  messageType,
  NETLINK_NETFILTER,
  NFNL_SUBSYS_CTNETLINK,
  NlmsgType,
} from './netlink-message';
import { NetlinkSocket, RawNetlinkSocket } from './netlink-socket';
import { ThreadedNetlinkSocket } from './threaded-netlink-socket';

/** How to open a socket. */
export interface CtnetlinkSocketOptions {
  /** Requested SO_RCVBUF bytes (capped by rmem_max); default 4 MiB. */
  recvBufferSize?: number;
  /** Requested SO_SNDBUF bytes (capped by wmem_max); default 4 MiB. */
  sendBufferSize?: number;
  /** Event groups to join (NFNLGRP_CONNTRACK_NEW=1, UPDATE=2, DESTROY=3). */
  groups?: number[];
  /**
   * Receive into a fixed buffer of this size (one recvmsg per datagram)
   * instead of peeking each datagram's size first (two). The kernel sizes
   * dump datagrams after the reader's buffer (up to 32 KiB of entries);
   * a 64 KiB buffer measured fastest. Default 65536.
   */
  receiveBytes?: number;
  /** Ask for recvBufferSize past net.core.rmem_max (SO_RCVBUFFORCE; root). */
  forceRecvBuffer?: boolean;
  /**
   * Receive on a thread of its own (ThreadedNetlinkSocket), so the kernel's
   * work in recvmsg overlaps with decoding. Not on the main thread.
   */
  threaded?: boolean;
}

/** What a socket does with what it receives; unset handlers drop their kind. */
export interface CtnetlinkHandlers {
  /** A ctnetlink message answering one of our requests (seq != 0): a dump reply. */
  reply?(buf: Buffer, off: number, end: number, seq: number): void;
  /** A ctnetlink message with seq 0: an event. */
  event?(buf: Buffer, off: number, end: number): void;
  /** NLMSG_ERROR: errno 0 is an ACK. `seq` is the request it answers. */
  ack?(seq: number, errno: number): void;
  /** NLMSG_DONE: a dump ended (errno 0) or was cut short. */
  done?(seq: number, errno: number): void;
  /** The kernel dropped messages for this socket (ENOBUFS). */
  overrun?(): void;
  /**
   * A receive turn ended with the queue empty. The kernel reports a drop
   * (ENOBUFS) only once until the queue has been emptied; drops in between
   * are silent. So after an overrun a repair must start after this.
   */
  drained?(): void;
  /** A malformed datagram or any other socket error; the socket stays usable unless `fatal`. */
  failure?(err: Error, fatal: boolean): void;
}

/** Default socket buffers: 4 MiB requested (the kernel grants 8 MiB if rmem_max allows). */
export const DEFAULT_SOCKET_BUFFER = 4 << 20;

/** A socket error the adapter reports as such (errno name and what it was doing). */
export class CtnetlinkError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'CtnetlinkError';
  }
}

interface ErrnoLike {
  code?: unknown;
  errno?: unknown;
  message?: unknown;
}

/** Errno number of an error thrown or emitted by the netlink package, or 0. */
export function errnoOf(err: unknown): number {
  const e = err as ErrnoLike;
  return typeof e?.errno === 'number' ? Math.abs(e.errno) : 0;
}

/**
 * One ctnetlink socket. Not thread-safe; one per thread. Sequence numbers
 * start at 1 and never use 0, which marks events.
 */
export class CtnetlinkSocket {
  readonly raw: RawNetlinkSocket;
  handlers: CtnetlinkHandlers = {};
  private seq = 1;
  private closed = false;
  /** Datagrams (and receive errors) seen so far; a quiet period means an empty queue. */
  received = 0;
  private turnCount = 0;
  private turnError = false;
  private turnScheduled = false;
  private drainScheduled = false;
  private drainVoided = false;

  constructor(options: CtnetlinkSocketOptions = {}) {
    const receiveBytes = options.receiveBytes ?? 65536;
    const base = {
      receiveBytes: Math.max(0, receiveBytes),
      recvBufferSize: options.recvBufferSize ?? DEFAULT_SOCKET_BUFFER,
      sendBufferSize: options.sendBufferSize ?? DEFAULT_SOCKET_BUFFER,
    };
    if (options.threaded) {
      this.raw = new ThreadedNetlinkSocket(NETLINK_NETFILTER, { ...base, groups: options.groups ?? [], forceRecvBuffer: options.forceRecvBuffer ?? false });
    } else {
      this.raw = new NetlinkSocket(NETLINK_NETFILTER, base);
      for (const g of options.groups ?? []) this.raw.addMembership(g);
      if (options.forceRecvBuffer) this.raw.forceRecvBufferSize(base.recvBufferSize);
    }
    // An exception escaping into the package's native callback aborts the
    // whole process, so nothing thrown by a handler may leave these listeners.
    this.raw.on('message', (msg: Buffer, drained?: boolean) => {
      try {
        if (drained === undefined) this.countTurn(false);
        else {
          this.received++;
          if (drained) this.scheduleDrained();
        }
        this.receive(msg);
      } catch (err) {
        this.report(err);
      }
    });
    this.raw.on('truncatedMessage', () => {
      // A datagram larger than our buffer lost its tail: treat like an overrun.
      this.drainVoided = this.drainScheduled;
      this.handlers.overrun?.();
    });
    this.raw.on('error', (err: Error) => {
      try {
        this.countTurn(true);
        // A drop after the queue emptied: the drained notice still pending
        // describes the queue before it and must not start a repair now.
        this.drainVoided = this.drainScheduled;
        if (errnoOf(err) === Errno.ENOBUFS) this.handlers.overrun?.();
        else this.handlers.failure?.(err, false);
      } catch (e) {
        this.report(e);
      }
    });
  }

  /** Receive buffer the kernel granted (bytes; already doubled). */
  get recvBufferSize(): number {
    return this.raw.getRecvBufferSize();
  }
  /** Send buffer the kernel granted; one send() may not exceed it. */
  get sendBufferSize(): number {
    return this.raw.getSendBufferSize();
  }

  /**
   * The package reads at most 32 datagrams per readable event and stops
   * early only when the queue is empty: a turn with fewer and no error
   * means the queue drained.
   */
  private countTurn(error: boolean): void {
    this.turnCount++;
    this.received++;
    if (error) this.turnError = true;
    if (this.turnScheduled) return;
    this.turnScheduled = true;
    setImmediate(() => {
      const drained = this.turnCount < 32 && !this.turnError;
      this.turnScheduled = false;
      this.turnCount = 0;
      this.turnError = false;
      if (drained && !this.closed) this.handlers.drained?.();
    });
  }

  /** The batch ended on an empty queue: tell the handler once the batch is processed. */
  private scheduleDrained(): void {
    if (this.drainScheduled) return;
    this.drainScheduled = true;
    setImmediate(() => {
      this.drainScheduled = false;
      const voided = this.drainVoided;
      this.drainVoided = false;
      if (!this.closed && !voided) this.handlers.drained?.();
    });
  }

  private report(err: unknown): void {
    const e = err instanceof Error ? err : new Error(String(err));
    try {
      this.handlers.failure?.(e, false);
    } catch {
      // The failure handler itself failed: nothing more we can do safely.
    }
  }

  /** Reserve `n` consecutive sequence numbers; returns the first. */
  reserve(n: number): number {
    if (this.seq + n >= 0xffffffff) this.seq = 1;
    const first = this.seq;
    this.seq += n;
    return first;
  }

  /**
   * Send one datagram (any number of requests). The kernel processes them
   * inside this call; answers arrive through the handlers. Errors of the
   * send itself go to failure().
   */
  send(buf: Buffer): void {
    this.raw.send(buf, (err) => {
      if (err) this.handlers.failure?.(new CtnetlinkError(err.code, `netlink send failed: ${err.message}`), false);
    });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.raw.close();
  }

  /** Split a datagram into messages and route them (exported for fakes at the protocol boundary). */
  receive(buf: Buffer): void {
    const h = this.handlers;
    const end = buf.length;
    try {
      for (let off = 0; off < end; ) {
        const mend = messageEnd(buf, off, end);
        const type = messageType(buf, off);
        if (type === NlmsgType.Error) {
          const errno = messageErrno(buf, off, mend);
          h.ack?.(erroredSeq(buf, off, mend), errno);
        } else if (type === NlmsgType.Done) {
          const errno = mend - off >= 20 ? messageErrno(buf, off, mend) : 0;
          h.done?.(messageSeq(buf, off), errno);
        } else if (type >> 8 === NFNL_SUBSYS_CTNETLINK) {
          const seq = messageSeq(buf, off);
          if (seq === 0) h.event?.(buf, off, mend);
          else h.reply?.(buf, off, mend, seq);
        } else if (type === NlmsgType.Overrun) {
          h.overrun?.();
        }
        off = (mend + 3) & ~3;
      }
    } catch (err) {
      if (err instanceof NetlinkFormatError) h.failure?.(err, false);
      else throw err;
    }
  }
}
