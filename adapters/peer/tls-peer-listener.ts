import { createServer, Server, Socket } from 'node:net';
import { createServer as createTlsServer, Server as TlsServer, TLSSocket } from 'node:tls';
import { PeerRole } from '../../plugin/peer-protocol';
import { PeerAddress, PeerConnection, PeerListener, PeerListenerStats } from '../../plugin/ports/peer-port';
import { PeerChannelError } from './peer-errors';
import { certificateIdentities, identityKey, PeerCredentials, serverTlsOptions } from './tls-credentials';
import { ConnectionTuning, TlsPeerConnection } from './tls-peer-connection';

/** Limits on sockets that have not proven they belong to the cluster. */
export interface HandshakeLimits {
  /** Time from TCP accept to a verified Hello; idle or slow sockets are dropped after it. */
  handshakeTimeoutMs: number;
  /** Most sockets in the handshake at once; a new one then evicts the oldest of the busiest source. */
  maxPendingHandshakes: number;
  /** Most sockets in the handshake from one source address; a new one evicts that source's oldest. */
  maxPendingPerSource: number;
}

interface Pending {
  raw: Socket;
  source: string;
  timer: NodeJS.Timeout;
  /** The TLS handshake succeeded; only the Hello is missing. */
  tlsPassed: boolean;
}

/**
 * Accepts peers. This class owns the TCP listener and every socket that has
 * not yet proven it belongs to the cluster: it times each one out, evicts
 * when too many wait, and counts refusals. Eviction is per source address:
 * a new socket evicts the oldest of its own source once that source holds
 * its share, and otherwise, when the listener is full, the oldest of the
 * source that holds the most. A flood from one address (a VM on a bridge the
 * listener faces, say) therefore only ever churns its own slots, and a real
 * peer's handshake from another address is never the one pushed out.
 *
 * Each accepted socket is handed to a tls.Server that never listens itself (emit('connection')),
 * so Node's own certificate checks (requestCert + rejectUnauthorized) apply.
 * tls.Server alone leaves a socket that hit its handshake timeout open when
 * a 'tlsClientError' listener exists (seen on Node 20): that is how idle
 * sockets pile up, hence the separate timer here.
 *
 * No frame is read before the TLS handshake has authenticated the peer:
 * the frame reader only exists on the connection made after it.
 */
export class TlsPeerListener implements PeerListener {
  readonly stats: PeerListenerStats = {
    connections: 0,
    authenticated: 0,
    refused: 0,
    timedOut: 0,
    evicted: 0,
    protocolErrors: 0,
    framesReceived: 0,
    pending: 0,
    active: 0,
  };
  /** Keyed by the remote "address:port", which a TLS socket and its TCP socket share. */
  private readonly pending = new Map<string, Pending>();
  /** Pending handshakes by source address, oldest first (Set keeps insertion order). */
  private readonly bySource = new Map<string, Set<string>>();
  private readonly active = new Set<TlsPeerConnection>();
  private readonly tlsServer: TlsServer;
  private readonly server: Server;
  private bound: PeerAddress = { host: '', port: 0 };
  /** With certificates: the identities (SANs) let in. Null with a pre-shared key, where the key is the identity. */
  private readonly allowed: Set<string> | null;

  constructor(
    credentials: PeerCredentials,
    private readonly tuning: ConnectionTuning,
    private readonly limits: HandshakeLimits,
    private readonly onConnection: (c: PeerConnection) => void,
    allowedIdentities: readonly string[] = [],
  ) {
    this.allowed = credentials.kind === 'certificate' ? new Set(allowedIdentities.map(identityKey)) : null;
    // Node's own handshake timer stays behind ours; ours is the one that counts and closes.
    this.tlsServer = createTlsServer({ ...serverTlsOptions(credentials), handshakeTimeout: limits.handshakeTimeoutMs + 1000 });
    this.tlsServer.on('tlsClientError', (_err, tls) => tls.destroy());
    this.tlsServer.on('secureConnection', (tls: TLSSocket) => this.authenticated(tls));
    this.server = createServer((raw) => this.accept(raw));
    // A listen socket error after start (EMFILE on accept) must not kill the daemon.
    this.server.on('error', () => undefined);
  }

  get address(): PeerAddress {
    return this.bound;
  }

  /** Bind; rejects with the bind error (EADDRINUSE, EACCES). */
  start(address: PeerAddress): Promise<this> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void => reject(new Error(`cannot listen for peers on ${address.host}:${address.port}: ${err.message}`));
      this.server.once('error', onError);
      this.server.listen(address.port, address.host, () => {
        this.server.off('error', onError);
        const a = this.server.address();
        if (a !== null && typeof a === 'object') this.bound = { host: a.address, port: a.port };
        resolve(this);
      });
    });
  }

  async close(): Promise<void> {
    const done = new Promise<void>((r) => this.server.close(() => r()));
    for (const [key, p] of this.pending) {
      this.drop(key);
      p.raw.destroy();
    }
    for (const c of this.active) c.destroy();
    await Promise.all([...this.active].map((c) => c.closed));
    await done;
  }

  private accept(raw: Socket): void {
    this.stats.connections++;
    raw.on('error', () => undefined);
    const source = raw.remoteAddress ?? '?';
    const key = `${source}:${raw.remotePort}`;
    const own = this.bySource.get(source);
    if (own !== undefined && own.size >= this.limits.maxPendingPerSource) this.evict(own);
    else if (this.pending.size >= this.limits.maxPendingHandshakes) this.evict(this.busiestSource());
    const timer = setTimeout(() => {
      this.stats.timedOut++;
      this.drop(key);
      raw.destroy();
    }, this.limits.handshakeTimeoutMs);
    this.pending.set(key, { raw, source, timer, tlsPassed: false });
    // Looked up again: the eviction above may have emptied (and removed) this source's set.
    const mine = this.bySource.get(source);
    if (mine !== undefined) mine.add(key);
    else this.bySource.set(source, new Set([key]));
    this.stats.pending = this.pending.size;
    raw.once('close', () => {
      const p = this.pending.get(key);
      if (p === undefined || p.raw !== raw) return;
      // Closed during the handshake: no key, wrong key, plain TCP, a certificate Node rejected.
      if (!p.tlsPassed) this.stats.refused++;
      this.drop(key);
    });
    this.tlsServer.emit('connection', raw);
  }

  private authenticated(tls: TLSSocket): void {
    const key = `${tls.remoteAddress}:${tls.remotePort}`;
    const p = this.pending.get(key);
    if (p === undefined) return void tls.destroy();
    if (this.allowed !== null && !this.identityAllowed(tls)) {
      // Signed by the CA, but not a host this one migrates with (libvirt's client certificates share that CA).
      this.stats.refused++;
      this.drop(key);
      return void tls.destroy();
    }
    p.tlsPassed = true;
    const c = new TlsPeerConnection(tls, { host: tls.remoteAddress ?? '?', port: tls.remotePort ?? 0 }, PeerRole.Listener, {
      ...this.tuning,
      onFrame: () => this.stats.framesReceived++,
    });
    void c.closed.then((info) => {
      if (this.active.delete(c)) this.stats.active = this.active.size;
      if (info.error instanceof PeerChannelError && info.error.problem !== null) this.stats.protocolErrors++;
    });
    c.ready.then(
      () => {
        if (this.pending.get(key) !== p) return c.destroy();
        this.drop(key);
        this.stats.authenticated++;
        this.active.add(c);
        this.stats.active = this.active.size;
        this.onConnection(c);
      },
      () => this.drop(key),
    );
  }

  /** Drops the oldest pending socket of one source: it has had the longest chance to authenticate. */
  private evict(keys: Set<string>): void {
    const oldestKey = keys.values().next().value as string;
    const oldest = this.pending.get(oldestKey);
    this.drop(oldestKey);
    this.stats.evicted++;
    oldest?.raw.destroy();
  }

  private busiestSource(): Set<string> {
    let busiest: Set<string> | undefined;
    for (const keys of this.bySource.values()) if (busiest === undefined || keys.size > busiest.size) busiest = keys;
    return busiest as Set<string>;
  }

  private identityAllowed(tls: TLSSocket): boolean {
    return certificateIdentities(tls.getPeerCertificate().subjectaltname).some((n) => this.allowed?.has(n));
  }

  private drop(key: string): void {
    const p = this.pending.get(key);
    if (p === undefined) return;
    clearTimeout(p.timer);
    this.pending.delete(key);
    const keys = this.bySource.get(p.source);
    keys?.delete(key);
    if (keys?.size === 0) this.bySource.delete(p.source);
    this.stats.pending = this.pending.size;
  }
}
