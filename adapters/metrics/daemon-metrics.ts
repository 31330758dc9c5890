import { MigrationService } from '../../plugin/migration-service';
import { ConnectionFeed } from '../../plugin/ports/connection-feed';
import { PeerPort } from '../../plugin/ports/peer-port';
import { VmStatePort } from '../../plugin/ports/vmstate-port';
import { MeteredFeed } from './metered-feed';
import { MeteredPeerPort } from './metered-peer-port';
import { MetricFamilies } from './metric-families';
import { SessionMetrics } from './session-metrics';
import { TimedVmStatePort } from './timed-vmstate-port';

/**
 * The daemon's metrics: the families, and the port wrappers that feed the
 * ones the engine does not report (vmstate timing, feed health, refused
 * peers). The composition root wraps the real ports with these before the
 * engine gets them; the engine itself knows nothing of metrics.
 */
export class DaemonMetrics {
  private feed: MeteredFeed | null = null;
  private peers: MeteredPeerPort | null = null;
  readonly families = new MetricFamilies({
    feed: () => this.feed?.health() ?? Promise.resolve({ overruns: 0, repaired: 0 }),
    refusals: () => this.peers?.refusals() ?? { handshake: 0, protocol: 0, request: 0 },
  });
  private readonly sessions = new SessionMetrics(this.families);

  meterFeed(inner: ConnectionFeed): ConnectionFeed {
    this.feed = new MeteredFeed(inner);
    return this.feed;
  }

  meterPeers(inner: PeerPort): PeerPort {
    this.peers = new MeteredPeerPort(inner);
    return this.peers;
  }

  timeVmState(inner: VmStatePort): VmStatePort {
    return new TimedVmStatePort(inner, this.families.saveSeconds, this.families.loadSeconds);
  }

  /** Follow the engine's sessions; returns the function that stops it. */
  watch(service: MigrationService): () => void {
    return this.sessions.watch(service);
  }

  text(): Promise<string> {
    return this.families.text();
  }

  get contentType(): string {
    return this.families.contentType;
  }
}
