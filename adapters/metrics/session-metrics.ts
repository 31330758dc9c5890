import { MigrationService, ServiceEvent, SessionInfo } from '../../plugin/migration-service';
import { MetricFamilies, MigrationResult } from './metric-families';

/** What the metrics remember of one session between its reports. */
interface Seen {
  sent: number;
  received: number;
  committed: number;
  refused: number;
  bytes: number;
  /** updatedAt of the report that showed the drop, 0 while not blocked. */
  blockedSince: number;
  /** The VM's time blocked after its resume was counted. */
  resumeCounted: boolean;
  /** updatedAt and the entry count when the session entered pre-copy, -1 before. */
  precopyAt: number;
  precopyCount: number;
  /** Its end is counted (a destination may fail after ready: the first end counts). */
  ended: boolean;
}

/**
 * Turns the engine's session reports into the families: counters grow by
 * the difference between a session's successive snapshots, the blocked
 * time and the pre-copy rate come from the snapshots' own timestamps (the
 * engine's clock, so a test's fake clock gives exact figures).
 */
export class SessionMetrics {
  private readonly seen = new Map<string, Seen>();

  constructor(private readonly families: MetricFamilies) {}

  /** Follow the service's reports until the returned function is called. */
  watch(service: MigrationService): () => void {
    for (const s of service.sessions()) this.observe(s);
    const unsubscribe = service.subscribe((e) => this.onEvent(e));
    // The gauges describe the sessions of the moment: computed at scrape time.
    this.families.sessionGauges = () => this.gauge(service);
    return () => {
      unsubscribe();
      this.families.sessionGauges = null;
    };
  }

  private gauge(service: MigrationService): void {
    const f = this.families;
    let source = 0;
    let destination = 0;
    let blocked = 0;
    for (const s of service.sessions()) {
      if (s.blocked) blocked++;
      if (s.state === 'failed' || s.state === 'migrated' || s.state === 'ready') continue;
      if (s.role === 'source') source++;
      else destination++;
    }
    f.sessionsActive.set({ role: 'source' }, source);
    f.sessionsActive.set({ role: 'destination' }, destination);
    f.vmsBlocked.set(blocked);
  }

  private onEvent(e: ServiceEvent): void {
    const s = e.session;
    const seen = this.observe(s);
    switch (e.kind) {
      case 'state-changed':
        if (s.state === 'precopy') {
          seen.precopyAt = s.updatedAt;
          seen.precopyCount = s.role === 'source' ? s.sent : s.received;
        } else if (e.from === 'precopy' && seen.precopyAt >= 0) {
          const seconds = (s.updatedAt - seen.precopyAt) / 1000;
          const entries = (s.role === 'source' ? s.sent : s.received) - seen.precopyCount;
          if (seconds > 0) this.families.precopyRate.set({ role: s.role }, entries / seconds);
          seen.precopyAt = -1;
        }
        if (s.state === 'migrated' || (s.role === 'destination' && s.state === 'ready')) this.end(s, seen, 'migrated');
        else if (s.state === 'failed') this.end(s, seen, resultOf(s.error));
        return;
      case 'fail-open':
        this.families.failOpen.inc();
        return;
      case 'session-removed':
        // A session that goes away blocked had its drop removed with it.
        if (seen.blockedSince > 0) this.families.blockedSeconds.observe(Math.max(0, s.updatedAt - seen.blockedSince) / 1000);
        this.seen.delete(s.id);
        return;
      default:
        return;
    }
  }

  /** Count what changed since the session's last report. */
  private observe(s: SessionInfo): Seen {
    let seen = this.seen.get(s.id);
    if (!seen) {
      seen = { sent: 0, received: 0, committed: 0, refused: 0, bytes: 0, blockedSince: 0, resumeCounted: false, precopyAt: -1, precopyCount: 0, ended: false };
      this.seen.set(s.id, seen);
    }
    const f = this.families;
    if (s.sent > seen.sent) f.entriesSent.inc(s.sent - seen.sent);
    if (s.received > seen.received) f.entriesReceived.inc(s.received - seen.received);
    if (s.committed > seen.committed) f.entriesImported.inc(s.committed - seen.committed);
    if (s.refused > seen.refused) f.entriesRefused.inc(s.refused - seen.refused);
    if (s.bytes > seen.bytes) f.stateBytes.inc({ role: s.role }, s.bytes - seen.bytes);
    seen.sent = Math.max(seen.sent, s.sent);
    seen.received = Math.max(seen.received, s.received);
    seen.committed = Math.max(seen.committed, s.committed);
    seen.refused = Math.max(seen.refused, s.refused);
    seen.bytes = Math.max(seen.bytes, s.bytes);
    if (s.role === 'destination' && !seen.resumeCounted && s.resumedAt > 0 && s.readyAt > 0) {
      seen.resumeCounted = true;
      f.blockedAfterResumeSeconds.observe(Math.max(0, s.readyAt - s.resumedAt) / 1000);
    }
    if (s.role === 'destination') {
      if (s.blocked && seen.blockedSince === 0) seen.blockedSince = s.updatedAt;
      else if (!s.blocked && seen.blockedSince > 0) {
        f.blockedSeconds.observe(Math.max(0, s.updatedAt - seen.blockedSince) / 1000);
        seen.blockedSince = 0;
      }
    }
    return seen;
  }

  private end(s: SessionInfo, seen: Seen, result: MigrationResult): void {
    if (seen.ended) return;
    seen.ended = true;
    this.families.migrations.inc({ role: s.role, result });
  }
}

/** The engine's reasons for the ends that are not failures of the migration itself. */
function resultOf(reason: string): MigrationResult {
  if (reason === 'aborted') return 'aborted';
  if (reason === 'daemon stopping') return 'stopped';
  return 'failed';
}
