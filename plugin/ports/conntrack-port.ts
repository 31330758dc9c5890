import { ConnectionTable } from '../connection-table';
import { FlowFilter } from '../flow-filter';
import { FlowView } from '../flow-view';
import { portToken } from './port-token';

/** What one write of many entries did, entry by entry. */
export interface WriteReport {
  created: number;
  replaced: number;
  deleted: number;
  failures: WriteFailure[];
}

/** One entry the kernel refused. */
export interface WriteFailure {
  /** Table slot of the entry. */
  slot: number;
  /** errno name the kernel answered, e.g. EEXIST, EINVAL, ENOENT. */
  code: string;
  /** Why, in words an operator understands (e.g. "master entry missing"). */
  reason: string;
  /** The entry in short text form: "tcp 192.0.2.1:1000 -> 198.51.100.2:22 zone 0". */
  flow: string;
}

export interface DumpStats {
  /** Entries stored in the table. */
  entries: number;
  /** Entries the kernel sent that the userspace filter dropped. */
  filtered: number;
  /** Kernel dump filters used (family, mark, zone, status, tuple). */
  kernelFilters: string[];
}

/** Which records of a table to write: its live records with version in (from, upTo] that the filter selects. */
export interface WriteSelection {
  table: ConnectionTable;
  /** Up to which version (inclusive); default: the table's current version. */
  upTo?: number;
  /** Only records with a version above this (exclusive); default 0: every live record up to upTo. */
  from?: number;
  /**
   * Only the records this selects. Called once per live record in the range,
   * with its table slot, while the selection is made (before anything is
   * written); it must not write the table.
   */
  filter?: (v: FlowView, slot: number) => boolean;
  /**
   * Only look at these slots (each still has to be live, in the version
   * range and chosen by the filter): a writer that knows where its records
   * are spares a scan of a big table for a small part of it.
   */
  slots?: ArrayLike<number>;
  /**
   * create() only: for the records this selects, an entry that already holds
   * the tuple is left alone (a failure with code EEXIST), never replaced.
   */
  keepExisting?: (v: FlowView, slot: number) => boolean;
}

/**
 * The kernel's conntrack table of the current network namespace.
 * Implemented over ctnetlink by adapters/conntrack.
 */
export interface ConntrackPort {
  /** Read every entry that matches the filter into the table (the calling thread writes it). */
  dump(filter: FlowFilter, into: ConnectionTable): Promise<DumpStats>;
  /**
   * Create every live record of the selection in the kernel; an entry with
   * the same original tuple and zone is replaced. Masters go before the
   * entries related to them. Each refusal is reported, never dropped.
   */
  create(selection: WriteSelection, onProgress?: (done: number, total: number) => void): Promise<WriteReport>;
  /** Delete every live record of the selection from the kernel (absent ones count as failures with ENOENT). */
  remove(selection: WriteSelection): Promise<WriteReport>;
  /**
   * A bulk write is coming soon (an incoming migration): get ready for it
   * now, off the clock (the netlink adapter starts its writer threads).
   * Optional; never fails.
   */
  prepareWrites?(): void;
  /**
   * The process is about to exit: let the writes in flight finish, then end
   * the writer threads and close their sockets. Nothing is written after.
   * Optional.
   */
  close?(): Promise<void>;
}
export const ConntrackPort = portToken<ConntrackPort>('ConntrackPort');
