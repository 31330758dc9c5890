import { ConnectionTable } from '../../plugin/connection-table';
import { ConnectionFeed, Feed, FeedOptions, FeedStats } from '../../plugin/ports/connection-feed';

/** Overruns and repairs of every feed this process ran, summed. */
export interface FeedHealth {
  overruns: number;
  repaired: number;
}

/**
 * A ConnectionFeed that remembers its feeds, so a scrape can sum their
 * overruns and repairs: the live ones asked at scrape time, the stopped
 * ones from their final stats.
 */
export class MeteredFeed implements ConnectionFeed {
  private readonly live = new Set<Feed>();
  private readonly retired: FeedHealth = { overruns: 0, repaired: 0 };

  constructor(private readonly inner: ConnectionFeed) {}

  start(table: ConnectionTable, options: FeedOptions): Feed {
    const feed = this.inner.start(table, options);
    this.live.add(feed);
    const retire = (s: FeedStats): FeedStats => {
      if (this.live.delete(feed)) {
        this.retired.overruns += s.overruns;
        this.retired.repaired += s.repaired;
      }
      return s;
    };
    return {
      table: feed.table,
      ready: feed.ready,
      stats: () => feed.stats(),
      sync: () => feed.sync(),
      reclaim: (upTo) => feed.reclaim(upTo),
      stop: () => feed.stop().then(retire, (e: unknown) => {
        this.live.delete(feed);
        throw e;
      }),
    };
  }

  /** A feed that cannot answer (stopping right now) counts as nothing new. */
  async health(): Promise<FeedHealth> {
    const now = await Promise.all([...this.live].map((f) => f.stats().catch(() => null)));
    const h = { ...this.retired };
    for (const s of now) {
      if (!s) continue;
      h.overruns += s.overruns;
      h.repaired += s.repaired;
    }
    return h;
  }
}
