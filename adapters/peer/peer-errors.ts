import { PeerProtocolError } from '../../plugin/peer-protocol';

/**
 * A connection to a peer failed. The message names the peer and says what
 * was kept: "peer 198.51.100.2 sent a frame of 9 MiB (limit 4 MiB);
 * connection closed". The session layer decides what that means for the
 * migration (it rolls back, so nothing of the session is imported).
 */
export class PeerChannelError extends Error {
  constructor(
    /** The peer's address as text. */
    readonly peer: string,
    message: string,
    /** The underlying problem (PeerProtocolError, a socket error). */
    override readonly cause?: unknown,
  ) {
    super(message);
    this.name = 'PeerChannelError';
  }

  /** What kind of protocol problem closed the connection, if that was the reason. */
  get problem(): PeerProtocolError['problem'] | null {
    return this.cause instanceof PeerProtocolError ? this.cause.problem : null;
  }
}

/** receive() after the peer ended the connection in an orderly way. */
export class PeerClosedError extends PeerChannelError {
  constructor(peer: string) {
    super(peer, `peer ${peer} closed the connection`);
    this.name = 'PeerClosedError';
  }
}

/** A wait on a peer (handshake, Hello, receive) took too long. */
export class PeerTimeoutError extends PeerChannelError {
  constructor(peer: string, what: string, ms: number) {
    super(peer, `peer ${peer}: no ${what} within ${ms} ms`);
    this.name = 'PeerTimeoutError';
  }
}
