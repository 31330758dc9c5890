import { AckMessage, HelloMessage, MessageKind, PeerMessage } from '../../plugin/peer-protocol';
import {
  PeerAddress,
  PeerCloseInfo,
  PeerConnection,
  PeerConnectionStats,
  PeerDialOptions,
  PeerListener,
  PeerPort,
} from '../../plugin/ports/peer-port';
import { RefusalStage } from './metric-families';

/**
 * A PeerPort that counts refused peers: the listener's own counts of failed
 * handshakes and protocol breaks, and the accepted connections this daemon
 * answered with an Error message (a Start for a VM it does not run, a busy
 * VM, a request it does not serve).
 */
export class MeteredPeerPort implements PeerPort {
  private readonly listeners: PeerListener[] = [];
  private answeredWithError = 0;

  constructor(private readonly inner: PeerPort) {}

  async listen(address: PeerAddress, onConnection: (connection: PeerConnection) => void): Promise<PeerListener> {
    const listener = await this.inner.listen(address, (c) => onConnection(new ErrorCountingConnection(c, () => this.answeredWithError++)));
    this.listeners.push(listener);
    return listener;
  }

  connect(address: PeerAddress, options: PeerDialOptions): Promise<PeerConnection> {
    return this.inner.connect(address, options);
  }

  refusals(): Record<RefusalStage, number> {
    let handshake = 0;
    let protocol = 0;
    for (const l of this.listeners) {
      handshake += l.stats.refused + l.stats.timedOut;
      protocol += l.stats.protocolErrors;
    }
    return { handshake, protocol, request: this.answeredWithError };
  }
}

/** An accepted connection, passed through, that reports the first Error it sends. */
class ErrorCountingConnection implements PeerConnection {
  private reported = false;

  constructor(
    private readonly inner: PeerConnection,
    private readonly onError: () => void,
  ) {}

  get remote(): PeerAddress {
    return this.inner.remote;
  }
  get peer(): HelloMessage {
    return this.inner.peer;
  }
  get lastAck(): AckMessage | null {
    return this.inner.lastAck;
  }
  get stats(): PeerConnectionStats {
    return this.inner.stats;
  }
  get closed(): Promise<PeerCloseInfo> {
    return this.inner.closed;
  }

  send(message: PeerMessage): Promise<void> {
    if (message.kind === MessageKind.Error && !this.reported) {
      this.reported = true;
      this.onError();
    }
    return this.inner.send(message);
  }
  receive(timeoutMs?: number): Promise<PeerMessage> {
    return this.inner.receive(timeoutMs);
  }
  [Symbol.asyncIterator](): AsyncIterator<PeerMessage> {
    return this.inner[Symbol.asyncIterator]();
  }
  acknowledge(committed: number): Promise<void> {
    return this.inner.acknowledge(committed);
  }
  onAck(listener: (ack: AckMessage) => void): void {
    this.inner.onAck(listener);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
  destroy(error?: Error): void {
    this.inner.destroy(error);
  }
}
