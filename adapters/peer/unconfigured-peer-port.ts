import { PeerAddress, PeerConnection, PeerListener, PeerPort } from '../../plugin/ports/peer-port';

/**
 * The peer channel of a daemon started without a key or certificates: it
 * runs (register, status work) but refuses to move state, with a message
 * that says what to configure.
 */
export class UnconfiguredPeerPort implements PeerPort {
  constructor(private readonly why: string) {}

  listen(_address: PeerAddress, _onConnection: (connection: PeerConnection) => void): Promise<PeerListener> {
    return Promise.reject(new Error(this.why));
  }

  connect(_address: PeerAddress): Promise<PeerConnection> {
    return Promise.reject(new Error(this.why));
  }
}
