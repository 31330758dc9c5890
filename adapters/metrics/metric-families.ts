import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

/** Every family starts with this, so one `{__name__=~"ctmigrate_.*"}` finds them all. */
export const METRIC_PREFIX = 'ctmigrate_';

/** How a migration ended, as `ctmigrate_migrations_total` labels it. */
export type MigrationResult = 'migrated' | 'failed' | 'aborted' | 'stopped';
export const MIGRATION_RESULTS: readonly MigrationResult[] = ['migrated', 'failed', 'aborted', 'stopped'];
const ROLES = ['source', 'destination'] as const;

/** Where a peer was turned away: TLS handshake, a broken protocol, or an Error reply to its request. */
export type RefusalStage = 'handshake' | 'protocol' | 'request';

/**
 * The daemon's Prometheus families, in a registry of their own (prom-client's
 * global one would mix in whatever else the process loads). The counters
 * that mirror a count kept elsewhere (feed overruns, listener refusals) are
 * filled at scrape time by their collect hooks, see MeteredFeed and
 * MeteredPeerPort.
 */
export class MetricFamilies {
  readonly registry = new Registry();

  readonly migrations = new Counter({
    name: `${METRIC_PREFIX}migrations_total`,
    help: 'Migration sessions that ended, by role and result (migrated, failed, aborted, stopped: the daemon stopped during it).',
    labelNames: ['role', 'result'] as const,
    registers: [this.registry],
  });
  /** Sets the two gauges below from the sessions of the moment; called at scrape time. */
  sessionGauges: (() => void) | null = null;
  readonly sessionsActive = new Gauge({
    name: `${METRIC_PREFIX}sessions_active`,
    help: 'Migration sessions not yet ended, by role.',
    labelNames: ['role'] as const,
    registers: [this.registry],
    collect: () => this.sessionGauges?.(),
  });
  readonly vmsBlocked = new Gauge({
    name: `${METRIC_PREFIX}vms_blocked`,
    help: "Destination sessions whose VM's traffic is dropped right now.",
    registers: [this.registry],
    collect: () => this.sessionGauges?.(),
  });
  readonly entriesSent = new Counter({
    name: `${METRIC_PREFIX}entries_sent_total`,
    help: 'Conntrack entries a source shipped to destinations (snapshot and changes).',
    registers: [this.registry],
  });
  readonly entriesReceived = new Counter({
    name: `${METRIC_PREFIX}entries_received_total`,
    help: 'Conntrack entries a destination received from sources.',
    registers: [this.registry],
  });
  readonly entriesImported = new Counter({
    name: `${METRIC_PREFIX}entries_imported_total`,
    help: "Conntrack entries a destination committed to this host's kernel.",
    registers: [this.registry],
  });
  readonly entriesRefused = new Counter({
    name: `${METRIC_PREFIX}entries_refused_total`,
    help: "Received entries refused on import (not the VM's, malformed); they never reached the kernel.",
    registers: [this.registry],
  });
  readonly stateBytes = new Counter({
    name: `${METRIC_PREFIX}state_bytes_total`,
    help: 'Bytes of conntrack state on the peer channel, by role.',
    labelNames: ['role'] as const,
    registers: [this.registry],
  });
  readonly blockedSeconds = new Histogram({
    name: `${METRIC_PREFIX}vm_blocked_seconds`,
    help: "How long a destination dropped a VM's traffic, from the drop to its lifting (ready, fail-open or rollback).",
    buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
    registers: [this.registry],
  });
  readonly blockedAfterResumeSeconds = new Histogram({
    name: `${METRIC_PREFIX}vm_blocked_after_resume_seconds`,
    help: "How long a VM ran on the destination with its traffic still dropped after QEMU resumed it (0: the state was in before the resume).",
    buckets: [0, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry],
  });
  readonly saveSeconds = new Histogram({
    name: `${METRIC_PREFIX}vmstate_save_duration_seconds`,
    help: "Time QEMU's dbus-vmstate Save() took on a source (the VM is paused meanwhile).",
    labelNames: ['result'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [this.registry],
  });
  readonly loadSeconds = new Histogram({
    name: `${METRIC_PREFIX}vmstate_load_duration_seconds`,
    help: "Time QEMU's dbus-vmstate Load() took on a destination (the VM waits to resume meanwhile).",
    labelNames: ['result'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry],
  });
  readonly precopyRate = new Gauge({
    name: `${METRIC_PREFIX}precopy_rate_entries_per_second`,
    help: 'Entries per second of the last finished pre-copy (the snapshot phase), by role.',
    labelNames: ['role'] as const,
    registers: [this.registry],
  });
  readonly failOpen = new Counter({
    name: `${METRIC_PREFIX}fail_open_total`,
    help: "Times a destination lifted a VM's drop at the block timeout before its state was in (policy: open).",
    registers: [this.registry],
  });
  readonly feedOverruns: Counter;
  readonly feedRepaired: Counter;
  readonly peersRefused: Counter<'stage'>;

  constructor(hooks: { feed: () => Promise<{ overruns: number; repaired: number }>; refusals: () => Record<RefusalStage, number> }) {
    // One scrape reads the feeds' worker threads once for both families.
    let feedRead: Promise<{ overruns: number; repaired: number }> | null = null;
    const feed = (): Promise<{ overruns: number; repaired: number }> => {
      feedRead ??= hooks.feed().finally(() => setImmediate(() => (feedRead = null)));
      return feedRead;
    };
    this.feedOverruns = new Counter({
      name: `${METRIC_PREFIX}feed_overruns_total`,
      help: 'Times the kernel overran a conntrack event socket (ENOBUFS); each was repaired by a re-dump.',
      registers: [this.registry],
      async collect() {
        const f = await feed();
        this.reset();
        this.inc(f.overruns);
      },
    });
    this.feedRepaired = new Counter({
      name: `${METRIC_PREFIX}feed_repaired_entries_total`,
      help: 'Table records corrected by the re-dumps that repaired feed overruns.',
      registers: [this.registry],
      async collect() {
        const f = await feed();
        this.reset();
        this.inc(f.repaired);
      },
    });
    this.peersRefused = new Counter({
      name: `${METRIC_PREFIX}peers_refused_total`,
      help: 'Peers turned away: failed TLS handshake (no or wrong key), broken protocol, or a request answered with an Error.',
      labelNames: ['stage'] as const,
      registers: [this.registry],
      collect() {
        const r = hooks.refusals();
        this.reset();
        for (const stage of Object.keys(r) as RefusalStage[]) this.inc({ stage }, r[stage]);
      },
    });
    // Every label pair an alert names exists from the start, so rate() sees its first increase.
    for (const role of ROLES) {
      for (const result of MIGRATION_RESULTS) this.migrations.inc({ role, result }, 0);
      this.stateBytes.inc({ role }, 0);
      this.sessionsActive.set({ role }, 0);
    }
    collectDefaultMetrics({ register: this.registry, prefix: METRIC_PREFIX });
    // prom-client names these gauges *_total, which promtool (rightly) rejects:
    // the handle and request counts are not worth a lint failure.
    for (const gauge of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'])
      this.registry.removeSingleMetric(`${METRIC_PREFIX}${gauge}`);
  }

  /** The exposition text (format 0.0.4). */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
