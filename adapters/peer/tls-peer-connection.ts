import { TLSSocket } from 'node:tls';
import {
  AckMessage,
  CloseReason,
  DataMessage,
  decodePayload,
  encodeFrame,
  HelloMessage,
  isDataMessage,
  messageKindName,
  MessageKind,
  PeerErrorCode,
  PeerMessage,
  PeerProtocolError,
  PeerRole,
  PROTOCOL_VERSION,
} from '../../plugin/peer-protocol';
import { formatPeerAddress, PeerAddress, PeerCloseInfo, PeerConnection, PeerConnectionStats } from '../../plugin/ports/peer-port';
import { FrameReader } from './frame-reader';
import { PeerChannelError, PeerClosedError, PeerTimeoutError } from './peer-errors';
import { StreamOrder } from './stream-order';

/** Knobs of one connection (the port's settings). */
export interface ConnectionTuning {
  hostId: string;
  /** Largest payload accepted from the peer (announced in our Hello). */
  maxFrameBytes: number;
  /** Unacknowledged data bytes the sender may have in flight. */
  windowBytes: number;
  /** How long the peer may take to send its Hello after the TLS handshake. */
  helloTimeoutMs: number;
  /** Called for every frame received (listener statistics). */
  onFrame?: () => void;
  /** A frame goes out at least this often once Hellos are exchanged (an Ack when nothing else does; default 1 s). */
  heartbeatMs?: number;
  /** A peer that sends nothing for this long while we read is gone (default 5 s). */
  silenceMs?: number;
}

export const DEFAULT_HEARTBEAT_MS = 1000;
export const DEFAULT_SILENCE_MS = 5000;

interface Waiter {
  resolve(m: PeerMessage): void;
  reject(e: Error): void;
  timer: NodeJS.Timeout | null;
}

function dataBytes(m: DataMessage): number {
  return m.bytes.length;
}

/**
 * What a received message costs while it waits untaken: its data, plus a
 * charge for the object itself. Control frames (WhoHas, Hello, Error, ...)
 * are small on the wire but not in memory, and a peer may send millions.
 */
const MESSAGE_OVERHEAD_BYTES = 512;

function queuedCost(m: PeerMessage): number {
  return (isDataMessage(m) ? dataBytes(m) : 0) + MESSAGE_OVERHEAD_BYTES;
}

/**
 * A PeerConnection over an authenticated TLS socket: framing with the size
 * limit, the Hello exchange, order checks, and flow control in both
 * directions. Sending: send() resolves only when the socket has room
 * ('drain') and the unacknowledged data fits the window. Receiving: data is
 * acknowledged as the application takes it, and the socket is paused while
 * more than a window's worth waits untaken (every kind of frame counts, not
 * only data), so a peer that ignores the window, or floods us with control
 * frames nobody reads, still cannot fill our memory. A failed connection
 * drops what waited untaken.
 *
 * Liveness: a link that goes silent (packets dropped, no RST) is only seen by
 * TCP after minutes of retransmits or keepalive probes. So each side sends a
 * frame at least every heartbeatMs (an Ack repeating what it acknowledged
 * when it has nothing else to say), and a connection that receives nothing
 * for silenceMs while it reads fails with a timeout. While we hold the
 * socket paused the silence is ours, and it is not counted.
 */
export class TlsPeerConnection implements PeerConnection {
  readonly remote: PeerAddress;
  /** Settles after the peer's Hello (rejects if the connection fails first). */
  readonly ready: Promise<HelloMessage>;
  readonly closed: Promise<PeerCloseInfo>;
  readonly stats: PeerConnectionStats = { framesSent: 0, framesReceived: 0, dataBytesSent: 0, dataBytesReceived: 0, unackedBytes: 0 };
  lastAck: AckMessage | null = null;

  private hello: HelloMessage | null = null;
  private readonly name: string;
  private readonly reader: FrameReader;
  private readonly order = new StreamOrder();
  private readonly inbox: PeerMessage[] = [];
  private readonly waiters: Waiter[] = [];
  private readonly ackListeners: ((a: AckMessage) => void)[] = [];
  private windowWaiters: (() => void)[] = [];
  private drainWaiters: (() => void)[] = [];
  private chain: Promise<void> = Promise.resolve();
  private queuedBytes = 0;
  private paused = false;
  private consumedBytes = 0;
  private ackedSentAt = 0;
  private receivedVersion = 0;
  private committedVersion = 0;
  private ackedBytes = 0;
  private error: Error | null = null;
  private ended = false;
  private closing = false;
  private closedLocally = false;
  private resolveReady!: (h: HelloMessage) => void;
  private rejectReady!: (e: Error) => void;
  private helloTimer: NodeJS.Timeout | null;
  private heartbeat: NodeJS.Timeout | null = null;
  private lastSentAt = 0;
  private lastReceivedAt = 0;

  constructor(
    private readonly socket: TLSSocket,
    remote: PeerAddress,
    role: PeerRole,
    private readonly tuning: ConnectionTuning,
  ) {
    this.remote = remote;
    this.name = remote.host;
    this.reader = new FrameReader(tuning.maxFrameBytes);
    this.ready = new Promise<HelloMessage>((res, rej) => {
      this.resolveReady = res;
      this.rejectReady = rej;
    });
    // A connection that dies before its Hello is reported through ready; keep Node from calling that unhandled.
    this.ready.catch(() => undefined);
    this.closed = new Promise<PeerCloseInfo>((res) => {
      socket.once('close', () => {
        this.ended = true;
        this.stopHeartbeat();
        this.failWaiters();
        res({ error: this.error, local: this.closedLocally });
      });
    });
    socket.setNoDelay(true);
    socket.setKeepAlive(true, 10_000);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('end', () => this.onEnd());
    socket.on('error', (err) => this.fail(new PeerChannelError(this.name, `peer ${this.name}: connection failed: ${err.message}`, err)));
    socket.on('drain', () => this.wake('drain'));
    this.helloTimer = setTimeout(
      () => this.fail(new PeerTimeoutError(this.name, 'Hello', tuning.helloTimeoutMs)),
      tuning.helloTimeoutMs,
    );
    this.writeFrame({ kind: MessageKind.Hello, protocol: PROTOCOL_VERSION, role, maxFrameBytes: tuning.maxFrameBytes, hostId: tuning.hostId });
  }

  get peer(): HelloMessage {
    if (this.hello === null) throw new Error('peer Hello not received yet (await ready)');
    return this.hello;
  }

  send(message: PeerMessage): Promise<void> {
    if (message.kind === MessageKind.Ack) return this.acknowledge(message.committed);
    const p = this.chain.then(() => this.transmit(message));
    this.chain = p.catch(() => undefined);
    return p;
  }

  receive(timeoutMs?: number): Promise<PeerMessage> {
    const m = this.inbox.shift();
    if (m !== undefined) {
      this.taken(m);
      return Promise.resolve(m);
    }
    if (this.ended || this.error !== null) return Promise.reject(this.endError());
    return new Promise<PeerMessage>((resolve, reject) => {
      const w: Waiter = { resolve, reject, timer: null };
      if (timeoutMs !== undefined)
        w.timer = setTimeout(() => {
          const i = this.waiters.indexOf(w);
          if (i >= 0) this.waiters.splice(i, 1);
          reject(new PeerTimeoutError(this.name, 'message', timeoutMs));
        }, timeoutMs);
      this.waiters.push(w);
    });
  }

  async *[Symbol.asyncIterator](): AsyncIterator<PeerMessage> {
    for (;;) {
      let m: PeerMessage;
      try {
        m = await this.receive();
      } catch (err) {
        if (err instanceof PeerClosedError) return;
        throw err;
      }
      yield m;
    }
  }

  async acknowledge(committed: number): Promise<void> {
    if (committed > this.committedVersion) this.committedVersion = committed;
    this.sendAck();
  }

  onAck(listener: (ack: AckMessage) => void): void {
    this.ackListeners.push(listener);
  }

  async close(): Promise<void> {
    if (!this.closing) {
      this.closing = true;
      this.closedLocally = true;
      // After everything already queued: an orderly end must not cut a send short.
      await this.chain;
      this.socket.end();
      // A peer that never closes its side must not keep us waiting forever.
      setTimeout(() => this.socket.destroy(), 5000).unref();
    }
    await this.closed;
  }

  destroy(error?: Error): void {
    this.closedLocally = true;
    if (error && this.error === null) this.error = error;
    this.socket.destroy();
  }

  // --- sending -----------------------------------------------------------

  private async transmit(m: PeerMessage): Promise<void> {
    this.assertWritable();
    const peerLimit = this.peer.maxFrameBytes;
    if (isDataMessage(m)) {
      const n = dataBytes(m);
      // Whole frames only; a frame bigger than the window may go alone so the stream cannot stall.
      while (this.stats.dataBytesSent > this.ackedBytes && this.stats.dataBytesSent - this.ackedBytes + n > this.tuning.windowBytes) {
        await new Promise<void>((r) => this.windowWaiters.push(r));
        this.assertWritable();
      }
      const ok = this.writeFrame(m, peerLimit);
      this.stats.dataBytesSent += n;
      this.stats.unackedBytes = this.stats.dataBytesSent - this.ackedBytes;
      if (!ok) await this.drained();
    } else if (!this.writeFrame(m, peerLimit)) {
      await this.drained();
    }
  }

  private writeFrame(m: PeerMessage, limit?: number): boolean {
    const parts = encodeFrame(m, limit);
    let ok = true;
    if (parts.length > 1) this.socket.cork();
    for (const p of parts) ok = this.socket.write(p);
    if (parts.length > 1) this.socket.uncork();
    this.stats.framesSent++;
    this.lastSentAt = Date.now();
    return ok;
  }

  private async drained(): Promise<void> {
    while (this.socket.writableNeedDrain && !this.ended) await new Promise<void>((r) => this.drainWaiters.push(r));
    this.assertWritable();
  }

  private assertWritable(): void {
    if (this.error !== null) throw this.error;
    if (this.ended || this.socket.destroyed || this.socket.writableEnded) throw new PeerClosedError(this.name);
  }

  private sendAck(): void {
    if (this.ended || this.socket.writableEnded || this.hello === null) return;
    this.ackedSentAt = this.consumedBytes;
    this.writeFrame({ kind: MessageKind.Ack, bytes: this.consumedBytes, received: this.receivedVersion, committed: this.committedVersion });
  }

  private wake(what: 'drain' | 'window'): void {
    const list = what === 'drain' ? this.drainWaiters : this.windowWaiters;
    if (what === 'drain') this.drainWaiters = [];
    else this.windowWaiters = [];
    for (const w of list) w();
  }

  // --- liveness ----------------------------------------------------------

  private startHeartbeat(): void {
    const every = this.tuning.heartbeatMs ?? DEFAULT_HEARTBEAT_MS;
    const silence = this.tuning.silenceMs ?? DEFAULT_SILENCE_MS;
    this.lastReceivedAt = this.lastSentAt = Date.now();
    // Checked four times a beat: a heartbeat is never late by more than a quarter of one.
    this.heartbeat = setInterval(() => this.beat(every, silence), Math.max(10, Math.floor(every / 4)));
    this.heartbeat.unref();
  }

  private beat(every: number, silence: number): void {
    if (this.ended || this.error !== null) return this.stopHeartbeat();
    const now = Date.now();
    if (!this.paused && now - this.lastReceivedAt > silence) {
      this.fail(new PeerTimeoutError(this.name, `frame (not even a heartbeat); the link is silent`, silence));
      return;
    }
    // Nothing queued behind backpressure: a heartbeat there would only add to the queue.
    if (now - this.lastSentAt >= every && !this.socket.writableNeedDrain && !this.closing) this.sendAck();
  }

  private stopHeartbeat(): void {
    if (this.heartbeat !== null) clearInterval(this.heartbeat);
    this.heartbeat = null;
  }

  // --- receiving ---------------------------------------------------------

  private onData(chunk: Buffer): void {
    if (this.error !== null) return;
    this.lastReceivedAt = Date.now();
    try {
      for (const f of this.reader.push(chunk)) {
        this.stats.framesReceived++;
        this.tuning.onFrame?.();
        this.onMessage(decodePayload(f.kind, f.payload));
        if (this.error !== null) return;
      }
    } catch (err) {
      if (!(err instanceof PeerProtocolError)) throw err;
      const code = err.problem === 'oversize' ? PeerErrorCode.Limit : err.problem === 'version' ? PeerErrorCode.Version : PeerErrorCode.Protocol;
      this.abort(err, code);
    }
  }

  private onMessage(m: PeerMessage): void {
    if (this.hello === null) {
      if (m.kind !== MessageKind.Hello) throw new PeerProtocolError('order', `sent ${messageKindName(m.kind)} before Hello`, m.kind);
      if (m.protocol !== PROTOCOL_VERSION)
        throw new PeerProtocolError('version', `speaks protocol version ${m.protocol}; this host speaks ${PROTOCOL_VERSION}`, m.kind);
      this.hello = m;
      if (this.helloTimer) clearTimeout(this.helloTimer);
      this.helloTimer = null;
      this.startHeartbeat();
      this.resolveReady(m);
      return;
    }
    if (m.kind === MessageKind.Ack) {
      if (m.bytes > this.stats.dataBytesSent || m.bytes < this.ackedBytes)
        throw new PeerProtocolError('malformed', `acknowledged ${m.bytes} data bytes; ${this.ackedBytes}..${this.stats.dataBytesSent} were possible`, m.kind);
      this.ackedBytes = m.bytes;
      this.stats.unackedBytes = this.stats.dataBytesSent - this.ackedBytes;
      this.lastAck = m;
      this.wake('window');
      for (const l of this.ackListeners) l(m);
      return;
    }
    this.order.check(m);
    if (isDataMessage(m)) this.stats.dataBytesReceived += dataBytes(m);
    this.queuedBytes += queuedCost(m);
    if (!this.paused && this.queuedBytes > this.tuning.windowBytes) {
      this.paused = true;
      this.socket.pause();
    }
    const w = this.waiters.shift();
    if (w !== undefined) {
      if (w.timer) clearTimeout(w.timer);
      this.taken(m);
      w.resolve(m);
    } else {
      this.inbox.push(m);
    }
  }

  /** The application has taken `m`: account for it, acknowledge, let the socket flow again. */
  private taken(m: PeerMessage): void {
    this.queuedBytes -= queuedCost(m);
    this.resumeIfRoom();
    if (!isDataMessage(m)) return;
    const n = dataBytes(m);
    this.consumedBytes += n;
    if (m.kind === MessageKind.Changes || m.kind === MessageKind.Final) this.receivedVersion = Math.max(this.receivedVersion, m.to);
    // Ack a quarter window at a time, and the final delta at once: the sender is waiting for it.
    if (m.kind === MessageKind.Final || this.consumedBytes - this.ackedSentAt >= this.tuning.windowBytes / 4) this.sendAck();
  }

  private resumeIfRoom(): void {
    if (this.paused && this.queuedBytes <= this.tuning.windowBytes / 2 && this.error === null) {
      this.paused = false;
      // The silence while we held the socket paused was ours.
      this.lastReceivedAt = Date.now();
      this.socket.resume();
    }
  }

  /** Untaken messages waiting in the inbox (for tests). */
  get waiting(): number {
    return this.inbox.length;
  }

  private onEnd(): void {
    if (this.error === null && !this.reader.atBoundary)
      this.fail(
        new PeerChannelError(
          this.name,
          `peer ${this.name} closed the connection in the middle of a frame (${this.reader.buffered} bytes of it received); connection closed`,
          new PeerProtocolError('truncated', 'ended mid-frame'),
        ),
      );
    this.ended = true;
    if (this.hello === null && this.error === null) this.fail(new PeerClosedError(this.name));
    this.failWaiters();
  }

  /** A protocol violation: tell the peer why (best effort), stop reading, close. */
  private abort(err: PeerProtocolError, code: PeerErrorCode): void {
    const e = new PeerChannelError(this.name, `peer ${this.name} ${err.message}; connection closed`, err);
    if (this.error !== null) return;
    this.error = e;
    this.socket.pause();
    try {
      if (this.hello !== null && !this.socket.writableEnded) {
        this.writeFrame({ kind: MessageKind.Error, code, text: e.message });
        this.writeFrame({ kind: MessageKind.Close, reason: CloseReason.Failed, text: 'protocol error' });
      }
    } catch {
      // Telling the peer is a courtesy; the close below is what matters.
    }
    this.socket.end();
    setTimeout(() => this.socket.destroy(), 1000).unref();
    this.settleFailure(e);
  }

  private fail(e: Error): void {
    if (this.error !== null) return;
    this.error = e;
    this.socket.destroy();
    this.settleFailure(e);
  }

  private settleFailure(e: Error): void {
    if (this.helloTimer) clearTimeout(this.helloTimer);
    this.helloTimer = null;
    this.stopHeartbeat();
    this.rejectReady(e);
    this.failWaiters();
    this.wake('drain');
    this.wake('window');
  }

  private endError(): Error {
    return this.error ?? new PeerClosedError(this.name);
  }

  private failWaiters(): void {
    if (this.error !== null) {
      // Nobody will take them now: a failed connection frees what it held.
      this.inbox.length = 0;
      this.queuedBytes = 0;
    }
    if (this.hello === null) this.rejectReady(this.endError());
    this.wake('drain');
    this.wake('window');
    const ws = this.waiters.splice(0);
    for (const w of ws) {
      if (w.timer) clearTimeout(w.timer);
      w.reject(this.endError());
    }
  }

  /** Display name, for logs. */
  toString(): string {
    return `peer ${formatPeerAddress(this.remote)}`;
  }
}
