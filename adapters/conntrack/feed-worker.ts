/**
 * Feed worker: the worker_threads entry point of NetlinkFeed. It owns the
 * ctnetlink socket and is the shared table's only writer; the main thread
 * only reads the table.
 *
 * Protocol with the main thread (postMessage):
 *   in:  { type: 'stats', id } | { type: 'stop' }
 *   out: { type: 'ready', stats } | { type: 'stats', id, stats }
 *        | { type: 'warning', message } | { type: 'stopped', stats }
 *        | { type: 'failed', message }
 */
import { parentPort, workerData } from 'node:worker_threads';
import { ConnectionTable } from '../../plugin/connection-table';
import { FlowFilter } from '../../plugin/flow-filter';
import { conntrackEventsSetting } from './event-sysctl';
import { bindingPatched } from './netlink-socket';
import { CtnetlinkSocket } from './ctnetlink-socket';
import { KernelVersion, planDump, runningKernel } from './dump-filter';
import { CtGroup } from './netlink-message';
import { TableFollower } from './table-follower';

/** What the main thread hands the worker. */
export interface FeedWorkerData {
  sab: SharedArrayBuffer;
  filter: FlowFilter;
  follow: boolean;
  recvBufferSize?: number;
  receiveBytes?: number;
  kernel?: KernelVersion;
}

/** Messages the main thread sends. */
export type FeedCommand = { type: 'stats'; id: number } | { type: 'sync'; id: number } | { type: 'reclaim'; id: number; upTo: number } | { type: 'stop' };

function run(data: FeedWorkerData): void {
  const port = parentPort;
  if (!port) return;
  // A rejection escaping into the netlink package's native callback would
  // abort the whole process; report it instead.
  process.on('unhandledRejection', (reason) => {
    port.postMessage({ type: 'warning', message: `conntrack feed: unexpected failure: ${String(reason)}` });
  });
  const table = ConnectionTable.attach(data.sab);
  let sock: CtnetlinkSocket;
  try {
    sock = new CtnetlinkSocket({
      // Join the groups before the first dump request: nothing is lost between the two.
      groups: data.follow ? [CtGroup.New, CtGroup.Update, CtGroup.Destroy] : [],
      recvBufferSize: data.recvBufferSize,
      receiveBytes: data.receiveBytes,
      // Events come in bursts far larger than rmem_max allows (4 MiB here):
      // as root, take the full requested buffer.
      forceRecvBuffer: data.follow,
      threaded: true,
    });
  } catch (err) {
    port.postMessage({ type: 'failed', message: `cannot open a conntrack netlink socket: ${(err as Error).message}` });
    return;
  }
  if (data.follow && conntrackEventsSetting() !== '1') {
    port.postMessage({
      type: 'warning',
      message: `conntrack feed: net.netfilter.nf_conntrack_events is ${conntrackEventsSetting() ?? 'unreadable'}, not 1: entries created while no one listened report no updates or destroys (ctmigrated sets 1 at start)`,
    });
  }
  if (data.follow && !bindingPatched()) {
    port.postMessage({ type: 'warning', message: 'conntrack feed: the overrun-safe netlink binding was not built (npm run build); an event overrun may abort the process' });
  }
  const follower = new TableFollower(sock, table, data.filter, planDump(data.filter, data.kernel ?? runningKernel()), (message) =>
    port.postMessage({ type: 'warning', message }),
  );
  port.on('message', (cmd: FeedCommand) => {
    if (cmd.type === 'stats') port.postMessage({ type: 'stats', id: cmd.id, stats: { ...follower.stats } });
    else if (cmd.type === 'sync') void follower.sync().then(() => port.postMessage({ type: 'synced', id: cmd.id, version: table.version }));
    else if (cmd.type === 'reclaim') port.postMessage({ type: 'reclaimed', id: cmd.id, freed: follower.reclaim(cmd.upTo) });
    else if (cmd.type === 'stop') {
      follower.stop();
      void sock.raw.closed().then(() => {
        port.postMessage({ type: 'stopped', stats: { ...follower.stats } });
        port.close();
      });
    }
  });
  follower.start().then(
    (stats) => {
      port.postMessage({ type: 'ready', stats });
      if (!data.follow) sock.raw.unref();
    },
    (err: Error) => port.postMessage({ type: 'failed', message: `initial conntrack dump failed: ${err.message}` }),
  );
}

run(workerData as FeedWorkerData);
