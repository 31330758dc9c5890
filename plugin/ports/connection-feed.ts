import { ConnectionTable } from '../connection-table';
import { FlowFilter } from '../flow-filter';
import { portToken } from './port-token';

/** Progress and health of a running feed. */
export interface FeedStats {
  /** Entries stored by the initial dump. */
  dumped: number;
  /** Events applied (new, update, destroy). */
  events: number;
  /** Times the kernel overran the event socket (ENOBUFS); each was repaired by a re-dump and diff. */
  overruns: number;
  /** Records changed by re-dump repairs. */
  repaired: number;
}

/** A running feed; stop() ends the worker and its sockets. */
export interface Feed {
  readonly table: ConnectionTable;
  /** Resolves once the initial dump is in the table. */
  readonly ready: Promise<FeedStats>;
  stats(): Promise<FeedStats>;
  /**
   * Resolves with the table version once every change the kernel made
   * before the call is in the table: the cut-over point of a session.
   */
  sync(): Promise<number>;
  /** Free tombstones with version <= upTo (all sessions have shipped them); resolves with how many. */
  reclaim(upTo: number): Promise<number>;
  stop(): Promise<FeedStats>;
}

export interface FeedOptions {
  filter: FlowFilter;
  /** After the dump, keep following new/update/destroy events. */
  follow: boolean;
  /** Called on a problem the feed survived (overrun repaired, netlink error). */
  onWarning?: (message: string) => void;
}

/**
 * Keeps a shared connection table in step with the kernel: a worker thread
 * owns the netlink dump and event sockets and is the table's only writer;
 * the caller reads the table without copying.
 */
export interface ConnectionFeed {
  start(table: ConnectionTable, options: FeedOptions): Feed;
}
export const ConnectionFeed = portToken<ConnectionFeed>('ConnectionFeed');
