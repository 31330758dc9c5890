import { AckMessage, HelloMessage, PeerMessage, PeerRole } from '../peer-protocol';
import { portToken } from './port-token';

/** Where a peer listens: "198.51.100.2:7471", "[2001:db8::2]:7471". */
export interface PeerAddress {
  host: string;
  port: number;
}

/** "host:port", with brackets around IPv6 hosts. */
export function formatPeerAddress(a: PeerAddress): string {
  return a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

/** How a connection ended. */
export interface PeerCloseInfo {
  /** Why it ended abnormally (protocol violation, oversize frame, reset); null after an orderly close. */
  error: Error | null;
  /** Whether this side ended it. */
  local: boolean;
}

/** Counters of one connection. */
export interface PeerConnectionStats {
  framesSent: number;
  framesReceived: number;
  /** Payload bytes of data frames (snapshot, changes, final). */
  dataBytesSent: number;
  dataBytesReceived: number;
  /** Data bytes sent and not yet acknowledged by the receiver: what the window holds. */
  unackedBytes: number;
}

/**
 * One authenticated connection to a peer, after both Hellos. Carries one
 * session (or one who-has query). Acks are handled by the connection itself:
 * it acknowledges data as the application takes it and holds send() while
 * the window of unacknowledged bytes is full, so a slow receiver slows the
 * sender instead of filling memory.
 */
export interface PeerConnection {
  /** The address the bytes came from (the relay's, when relayed). */
  readonly remote: PeerAddress;
  /** The other side's Hello: host id, role, its frame limit. */
  readonly peer: HelloMessage;
  /**
   * Queue a message. Resolves once it has been handed to the socket and the
   * socket and the window allow more (so `await send()` in a loop is the
   * backpressure). Rejects if the connection is or gets closed, or the
   * message exceeds the peer's frame limit (RangeError; nothing sent).
   */
  send(message: PeerMessage): Promise<void>;
  /**
   * The next message (Acks excepted, see onAck). Rejects with the
   * connection's error when it ends abnormally, with a PeerClosedError after
   * an orderly end, or on timeout.
   */
  receive(timeoutMs?: number): Promise<PeerMessage>;
  /** Every message until the connection ends; the loop throws the connection's error, if any. */
  [Symbol.asyncIterator](): AsyncIterator<PeerMessage>;
  /** Report the version committed on this side; travels with the next Ack. */
  acknowledge(committed: number): Promise<void>;
  /** Be told of every Ack the peer sends (its progress, for resume bookkeeping). */
  onAck(listener: (ack: AckMessage) => void): void;
  /** The last Ack from the peer, if any. */
  readonly lastAck: AckMessage | null;
  readonly stats: PeerConnectionStats;
  /** Flush what was sent, then end the connection. Idempotent. */
  close(): Promise<void>;
  /** Drop the connection at once (an error path). */
  destroy(error?: Error): void;
  /** Settles when the connection has ended, however. Never rejects. */
  readonly closed: Promise<PeerCloseInfo>;
}

/** Counters of a listener: what a status call and the hostile-peer tests read. */
export interface PeerListenerStats {
  /** TCP connections accepted. */
  connections: number;
  /** Connections that passed the TLS handshake and the Hello exchange. */
  authenticated: number;
  /** TLS handshakes that failed (no key, wrong key, plain TCP, bad certificate). */
  refused: number;
  /** Sockets dropped for not finishing the handshake in time. */
  timedOut: number;
  /** Unauthenticated sockets dropped to make room when the cap was reached. */
  evicted: number;
  /** Authenticated connections closed for breaking the protocol (garbage, oversize, order). */
  protocolErrors: number;
  /** Frames received on all connections. */
  framesReceived: number;
  /** Sockets still in the handshake. */
  pending: number;
  /** Open authenticated connections. */
  active: number;
}

/** A listening socket; stays up whatever single connections do. */
export interface PeerListener {
  readonly address: PeerAddress;
  readonly stats: PeerListenerStats;
  /** Stop accepting and end every connection. */
  close(): Promise<void>;
}

/** How to dial. */
export interface PeerDialOptions {
  /** What this side is for; the peer sees it in Hello. */
  role: PeerRole;
  /** Give up when TCP + TLS + Hello take longer. */
  timeoutMs?: number;
  /** Reach the peer through this relay, which forwards the TLS bytes blind. */
  via?: PeerAddress;
}

/** The authenticated peer channel (TLS with a pre-shared key or mutual certificates). */
export interface PeerPort {
  /**
   * Accept peers on `address` (port 0: an ephemeral port, see the
   * listener's address). `onConnection` gets each connection after
   * authentication and the Hello exchange; unauthenticated sockets never
   * reach it.
   */
  listen(address: PeerAddress, onConnection: (connection: PeerConnection) => void): Promise<PeerListener>;
  /** Dial a peer; resolves after authentication and the Hello exchange. */
  connect(address: PeerAddress, options: PeerDialOptions): Promise<PeerConnection>;
}
export const PeerPort = portToken<PeerPort>('PeerPort');
