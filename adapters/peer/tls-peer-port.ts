import { isIP, connect as tcpConnect, Socket } from 'node:net';
import { SecureContext, connect as tlsConnect } from 'node:tls';
import { DEFAULT_MAX_FRAME_BYTES, MIN_MAX_FRAME_BYTES } from '../../plugin/peer-protocol';
import { formatPeerAddress, PeerAddress, PeerConnection, PeerDialOptions, PeerListener, PeerPort } from '../../plugin/ports/peer-port';
import { PeerChannelError, PeerTimeoutError } from './peer-errors';
import { encodeRelayPreamble } from './relay-preamble';
import { clientSecureContext, clientTlsOptions, PeerCredentials } from './tls-credentials';
import { TlsPeerConnection } from './tls-peer-connection';
import { TlsPeerListener } from './tls-peer-listener';

/** Settings of the peer channel; every limit has a default that suits a daemon. */
export interface TlsPeerPortOptions {
  credentials: PeerCredentials;
  /** This host's id, sent in Hello (the hostname, usually). */
  hostId: string;
  /** Largest frame payload accepted (default 4 MiB). */
  maxFrameBytes?: number;
  /** Unacknowledged data a sender may have in flight (default 16 MiB). */
  windowBytes?: number;
  /** TCP accept to verified Hello, on the listening side (default 3 s: three round trips take well under 1 s between data centres). */
  handshakeTimeoutMs?: number;
  /** Sockets in the handshake at once before one of the busiest source is evicted (default 64). */
  maxPendingHandshakes?: number;
  /** Sockets in the handshake from one source address before its oldest is evicted (default 16: a relay carries many peers from one address). */
  maxPendingPerSource?: number;
  /**
   * With certificates: the identities (subjectAltName DNS names or IP
   * addresses) accepted from dialling peers. A certificate the CA signed
   * that names none of them is refused.
   */
  allowedIdentities?: readonly string[];
  /** A frame goes out at least this often on an idle connection (default 1 s). */
  heartbeatMs?: number;
  /** A connection that receives nothing for this long while it reads fails: the link is silent (default 5 s). */
  silenceMs?: number;
  /** Dialling: TCP + TLS + Hello (default 10 s) unless the call gives one. */
  connectTimeoutMs?: number;
}

/** PeerPort over TLS 1.3 (pre-shared key or mutual certificates). */
export class TlsPeerPort implements PeerPort {
  private readonly maxFrameBytes: number;
  private readonly windowBytes: number;
  /** One OpenSSL client context for every dial (see clientSecureContext). */
  private readonly clientContext: SecureContext;

  constructor(private readonly options: TlsPeerPortOptions) {
    this.maxFrameBytes = options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
    this.windowBytes = options.windowBytes ?? 16 << 20;
    if (!(this.maxFrameBytes >= MIN_MAX_FRAME_BYTES && this.maxFrameBytes <= 0xffff_ffff))
      throw new RangeError(`frame limit ${this.maxFrameBytes} is out of range (${MIN_MAX_FRAME_BYTES}..2^32-1)`);
    if (!(this.windowBytes > 0)) throw new RangeError(`window ${this.windowBytes} must be positive`);
    this.clientContext = clientSecureContext(options.credentials);
  }

  private tuning(helloTimeoutMs: number) {
    return {
      hostId: this.options.hostId,
      maxFrameBytes: this.maxFrameBytes,
      windowBytes: this.windowBytes,
      helloTimeoutMs,
      heartbeatMs: this.options.heartbeatMs,
      silenceMs: this.options.silenceMs,
    };
  }

  listen(address: PeerAddress, onConnection: (c: PeerConnection) => void): Promise<PeerListener> {
    const handshakeTimeoutMs = this.options.handshakeTimeoutMs ?? 3_000;
    return new TlsPeerListener(
      this.options.credentials,
      this.tuning(handshakeTimeoutMs),
      { handshakeTimeoutMs, maxPendingHandshakes: this.options.maxPendingHandshakes ?? 64, maxPendingPerSource: this.options.maxPendingPerSource ?? 16 },
      onConnection,
      this.options.allowedIdentities ?? [],
    ).start(address);
  }

  connect(address: PeerAddress, options: PeerDialOptions): Promise<PeerConnection> {
    const timeoutMs = options.timeoutMs ?? this.options.connectTimeoutMs ?? 10_000;
    const name = formatPeerAddress(address);
    const hop = options.via ?? address;
    return new Promise<PeerConnection>((resolve, reject) => {
      let settled = false;
      let raw: Socket | null = null;
      const finish = (err: Error | null, c?: PeerConnection): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (err) {
          raw?.destroy();
          reject(err);
        } else if (c) resolve(c);
      };
      const timer = setTimeout(() => finish(new PeerTimeoutError(name, 'authenticated connection', timeoutMs)), timeoutMs);
      raw = tcpConnect(hop.port, hop.host);
      // `on`, not `once`: a socket that fails to connect with the relay
      // preamble already written reports the failure more than once, and a
      // second report without a listener would crash the daemon.
      raw.on('error', (err) =>
        finish(new PeerChannelError(name, `cannot connect to peer ${name}${options.via ? ` via relay ${formatPeerAddress(options.via)}` : ''}: ${err.message}`, err)),
      );
      if (options.via) raw.write(encodeRelayPreamble(address));
      const creds = this.options.credentials;
      const tls = tlsConnect({
        socket: raw,
        host: address.host,
        // SNI takes names only; an IP address is checked against the certificate's IP SANs instead.
        ...(isIP(address.host) === 0 ? { servername: address.host } : {}),
        ...clientTlsOptions(creds, this.clientContext),
      });
      tls.on('error', (err) =>
        finish(
          options.via && raw?.bytesRead === 0
            ? new PeerChannelError(
                name,
                `relay ${formatPeerAddress(options.via)} closed the connection to ${name} before any reply (the target is not among its --relay-allow targets, or it cannot reach it): ${err.message}`,
                err,
              )
            : new PeerChannelError(name, `peer ${name} refused the connection or failed authentication: ${err.message}`, err),
        ),
      );
      tls.once('secureConnect', () => {
        const remote: PeerAddress = { host: raw?.remoteAddress ?? hop.host, port: raw?.remotePort ?? hop.port };
        const c = new TlsPeerConnection(tls, remote, options.role, this.tuning(timeoutMs));
        c.ready.then(
          () => finish(null, c),
          (err: Error) => finish(err),
        );
      });
    });
  }
}
