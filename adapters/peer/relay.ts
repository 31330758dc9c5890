import { connect, createServer, Server, Socket } from 'node:net';
import { formatPeerAddress, PeerAddress } from '../../plugin/ports/peer-port';
import { RelayPreambleError, RelayPreambleReader } from './relay-preamble';

/** What a relay may do. */
export interface RelayOptions {
  listen: PeerAddress;
  /**
   * Targets the relay forwards to. Required: a relay that forwards anywhere
   * is an open proxy into the cluster network.
   */
  allow: PeerAddress[];
  /** Time to send the preamble, and to reach the target. */
  preambleTimeoutMs?: number;
  /** Most connections waiting for their preamble; a new one evicts the oldest. */
  maxPending?: number;
  /** Told of every refusal, with the reason (the relay's log). */
  onRefuse?: (reason: string, from: string) => void;
  /** Sees every forwarded chunk (tests prove the relay only carries ciphertext). */
  tap?: (direction: 'to-target' | 'to-dialer', chunk: Buffer) => void;
}

/** Counters of a relay. */
export interface RelayStats {
  connections: number;
  /** Connections forwarded to a target. */
  relayed: number;
  /** Bad preamble, target not allowed, unreachable target, timeout. */
  refused: number;
  bytesToTarget: number;
  bytesToDialer: number;
}

/**
 * A relay between peers that cannot reach each other directly. It reads a
 * one-line plaintext preamble naming the target, connects there, and from
 * then on copies raw bytes both ways. The peers run their TLS handshake
 * end to end through it, so the relay holds no key, cannot read the
 * session and cannot alter it undetected (TLS records are authenticated);
 * the most it can do is drop the connection.
 */
export class PeerRelay {
  readonly stats: RelayStats = { connections: 0, relayed: 0, refused: 0, bytesToTarget: 0, bytesToDialer: 0 };
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  private readonly pending = new Map<Socket, NodeJS.Timeout>();
  private readonly allowed: Set<string>;
  private bound: PeerAddress = { host: '', port: 0 };

  constructor(private readonly options: RelayOptions) {
    this.allowed = new Set(options.allow.map(formatPeerAddress));
    this.server = createServer((s) => this.accept(s));
    this.server.on('error', () => undefined);
  }

  get address(): PeerAddress {
    return this.bound;
  }

  start(): Promise<this> {
    const { host, port } = this.options.listen;
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        const a = this.server.address();
        if (a !== null && typeof a === 'object') this.bound = { host: a.address, port: a.port };
        resolve(this);
      });
    });
  }

  async close(): Promise<void> {
    const done = new Promise<void>((r) => this.server.close(() => r()));
    for (const s of this.sockets) s.destroy();
    await done;
  }

  private track(s: Socket): void {
    this.sockets.add(s);
    s.on('error', () => undefined);
    s.once('close', () => this.sockets.delete(s));
  }

  private accept(dialer: Socket): void {
    this.stats.connections++;
    this.track(dialer);
    const max = this.options.maxPending ?? 64;
    if (this.pending.size >= max) {
      const [oldest] = this.pending.keys();
      this.refuse(oldest, 'too many connections waiting for their preamble; the oldest goes');
    }
    this.pending.set(
      dialer,
      setTimeout(() => this.refuse(dialer, 'no preamble in time'), this.options.preambleTimeoutMs ?? 5000),
    );
    const reader = new RelayPreambleReader();
    const onData = (chunk: Buffer): void => {
      let got;
      try {
        got = reader.push(chunk);
      } catch (err) {
        if (err instanceof RelayPreambleError) return this.refuse(dialer, `bad preamble: ${err.message}`);
        throw err;
      }
      if (got === null) return;
      dialer.off('data', onData);
      dialer.pause();
      if (!this.allowed.has(formatPeerAddress(got.target))) return this.refuse(dialer, `target ${formatPeerAddress(got.target)} is not allowed`);
      this.forward(dialer, got.target, got.rest);
    };
    dialer.on('data', onData);
  }

  private forward(dialer: Socket, target: PeerAddress, rest: Buffer): void {
    const up = connect(target.port, target.host);
    this.track(up);
    up.once('error', (e) => this.refuse(dialer, `target ${formatPeerAddress(target)} unreachable: ${e.message}`));
    up.once('connect', () => {
      const t = this.pending.get(dialer);
      if (t) clearTimeout(t);
      this.pending.delete(dialer);
      this.stats.relayed++;
      const tap = this.options.tap;
      if (rest.length) {
        tap?.('to-target', rest);
        this.stats.bytesToTarget += rest.length;
        up.write(rest);
      }
      dialer.on('data', (c: Buffer) => {
        tap?.('to-target', c);
        this.stats.bytesToTarget += c.length;
      });
      up.on('data', (c: Buffer) => {
        tap?.('to-dialer', c);
        this.stats.bytesToDialer += c.length;
      });
      // pipe() carries backpressure both ways; either side ending ends the other.
      dialer.pipe(up);
      up.pipe(dialer);
      dialer.once('close', () => up.destroy());
      up.once('close', () => dialer.destroy());
      dialer.resume();
    });
  }

  private refuse(dialer: Socket, reason: string): void {
    const t = this.pending.get(dialer);
    if (t === undefined) return;
    clearTimeout(t);
    this.pending.delete(dialer);
    this.stats.refused++;
    this.options.onRefuse?.(reason, `${dialer.remoteAddress ?? '?'}:${dialer.remotePort ?? '?'}`);
    dialer.destroy();
  }
}
