import { AckMessage, decodeFrame, DEFAULT_MAX_FRAME_BYTES, encodeFrameBytes, HelloMessage, MessageKind, PeerMessage, PeerRole, PROTOCOL_VERSION } from '../../../../plugin/peer-protocol';
import { Clock } from '../../../../plugin/ports/clock';
import {
  formatPeerAddress,
  PeerAddress,
  PeerCloseInfo,
  PeerConnection,
  PeerConnectionStats,
  PeerDialOptions,
  PeerListener,
  PeerListenerStats,
  PeerPort,
} from '../../../../plugin/ports/peer-port';

/** An orderly end, as the real channel reports it. */
export class FakePeerClosedError extends Error {
  constructor(name: string) {
    super(`connection to ${name} is closed`);
    this.name = 'PeerClosedError';
  }
}

interface Waiter {
  resolve: (m: PeerMessage) => void;
  reject: (e: Error) => void;
  cancel: (() => void) | null;
}

function hello(role: PeerRole, hostId: string, maxFrameBytes: number): HelloMessage {
  return { kind: MessageKind.Hello, protocol: PROTOCOL_VERSION, role, maxFrameBytes, hostId };
}

/**
 * One end of an in-memory connection. Every message goes through the real
 * frame codec (so what the engine sends must be encodable and within the
 * peer's limit) and lands in the other end's queue.
 */
export class FakeConnection implements PeerConnection {
  other!: FakeConnection;
  /** Every message this end sent (Acks excepted), decoded as the other end saw it. */
  readonly sent: PeerMessage[] = [];
  readonly closed: Promise<PeerCloseInfo>;
  lastAck: AckMessage | null = null;
  readonly stats: PeerConnectionStats = { framesSent: 0, framesReceived: 0, dataBytesSent: 0, dataBytesReceived: 0, unackedBytes: 0 };
  /** Runs before each send is delivered: a slow link (await something) or a fault. */
  beforeSend: ((m: PeerMessage) => Promise<void>) | null = null;
  private inbox: PeerMessage[] = [];
  private waiters: Waiter[] = [];
  private ackListeners: Array<(a: AckMessage) => void> = [];
  private ended = false;
  private error: Error | null = null;
  private resolveClosed!: (i: PeerCloseInfo) => void;
  private isClosed = false;
  private chain: Promise<unknown> = Promise.resolve();

  constructor(
    readonly remote: PeerAddress,
    readonly peer: HelloMessage,
    private readonly clock: Clock,
  ) {
    this.closed = new Promise((r) => (this.resolveClosed = r));
  }

  get isEnded(): boolean {
    return this.ended;
  }

  send(message: PeerMessage): Promise<void> {
    const p = this.chain.then(() => this.transmit(message));
    this.chain = p.catch(() => undefined);
    return p;
  }

  private async transmit(message: PeerMessage): Promise<void> {
    if (this.beforeSend) await this.beforeSend(message);
    if (this.ended) throw this.error ?? new FakePeerClosedError(formatPeerAddress(this.remote));
    const m = decodeFrame(encodeFrameBytes(message, this.peer.maxFrameBytes), this.peer.maxFrameBytes);
    this.stats.framesSent++;
    this.sent.push(m);
    this.other.deliver(m);
  }

  private deliver(m: PeerMessage): void {
    if (this.ended) return;
    this.stats.framesReceived++;
    const w = this.waiters.shift();
    if (w) {
      w.cancel?.();
      w.resolve(m);
    } else this.inbox.push(m);
  }

  receive(timeoutMs?: number): Promise<PeerMessage> {
    const m = this.inbox.shift();
    if (m !== undefined) return Promise.resolve(m);
    if (this.ended) return Promise.reject(this.error ?? new FakePeerClosedError(formatPeerAddress(this.remote)));
    return new Promise((resolve, reject) => {
      const w: Waiter = { resolve, reject, cancel: null };
      if (timeoutMs !== undefined)
        w.cancel = this.clock.after(timeoutMs, () => {
          this.waiters = this.waiters.filter((x) => x !== w);
          reject(new Error(`no message from ${formatPeerAddress(this.remote)} within ${timeoutMs} ms`));
        });
      this.waiters.push(w);
    });
  }

  async *[Symbol.asyncIterator](): AsyncIterator<PeerMessage> {
    for (;;) {
      let m: PeerMessage;
      try {
        m = await this.receive();
      } catch (e) {
        if (e instanceof FakePeerClosedError) return;
        throw e;
      }
      yield m;
    }
  }

  async acknowledge(committed: number): Promise<void> {
    if (this.ended) return;
    this.other.takeAck({ kind: MessageKind.Ack, bytes: 0, received: committed, committed });
  }

  private takeAck(a: AckMessage): void {
    this.lastAck = a;
    for (const l of this.ackListeners) l(a);
  }

  onAck(listener: (ack: AckMessage) => void): void {
    this.ackListeners.push(listener);
  }

  /** Orderly end: both ends see the messages already sent, then PeerClosedError. */
  async close(): Promise<void> {
    await this.chain;
    this.end(null, true);
    this.other.end(null, false);
    await this.closed;
  }

  /** Abrupt end: the other end reads what already arrived, then the reset. */
  destroy(error?: Error): void {
    this.end(error ?? null, true);
    this.other.end(new Error(`connection reset by ${formatPeerAddress(this.other.remote)}`), false);
  }

  private end(error: Error | null, local: boolean): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.ended = true;
    this.error = error;
    const ws = this.waiters.splice(0);
    for (const w of ws) {
      w.cancel?.();
      w.reject(error ?? new FakePeerClosedError(formatPeerAddress(this.remote)));
    }
    this.resolveClosed({ error, local });
  }
}

interface Listening {
  address: PeerAddress;
  onConnection: (c: PeerConnection) => void;
  hostId: string;
}

/**
 * The wire between hosts: each host gets a PeerPort from port(). A listener
 * is found by ADDR:PORT; connect() makes a linked pair of connections.
 */
export class FakeNetwork {
  private readonly listening = new Map<string, Listening>();
  /** Every connection made, dialling end first: [dialler, listener]. */
  readonly pairs: Array<[FakeConnection, FakeConnection]> = [];
  private nextPort = 40000;
  /** Given to the listening end of every new connection as its beforeSend (a slow source link). */
  listenerBeforeSend: ((m: PeerMessage) => Promise<void>) | null = null;
  /** "FROM>TO" host pairs whose dials fail (a partition). */
  private readonly cut = new Set<string>();

  constructor(
    private readonly clock: Clock,
    /** The frame limit every host announces in its Hello. */
    private readonly maxFrameBytes = DEFAULT_MAX_FRAME_BYTES,
  ) {}

  /**
   * Partition two hosts: their connections end with an error on both ends
   * (as a silent link does once the heartbeats are missed), and dials either
   * way fail until heal().
   */
  partition(a: string, b: string): void {
    this.cut.add(`${a}>${b}`);
    this.cut.add(`${b}>${a}`);
    for (const [x, y] of this.pairs) {
      const hosts = [x.other.remote.host, y.other.remote.host];
      if (hosts.includes(a) && hosts.includes(b) && !x.isEnded) x.destroy(new Error('no frame (not even a heartbeat); the link is silent'));
    }
  }

  heal(): void {
    this.cut.clear();
  }

  /** The PeerPort of the host at `host`. */
  port(host: string): PeerPort {
    return {
      listen: async (address, onConnection) => this.listen(host, address, onConnection),
      connect: async (address, options) => this.connect(host, address, options),
    };
  }

  /** Accept connections at `address` with a test-scripted peer (a hostile source). */
  listenRaw(address: PeerAddress, onConnection: (c: FakeConnection) => void): void {
    this.listening.set(formatPeerAddress(address), { address, onConnection: (c) => onConnection(c as FakeConnection), hostId: `raw ${address.host}` });
  }

  /** Dial like a daemon would, from `fromHost`. */
  dial(fromHost: string, address: PeerAddress, role: PeerRole): FakeConnection {
    return this.connect(fromHost, address, { role });
  }

  /** The connections of which `host` is one end. */
  connectionsOf(host: string): FakeConnection[] {
    const out: FakeConnection[] = [];
    for (const [a, b] of this.pairs) {
      if (a.other.remote.host === host) out.push(a);
      if (b.other.remote.host === host) out.push(b);
    }
    return out;
  }

  private listen(host: string, address: PeerAddress, onConnection: (c: PeerConnection) => void): PeerListener {
    const key = formatPeerAddress(address);
    if (this.listening.has(key)) throw new Error(`listen ${key}: address in use`);
    this.listening.set(key, { address, onConnection, hostId: host });
    const stats: PeerListenerStats = { connections: 0, authenticated: 0, refused: 0, timedOut: 0, evicted: 0, protocolErrors: 0, framesReceived: 0, pending: 0, active: 0 };
    return {
      address,
      stats,
      close: async () => {
        this.listening.delete(key);
      },
    };
  }

  private connect(fromHost: string, address: PeerAddress, options: PeerDialOptions): FakeConnection {
    const key = formatPeerAddress(address);
    if (this.cut.has(`${fromHost}>${address.host}`)) throw new Error(`connect ETIMEDOUT ${key}`);
    const l = this.listening.get(key);
    if (!l) throw new Error(`connect ECONNREFUSED ${key}`);
    const mine = { host: fromHost, port: this.nextPort++ };
    const dialler = new FakeConnection(address, hello(PeerRole.Listener, l.hostId, this.maxFrameBytes), this.clock);
    const listener = new FakeConnection(mine, hello(options.role, fromHost, this.maxFrameBytes), this.clock);
    dialler.other = listener;
    listener.other = dialler;
    listener.beforeSend = this.listenerBeforeSend;
    this.pairs.push([dialler, listener]);
    queueMicrotask(() => l.onConnection(listener));
    return dialler;
  }
}
