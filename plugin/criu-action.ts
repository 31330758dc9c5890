import { createHash } from 'node:crypto';
import { inject, injectable } from 'tsyringe';
import { Address, canonicalAddressText, formatAddress } from './address';
import { CheckpointManifest, CONTAINER_ID, encodeManifest, MANIFEST_FILE, MANIFEST_FORMAT, MANIFEST_MAX_BYTES, SNAPSHOT_FILE } from './checkpoint-manifest';
import { checkContainerState, checkManifest, checkSnapshot, ContainerStateError } from './container-state';
import { ConnectionTable, Scan } from './connection-table';
import { confine, Refusal, REFUSAL_KINDS, refusalSummary } from './import-confinement';
import { CheckpointStore } from './ports/checkpoint-store';
import { Clock } from './ports/clock';
import { ConnectionFeed } from './ports/connection-feed';
import { ContainerDropsPort, DEFAULT_DROP_EXPIRY_S } from './ports/container-drops-port';
import { ContainerNetworkPort } from './ports/container-network-port';
import { ConntrackPort, WriteReport } from './ports/conntrack-port';
import { HostAddressesPort } from './ports/host-addresses-port';
import { Log } from './ports/log-port';
import { ManagerClient } from './ports/manager-client';
import { RestoreWatchPort } from './ports/restore-watch-port';
import { DecodedSnapshot } from './snapshot-decoder';
import { encodeTableToBuffer } from './snapshot-encoder';
import { VmSpec } from './vm';

/**
 * A container's conntrack state through CRIU's action scripts. CRIU runs
 * the script once per step of a dump or a restore, a new process each time,
 * with the step in CRTOOLS_SCRIPT_ACTION:
 *
 *   dump:    pre-dump, network-lock, post-dump [, network-unlock]
 *   restore: pre-restore, setup-namespaces, post-setup-namespaces,
 *            post-restore, network-unlock, pre-resume, post-resume
 *
 * CRIU runs network-lock with the tasks frozen, before it locks their
 * network itself, and on a dump runs network-unlock only when the tasks go
 * on running (--leave-running, or the dump failed). On a restore it runs
 * network-unlock right before it lets the container's traffic flow again.
 *
 * - network-lock (source): the host's entries of the container's addresses
 *   go into the image directory, beside CRIU's images: they are the final
 *   state, since the container can no longer change them.
 * - post-dump (source): the dump is done; the entries leave this host's
 *   table. The checkpoint is now their one home: a restore anywhere, back
 *   here too, brings them in again.
 * - network-unlock after a dump (source): the container runs on here after
 *   all, so what post-dump removed comes back from the image directory.
 * - pre-restore (destination): drops for the addresses the manifest names,
 *   before any of the container's packets can reach this host; a watcher
 *   lifts them if CRIU dies first (from setup-namespaces on, another if the
 *   restored init dies), and the kernel expires them regardless.
 * - network-unlock (destination): the snapshot is imported, confined to the
 *   addresses the restored container really has, then the drop is lifted.
 *
 * Both network-unlocks do the same thing: import what the checkpoint holds
 * (replacing what is there) and lift the drop if there is one.
 */

/** What CRIU's environment says about the step being run. */
export interface CriuStep {
  /** CRTOOLS_SCRIPT_ACTION. */
  action: string;
  /** CRTOOLS_IMAGE_DIR, when set. */
  imageDir: string | null;
  /** CRTOOLS_INIT_PID, when set: the container's init task. */
  initPid: number | null;
  /** The CRIU process that runs this script (the script's parent). */
  criuPid: number;
  /** CTMIGRATE_CONTAINER: the container's id, when the runtime's cannot be read from its cgroup. */
  container: string | null;
  /** CTMIGRATE_DESTINATION: the destination daemon (ADDR:PORT), when the dump knows where the container goes. */
  destination?: string | null;
}

/** What one step did, for the one line the script prints. */
export interface StepOutcome {
  action: string;
  container: string | null;
  /** One line for people (stderr, CRIU's log). */
  summary: string;
}

/** A step that could not do what it must; CRIU aborts the dump or restore on a non-zero exit. */
export class CriuStepError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CriuStepError';
  }
}

@injectable()
export class CriuAction {
  constructor(
    @inject(ConntrackPort) private readonly conntrack: ConntrackPort,
    @inject(ConnectionFeed) private readonly feeds: ConnectionFeed,
    @inject(CheckpointStore) private readonly store: CheckpointStore,
    @inject(ContainerNetworkPort) private readonly network: ContainerNetworkPort,
    @inject(ContainerDropsPort) private readonly drops: ContainerDropsPort,
    @inject(RestoreWatchPort) private readonly watcher: RestoreWatchPort,
    @inject(Clock) private readonly clock: Clock,
    @inject(Log) private readonly log: Log,
    @inject(ManagerClient) private readonly daemon: ManagerClient,
    @inject(HostAddressesPort) private readonly hostAddresses: HostAddressesPort,
  ) {}

  /** Run one step; resolves with what it did, rejects with a CriuStepError when CRIU must stop. */
  async run(step: CriuStep, options: { tableCapacity: number; dropExpiryS?: number; host?: string }): Promise<StepOutcome> {
    switch (step.action) {
      case 'network-lock':
        return this.pack(step, options.tableCapacity, options.host ?? '');
      case 'post-dump':
        return this.release(step, options.tableCapacity);
      case 'pre-restore':
        return this.hold(step, options.dropExpiryS ?? DEFAULT_DROP_EXPIRY_S, options.tableCapacity);
      case 'setup-namespaces':
        return this.watchInit(step, options.dropExpiryS ?? DEFAULT_DROP_EXPIRY_S);
      case 'network-unlock':
        return this.unpack(step, options.tableCapacity);
      default:
        // pre-dump, post-setup-namespaces, post-restore, pre-resume, post-resume
        // and whatever a later CRIU adds: nothing to do, and never a reason to fail.
        return { action: step.action, container: null, summary: 'nothing to do' };
    }
  }

  /**
   * The watcher's step (see RestoreWatchPort): CRIU is gone, or the deadline
   * passed, with the drop still in: the restore failed, nothing was imported.
   */
  async abandon(container: string, addresses: readonly Address[], why: string): Promise<boolean> {
    if (!(await this.drops.blocked(container, addresses))) return false;
    await this.drops.lift(container, addresses);
    this.log.warn(`restore of container ${container} did not reach network-unlock (${why}): its drop is lifted, nothing was imported`, { container });
    return true;
  }

  // ---- source ------------------------------------------------------------

  private async pack(step: CriuStep, capacity: number, host: string): Promise<StepOutcome> {
    const dir = required(step.imageDir, 'CRTOOLS_IMAGE_DIR');
    const pid = required(step.initPid, 'CRTOOLS_INIT_PID');
    const net = await this.network.network(pid);
    const container = await this.idOf(step, pid);
    if (net.sharesHostNetwork) return { action: step.action, container, summary: 'the container uses the host\'s network: its flows are the host\'s, nothing to carry' };
    const addresses = this.ownAddresses(net.addresses, container);
    if (addresses.length === 0) return { action: step.action, container, summary: 'the container\'s network namespace has no global address of its own: nothing to carry' };
    const table = await this.dumpOf(addresses, capacity);
    const { bytes, summary } = encodeTableToBuffer(table, { scan: Scan.Snapshot, from: 0, to: table.version });
    const manifest: CheckpointManifest = {
      format: MANIFEST_FORMAT,
      container,
      addresses,
      entries: summary.entries,
      bytes: bytes.length,
      sha256: createHash('sha256').update(bytes).digest('hex'),
      host,
      packedAt: this.clock.now(),
    };
    const manifestText = encodeManifest(manifest);
    await this.store.write(dir, [
      { name: SNAPSHOT_FILE, bytes },
      { name: MANIFEST_FILE, bytes: Buffer.from(manifestText) },
    ]);
    let sent = '';
    if (step.destination) {
      // Besides the checkpoint, never instead of it: a refusal or a dead peer costs nothing but this line.
      try {
        await this.daemon.sendContainerState(step.destination, { container, manifest: manifestText, snapshot: bytes });
        sent = `; sent to ${step.destination}`;
      } catch (e) {
        sent = `; not sent to ${step.destination} (${(e as Error).message}), it travels in the checkpoint`;
        this.log.warn(`container state not sent to ${step.destination}: ${(e as Error).message}`, { container });
      }
    }
    return { action: step.action, container, summary: `packed ${summary.entries} entries of ${texts(addresses)} (${bytes.length} bytes) into the checkpoint${sent}` };
  }

  private async release(step: CriuStep, capacity: number): Promise<StepOutcome> {
    const dir = required(step.imageDir, 'CRTOOLS_IMAGE_DIR');
    const manifest = await this.manifestIn(dir);
    if (!manifest) return { action: step.action, container: null, summary: 'the checkpoint holds no ctmigrate state: nothing to do' };
    // Everything of the addresses now, not only what was packed: the container is frozen and gone from here.
    const table = await this.dumpOf(manifest.addresses, capacity);
    const report = await this.conntrack.remove({ table });
    const gone = report.deleted + report.failures.filter((f) => f.code === 'ENOENT').length;
    const failed = report.failures.filter((f) => f.code !== 'ENOENT');
    for (const f of failed) this.log.warn(`entry not removed: ${f.flow}: ${f.reason} (${f.code})`, { container: manifest.container });
    return {
      action: step.action,
      container: manifest.container,
      summary: `removed ${gone} entries of ${texts(manifest.addresses)} from this host (they travel in the checkpoint)${failed.length ? `; ${failed.length} could not be removed` : ''}`,
    };
  }

  // ---- destination -------------------------------------------------------

  private async hold(step: CriuStep, expiryS: number, capacity: number): Promise<StepOutcome> {
    const dir = required(step.imageDir, 'CRTOOLS_IMAGE_DIR');
    let manifest = await this.manifestIn(dir);
    let from = '';
    if (manifest) {
      // Before anything can fail half-way: an unreadable snapshot stops the restore with nothing changed.
      // At most the kernel's table: a manifest's count never sizes an allocation beyond it.
      await this.snapshotIn(dir, manifest, capacity);
    } else if (step.container !== null) {
      manifest = await this.fromPeer(dir, step.container, capacity);
      if (manifest) from = ' (the state a peer sent this host)';
    }
    if (!manifest) return { action: step.action, container: null, summary: 'the checkpoint holds no ctmigrate state: nothing to hold' };
    // A manifest (tampered with, or from a careless peer) never makes this host drop its own traffic.
    const addresses = this.ownAddresses(manifest.addresses, manifest.container);
    if (addresses.length === 0) return { action: step.action, container: manifest.container, summary: 'the checkpoint names only addresses of this host: nothing to hold' };
    await this.drops.block(manifest.container, addresses, expiryS);
    try {
      await this.watcher.watch(manifest.container, addresses, step.criuPid, this.clock.now() + expiryS * 1000);
    } catch (e) {
      this.log.warn(`no watcher for the restore (${(e as Error).message}); the drop still expires after ${expiryS} s`, { container: manifest.container });
    }
    return { action: step.action, container: manifest.container, summary: `traffic of ${texts(addresses)} dropped until network-unlock (at most ${expiryS} s)${from}` };
  }

  /**
   * The restored tree exists from here on, and CRIU kills it when the
   * restore fails: a second watcher follows the container's init, for a
   * CRIU that lives on after a failed restore (one serving RPC, runc's).
   */
  private async watchInit(step: CriuStep, expiryS: number): Promise<StepOutcome> {
    if (step.imageDir === null || step.initPid === null) return { action: step.action, container: null, summary: 'nothing to do' };
    const manifest = await this.manifestIn(step.imageDir);
    if (!manifest || !(await this.drops.blocked(manifest.container, manifest.addresses))) return { action: step.action, container: manifest?.container ?? null, summary: 'nothing to do' };
    try {
      await this.watcher.watch(manifest.container, manifest.addresses, step.initPid, this.clock.now() + expiryS * 1000);
    } catch (e) {
      this.log.warn(`no watcher for the container's init (${(e as Error).message})`, { container: manifest.container });
    }
    return { action: step.action, container: manifest.container, summary: `watching the restored init (process ${step.initPid}) until network-unlock` };
  }

  private async unpack(step: CriuStep, capacity: number): Promise<StepOutcome> {
    const dir = required(step.imageDir, 'CRTOOLS_IMAGE_DIR');
    const manifest = await this.manifestIn(dir);
    if (!manifest) return { action: step.action, container: null, summary: 'the checkpoint holds no ctmigrate state: nothing to import' };
    const container = manifest.container;
    try {
      const owner = await this.ownerOf(step, manifest);
      if (owner.addresses.length === 0) {
        return { action: step.action, container, summary: `the restored container has none of ${texts(manifest.addresses)}: nothing imported` };
      }
      const decoded = await this.snapshotIn(dir, manifest, capacity);
      const refused = new Uint32Array(REFUSAL_KINDS);
      const report: WriteReport = await this.conntrack.create({
        table: decoded.table,
        filter: (v) => {
          const r = confine(owner, v);
          if (r !== Refusal.Accepted) refused[r]++;
          return r === Refusal.Accepted;
        },
      });
      for (const f of report.failures) this.log.warn(`entry not imported: ${f.flow}: ${f.reason} (${f.code})`, { container });
      const kept = refused.reduce((a, b) => a + b, 0);
      return {
        action: step.action,
        container,
        summary:
          `imported ${report.created + report.replaced} of ${decoded.live} entries (created ${report.created}, replaced ${report.replaced}, failed ${report.failures.length})` +
          (kept ? `; refused ${kept}: ${refusalSummary(refused)}` : ''),
      };
    } finally {
      // The container's traffic flows once this script exits, whatever the import did: a drop kept now would only cut it off.
      await this.drops.lift(container, manifest.addresses);
    }
  }

  // ---- shared ------------------------------------------------------------

  /** The container as the import confines it: the manifest's addresses that the restored namespace really has. */
  private async ownerOf(step: CriuStep, manifest: CheckpointManifest): Promise<VmSpec> {
    const own = this.ownAddresses(manifest.addresses, manifest.container);
    if (step.initPid === null) return { uuid: manifest.container, addresses: own };
    const net = await this.network.network(step.initPid);
    if (net.sharesHostNetwork) return { uuid: manifest.container, addresses: [] };
    const live = new Set(net.addresses.map(addressKey));
    return { uuid: manifest.container, addresses: own.filter((a) => live.has(addressKey(a))) };
  }

  /** The addresses without this host's own: a container named with one would have the host's flows taken for its own (removed at post-dump, dropped at pre-restore). */
  private ownAddresses(addresses: readonly Address[], container: string): Address[] {
    const host = new Set(this.hostAddresses.addresses().map((a) => canonicalAddressText(a)));
    const own = addresses.filter((a) => !host.has(addressKey(a)));
    for (const a of addresses) if (!own.includes(a)) this.log.warn(`${addressKey(a)} is an address of this host, never the container's own: left out`, { container });
    return own;
  }

  private async idOf(step: CriuStep, pid: number): Promise<string> {
    if (step.container !== null) return checkedContainerId(step.container);
    return (await this.network.containerId(pid)) ?? `pid-${pid}`;
  }

  private async dumpOf(addresses: Address[], capacity: number): Promise<ConnectionTable> {
    const table = ConnectionTable.create({ capacity });
    const feed = this.feeds.start(table, { filter: { addresses }, follow: false });
    try {
      await feed.ready;
    } finally {
      await feed.stop().catch(() => undefined);
    }
    return table;
  }

  /**
   * The image directory has no ctmigrate files (images streamed, or copied
   * without them): the state the source's daemon sent this host's, written
   * into the directory so that the later steps find it there. Checked whole
   * before anything is written.
   */
  private async fromPeer(dir: string, container: string, capacity: number): Promise<CheckpointManifest | null> {
    checkedContainerId(container);
    let state;
    try {
      state = await this.daemon.takeContainerState(container);
    } catch (e) {
      this.log.info(`no state of container ${container} from a peer: ${(e as Error).message}`, { container });
      return null;
    }
    let manifest: CheckpointManifest;
    try {
      manifest = await checkContainerState({ ...state, container }, capacity);
    } catch (e) {
      if (e instanceof ContainerStateError) throw new CriuStepError(`the state a peer sent for container ${container}: the ${e.part} ${e.problem}; nothing done`);
      throw e;
    }
    await this.store.write(dir, [
      { name: SNAPSHOT_FILE, bytes: state.snapshot },
      { name: MANIFEST_FILE, bytes: Buffer.from(state.manifest) },
    ]);
    return manifest;
  }

  private async manifestIn(dir: string): Promise<CheckpointManifest | null> {
    const bytes = await this.store.read(dir, MANIFEST_FILE, MANIFEST_MAX_BYTES);
    if (bytes === null) return null;
    try {
      return checkManifest(Buffer.from(bytes).toString('utf8'));
    } catch (e) {
      if (e instanceof ContainerStateError) throw new CriuStepError(`${MANIFEST_FILE} in the checkpoint: ${e.message}; nothing done (remove ${MANIFEST_FILE} and ${SNAPSHOT_FILE} to restore without connection state)`);
      throw e;
    }
  }

  private async snapshotIn(dir: string, manifest: CheckpointManifest, capacity: number): Promise<DecodedSnapshot> {
    const bytes = await this.store.read(dir, SNAPSHOT_FILE, manifest.bytes);
    const broken = (why: string): CriuStepError =>
      new CriuStepError(`${SNAPSHOT_FILE} in the checkpoint ${why}; nothing done (remove ${MANIFEST_FILE} and ${SNAPSHOT_FILE} to restore without connection state)`);
    if (bytes === null) throw broken('is missing');
    try {
      return await checkSnapshot(manifest, bytes, capacity);
    } catch (e) {
      if (e instanceof ContainerStateError) throw broken(e.message);
      throw e;
    }
  }
}

function required<T>(v: T | null, name: string): T {
  if (v === null) throw new CriuStepError(`CRIU did not set ${name}`);
  return v;
}

function checkedContainerId(id: string): string {
  if (!CONTAINER_ID.test(id)) throw new CriuStepError(`CTMIGRATE_CONTAINER ${JSON.stringify(id)} is not a container id (letters, digits, . _ -; at most 64)`);
  return id;
}

/** An address's canonical text: the one form sets of addresses compare by. */
function addressKey(a: Address): string {
  return canonicalAddressText(formatAddress(a.bytes, 0, a.bytes.length));
}

function texts(addresses: readonly Address[]): string {
  return addresses.map((a) => formatAddress(a.bytes, 0, a.bytes.length)).join(', ');
}
