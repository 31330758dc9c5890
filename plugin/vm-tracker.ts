import { ConnectionTable } from './connection-table';
import { Clock } from './ports/clock';
import { ConnectionFeed, Feed } from './ports/connection-feed';
import { Log } from './ports/log-port';
import { VmSpec, vmFilter } from './vm';

/** How often a tracker with no session frees its tombstones. */
const IDLE_RECLAIM_MS = 10_000;

/**
 * A registered VM's entries, kept current from the moment it is registered
 * (the shared connection table, written by the feed's worker). When a
 * destination asks for the VM, the snapshot can go at once: the dump that
 * filled the table is long done.
 *
 * Tombstones are only needed by a running session; without one they are
 * freed every few seconds, so a long-lived VM with many short flows cannot
 * fill its table.
 */
export class VmTracker {
  readonly table: ConnectionTable;
  readonly feed: Feed;
  /** Set while a session ships from this table; it reclaims as it ships. */
  busy = false;
  private cancelReclaim: (() => void) | null = null;
  private stopped = false;

  constructor(
    readonly vm: VmSpec,
    feeds: ConnectionFeed,
    private readonly clock: Clock,
    private readonly log: Log,
    capacity: number,
  ) {
    this.table = ConnectionTable.create({ capacity });
    this.feed = feeds.start(this.table, {
      filter: vmFilter(vm),
      follow: true,
      onWarning: (m) => this.log.warn(m, { vm: vm.uuid }),
    });
    this.feed.ready.then(
      (s) => this.log.info('tracking the VM\'s entries', { vm: vm.uuid, entries: s.dumped }),
      (e: Error) => this.log.warn(`cannot track the VM's entries: ${e.message}`, { vm: vm.uuid }),
    );
    this.scheduleReclaim();
  }

  /** Resolves once the initial dump is in the table; rejects if the feed failed. */
  async ready(): Promise<void> {
    await this.feed.ready;
  }

  private scheduleReclaim(): void {
    if (this.stopped) return;
    this.cancelReclaim = this.clock.after(IDLE_RECLAIM_MS, () => {
      this.cancelReclaim = null;
      const idle = !this.busy && this.table.tombstones > 0;
      const done = idle ? this.feed.reclaim(this.table.version).then(() => undefined) : Promise.resolve();
      done.catch(() => undefined).then(() => this.scheduleReclaim());
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.cancelReclaim?.();
    await this.feed.stop().catch(() => undefined);
  }
}
