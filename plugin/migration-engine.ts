import { inject, injectable } from 'tsyringe';
import { configuredRelays, DaemonConfig, DaemonConfigToken, parsePeerAddress, relayFor } from './daemon-config';
import { DestinationMigration, FinalTimeoutError, ResumeRefusedError } from './destination-migration';
import { ContainerState, MigrationDaemon, PrepareOptions, RegisteredVm, ServiceEvent, SessionInfo } from './migration-service';
import { checkContainerState } from './container-state';
import { ContainerStateMessage, ErrorMessage, MessageKind, PeerErrorCode, PeerMessage, PeerRole, ResumeMessage, StartMessage } from './peer-protocol';
import { BlockerPort } from './ports/blocker-port';
import { Clock } from './ports/clock';
import { ConnectionFeed } from './ports/connection-feed';
import { ConntrackPort } from './ports/conntrack-port';
import { Log } from './ports/log-port';
import { PeerAuthorization } from './peer-authorization';
import { formatPeerAddress, PeerAddress, PeerConnection, PeerListener, PeerPort } from './ports/peer-port';
import { RegistryStore } from './ports/registry-store';
import { HostAddressesPort } from './ports/host-addresses-port';
import { HostVmsPort } from './ports/host-vms-port';
import { JournalStore } from './ports/journal-store';
import { recoverAfterCrash, RecoveryReport } from './crash-recovery';
import { VmStatePort } from './ports/vmstate-port';
import { VmstateObjectPort } from './ports/vmstate-object-port';
import { DomainEventsPort } from './ports/domain-events-port';
import { arrangeCutover, CutoverArrangement } from './cutover-path';
import { formatReadiness, parseReadiness, Readiness } from './readiness';
import { RELEASE_AFTER_ANSWER_MS, Session } from './session';
import { findSource } from './source-query';
import { SourceMigration } from './source-migration';
import { VmTracker } from './vm-tracker';
import { parseVmUuid, vmAddressTexts, VmSpec, VmSpecError } from './vm';
import { canonicalAddressText, formatAddress } from './address';
import { decodeReference, encodeReference } from './vmstate-reference';
import { NoSessionError, SessionBusyError } from './service-errors';


/** How long a query to one peer ("who runs VM X?") may take. */
const WHO_HAS_TIMEOUT_MS = 3000;
/** How long after an incoming session is over its VM's tracking starts again (see pauseTracking). */
export const RETRACK_AFTER_MS = 2000;
/**
 * Longest one hypervisor call may take while a source chooses its cut-over
 * path: the destination's prepare (and libvirt's migration) waits on it.
 */
const CUTOVER_SETUP_TIMEOUT_MS = 3000;
/** How much longer a source waits for a resume than its destination tries. */
const RESUME_SLACK_MS = 5000;
/** How long a peer may take to say what it wants after the handshake. */
const FIRST_MESSAGE_TIMEOUT_MS = 10_000;
/** A container's state a peer sent is kept this long for its restore, at most this many at once. */
const HELD_CONTAINER_MS = 3_600_000;
const MAX_HELD_CONTAINERS = 64;

/**
 * The migration engine: the registry of this host's VMs, the sessions in
 * both roles, and the peer listener that sources answer on. It only talks
 * to the world through its ports.
 */
@injectable()
export class MigrationEngine implements MigrationDaemon {
  private readonly vms = new Map<string, RegisteredVm>();
  private readonly trackers = new Map<string, VmTracker>();
  /** Cancels of the timers that start tracking again after an incoming session (see pauseTracking). */
  private readonly retrack = new Map<string, () => void>();
  private stopping = false;
  /** VMs whose dbus-vmstate helper prepare-incoming started (not registered here): stopped with the daemon. */
  private readonly incomingHelpers = new Set<string>();
  private readonly sources = new Map<string, SourceMigration>();
  private readonly destinations = new Map<string, DestinationMigration>();
  private readonly listeners = new Set<(e: ServiceEvent) => void>();
  private listener: PeerListener | null = null;
  /** Cut-over set-ups being undone (a hot-attached object taken out of a running QEMU). */
  private readonly releases = new Set<Promise<void>>();
  private readonly authorization: PeerAuthorization;
  /** Containers' states peers sent (CRIU's network-lock there), kept for their restore here. */
  private readonly heldContainers = new Map<string, { state: ContainerState; at: number }>();

  constructor(
    @inject(DaemonConfigToken) private readonly config: DaemonConfig,
    @inject(ConntrackPort) private readonly conntrack: ConntrackPort,
    @inject(ConnectionFeed) private readonly feeds: ConnectionFeed,
    @inject(BlockerPort) private readonly blocker: BlockerPort,
    @inject(PeerPort) private readonly peers: PeerPort,
    @inject(VmStatePort) private readonly vmstate: VmStatePort,
    @inject(Clock) private readonly clock: Clock,
    @inject(Log) private readonly log: Log,
    @inject(RegistryStore) private readonly registry: RegistryStore,
    @inject(JournalStore) private readonly journal: JournalStore,
    @inject(HostVmsPort) private readonly hostVms: HostVmsPort,
    @inject(HostAddressesPort) private readonly hostAddresses: HostAddressesPort,
    @inject(VmstateObjectPort) private readonly vmstateObjects: VmstateObjectPort,
    @inject(DomainEventsPort) private readonly domainEvents: DomainEventsPort,
  ) {
    // Through a relay a peer's connection arrives from the relay's address.
    this.authorization = new PeerAuthorization(config.peers, configuredRelays(config));
  }

  /** A VM named with one of this host's own addresses would take the host's flows for its own. */
  private refuseHostAddress(vm: VmSpec): void {
    const a = this.hostAddressAmong(vmAddressTexts(vm));
    if (a !== null) throw new VmSpecError(`VM ${vm.uuid}: ${a} is an address of this host, never a VM's own address`);
  }

  /** The first of the addresses that is this host's own, or null. */
  private hostAddressAmong(addresses: readonly string[]): string | null {
    const own = new Set(this.hostAddresses.addresses().map((a) => canonicalAddressText(a)));
    return addresses.find((a) => own.has(canonicalAddressText(a))) ?? null;
  }

  /**
   * Undo what a previous run left behind (call once at start, before any
   * session): lift every drop, remove the entries of incoming sessions that
   * died mid-import (see crash-recovery.ts).
   */
  recover(): Promise<RecoveryReport> {
    return recoverAfterCrash(
      { journal: this.journal, blocker: this.blocker, conntrack: this.conntrack, hostVms: this.hostVms, log: this.log },
      this.config.tableCapacity,
    );
  }

  /**
   * Register again the VMs a previous run had registered (from the run
   * dir), so a restarted daemon still answers for the VMs it is the source
   * of. Each failure is logged; none stops the daemon.
   */
  async restore(): Promise<number> {
    const saved = await this.registry.load().catch((e: Error) => {
      this.log.warn(`VM registry not read: ${e.message}`);
      return { vms: [], problems: [] };
    });
    for (const p of saved.problems) this.log.warn(`VM registry: ${p}`);
    let n = 0;
    for (const vm of saved.vms) {
      try {
        await this.register(vm);
        n++;
      } catch (e) {
        this.log.warn(`could not register ${vm.uuid} again: ${(e as Error).message}`);
      }
    }
    return n;
  }

  private persist(): Promise<void> {
    return this.registry.save([...this.vms.values()].map((e) => e.vm)).catch((e: Error) => this.log.warn(`VM registry not saved: ${e.message}`));
  }

  /** Start answering peers. */
  async start(): Promise<PeerAddress> {
    // Writers ready (and warmed up) before the first incoming migration, not during it.
    this.conntrack.prepareWrites?.();
    if (!this.authorization.restricted)
      this.log.warn('no peers configured: any host with the cluster key may start a session for a VM registered here (name the hosts this one migrates with: peer = ADDR:PORT)');
    this.listener = await this.peers.listen(this.config.listen, (conn) => void this.incoming(conn));
    this.log.info('listening for peers', { address: formatPeerAddress(this.listener.address) });
    return this.listener.address;
  }

  /**
   * Stop: end every session still in progress (failed, rolled back), stop
   * helpers and the listener. A destination that is ready keeps its state:
   * the VM may be running here on it, and nobody finishes that session.
   */
  async stop(): Promise<void> {
    this.stopping = true;
    for (const uuid of [...this.retrack.keys()]) this.cancelTrackLater(uuid);
    for (const d of this.destinations.values()) if (d.session.state !== 'ready') await d.fail('daemon stopping').catch(() => undefined);
    for (const s of this.sources.values()) await s.end('daemon stopping').catch(() => undefined);
    // A QEMU that keeps running here loses the object a session added to it before the daemon goes.
    await Promise.all([...this.releases]);
    for (const uuid of new Set([...this.vms.keys(), ...this.incomingHelpers])) await this.vmstate.detach(uuid).catch(() => undefined);
    for (const t of this.trackers.values()) await t.stop();
    this.trackers.clear();
    await this.listener?.close();
    await this.domainEvents.close?.().catch(() => undefined);
    // Lifted drops fully gone from the kernel, writer threads ended: the process may exit now.
    await this.blocker.settle?.().catch((e: Error) => this.log.error(`drops not tidied: ${e.message}`));
    await this.conntrack.close?.().catch((e: Error) => this.log.error(`conntrack writers: ${e.message}`));
  }

  subscribe(listener: (event: ServiceEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private emit = (e: ServiceEvent): void => {
    if (e.kind === 'state-changed' && e.session.role === 'destination' && (e.session.state === 'ready' || e.session.state === 'failed')) this.trackLater(e.session.vm);
    for (const l of this.listeners) {
      try {
        l(e);
      } catch (err) {
        this.log.error(`event listener failed: ${(err as Error).message}`);
      }
    }
  };

  sessions(): SessionInfo[] {
    const all: SessionInfo[] = [];
    for (const s of this.sources.values()) all.push(s.session.snapshot());
    for (const d of this.destinations.values()) all.push(d.session.snapshot());
    return all.sort((a, b) => a.createdAt - b.createdAt);
  }

  registered(): RegisteredVm[] {
    return [...this.vms.values()];
  }

  async register(vm: VmSpec): Promise<RegisteredVm> {
    this.refuseHostAddress(vm);
    const entry: RegisteredVm = { vm, vmstateArgs: this.vmstate.objectArgs(vm.uuid) };
    const helper = await this.vmstate.attach(vm.uuid, this.vmstateHandler(vm.uuid));
    entry.vmstateArgs = helper.objectArgs;
    this.incomingHelpers.delete(vm.uuid);
    // libvirt registers an incoming VM while its session imports: tracking waits for the end of the import.
    if (!this.importing(vm.uuid)) this.track(vm);
    this.vms.set(vm.uuid, entry);
    await this.persist();
    this.log.info('VM registered', { vm: vm.uuid, addresses: vm.addresses.length });
    return entry;
  }

  private vmstateHandler(uuid: string): { save: () => Promise<Uint8Array>; load: (blob: Uint8Array) => Promise<void> } {
    return { save: () => this.save(uuid), load: (blob) => this.load(uuid, blob) };
  }

  async unregister(uuid: string): Promise<void> {
    const id = parseVmUuid(uuid);
    const live = this.activeSession(id);
    if (live) throw new SessionBusyError(`VM ${id} has a ${live.role} session in state ${live.state}; finish or abort it first`);
    await this.vmstate.detach(id);
    this.cancelTrackLater(id);
    await this.trackers.get(id)?.stop();
    this.trackers.delete(id);
    this.vms.delete(id);
    await this.persist();
  }

  /**
   * Keep the VM's entries current from now on (a tracker per registered
   * VM). A re-registration with other addresses, zone or mark starts over.
   */
  private track(vm: VmSpec): VmTracker {
    const old = this.trackers.get(vm.uuid);
    if (old && sameSpec(old.vm, vm)) return old;
    if (old) void old.stop();
    const t = new VmTracker(vm, this.feeds, this.clock, this.log, this.config.tableCapacity);
    this.trackers.set(vm.uuid, t);
    return t;
  }

  /**
   * An incoming VM's entries are the ones its session imports: a tracker
   * would only follow our own writes, and its events (the kernel builds one
   * per created entry for every listener) would take CPU from the import.
   * So tracking stops while the session imports and starts again a moment
   * after it is over, off the VM's resume.
   */
  private async pauseTracking(uuid: string): Promise<void> {
    this.cancelTrackLater(uuid);
    const t = this.trackers.get(uuid);
    if (!t) return;
    this.trackers.delete(uuid);
    await t.stop();
  }

  private trackLater(uuid: string): void {
    this.cancelTrackLater(uuid);
    if (this.stopping) return;
    this.retrack.set(
      uuid,
      this.clock.after(RETRACK_AFTER_MS, () => {
        this.retrack.delete(uuid);
        const reg = this.vms.get(uuid);
        if (reg && !this.trackers.has(uuid)) this.track(reg.vm);
      }),
    );
  }

  private cancelTrackLater(uuid: string): void {
    this.retrack.get(uuid)?.();
    this.retrack.delete(uuid);
  }

  /** An incoming session for the VM is still importing (not yet ready, not failed). */
  private importing(uuid: string): boolean {
    const d = this.destinations.get(uuid);
    return d !== undefined && !d.session.over && d.session.state !== 'ready';
  }

  private activeSession(uuid: string): SessionInfo | null {
    const s = this.sources.get(uuid);
    if (s && !s.session.over) return s.session.snapshot();
    const d = this.destinations.get(uuid);
    if (d && !d.session.over && d.session.state !== 'ready') return d.session.snapshot();
    return null;
  }

  private replace(uuid: string): void {
    for (const map of [this.sources, this.destinations] as Array<Map<string, { session: Session }>>) {
      const old = map.get(uuid);
      if (old) {
        map.delete(uuid);
        this.emit({ kind: 'session-removed', session: old.session.snapshot() });
      }
    }
  }

  // ---- destination -------------------------------------------------------

  async prepareIncoming(vm: VmSpec, options: PrepareOptions): Promise<SessionInfo> {
    this.refuseHostAddress(vm);
    const live = this.activeSession(vm.uuid);
    if (live) throw new SessionBusyError(`VM ${vm.uuid} already has a ${live.role} session in state ${live.state}`);
    const readiness: Readiness = options.readyWhen ? parseReadiness(options.readyWhen) : this.config.readyWhen;
    const source = options.source ? parsePeerAddress(options.source, 'source') : null;
    this.replace(vm.uuid);
    // QEMU -incoming with the object `vmstate-args` prints connects to the
    // VM's helper as it starts: a host told the VM is coming has it up.
    if (!this.vms.has(vm.uuid)) {
      try {
        await this.vmstate.attach(vm.uuid, this.vmstateHandler(vm.uuid));
        this.incomingHelpers.add(vm.uuid);
      } catch (e) {
        this.log.warn(`the VM's dbus-vmstate helper did not start: ${(e as Error).message}; QEMU started with the dbus-vmstate object will fail to connect`, { vm: vm.uuid });
      }
    }
    // The snapshot's kernel writes start within a second: get the writers ready meanwhile.
    this.conntrack.prepareWrites?.();
    await this.pauseTracking(vm.uuid);
    const session = new Session('destination', vm.uuid, formatReadiness(readiness), this.clock, this.emit);
    this.emit({ kind: 'session-added', session: session.snapshot() });
    // Written down before the drop goes in: if this daemon dies, the next one knows what to undo.
    await this.journal
      .write({ session: session.id, phase: 'importing', since: this.clock.now(), vm })
      .catch((e: Error) => this.log.error(`session journal: ${e.message}; after a crash the drop is still lifted, but entries imported by then would stay`, { vm: vm.uuid }));
    try {
      await this.blocker.block(vm.uuid, vm.addresses);
    } catch (e) {
      await this.journal.forget(vm.uuid).catch(() => undefined);
      session.fail(`could not block the VM's traffic: ${(e as Error).message}`);
      this.emit({ kind: 'session-removed', session: session.snapshot() });
      throw new Error(`${(e as Error).message}; no session started`);
    }
    session.update({ blocked: true });
    let conn: PeerConnection;
    let at: PeerAddress;
    try {
      at = source ?? (await findSource(this.peers, this.config.peers, vm.uuid, { timeoutMs: WHO_HAS_TIMEOUT_MS, via: (p) => relayFor(this.config, p), now: () => this.clock.now() }));
      const via = relayFor(this.config, at);
      session.update({ peer: formatPeerAddress(at), route: routeText(via) });
      conn = await this.peers.connect(at, { role: PeerRole.Destination, timeoutMs: 10_000, via });
    } catch (e) {
      await this.blocker.unblock(vm.uuid).catch(() => undefined);
      await this.journal.forget(vm.uuid).catch(() => undefined);
      session.update({ blocked: false });
      session.fail((e as Error).message);
      this.emit({ kind: 'session-removed', session: session.snapshot() });
      throw new Error(`${(e as Error).message}; the drop was lifted, nothing imported`);
    }
    const migration = new DestinationMigration(session, vm, conn, this.conntrack, this.blocker, this.clock, this.log, readiness, {
      tableCapacity: this.config.tableCapacity,
      blockTimeoutMs: this.config.blockTimeoutMs,
      onBlockTimeout: this.config.onBlockTimeout,
      offerTimeoutMs: 30_000,
      resume: (lastVersion) => this.resumeAt(at, session, vm, lastVersion),
    }, this.journal);
    this.destinations.set(vm.uuid, migration);
    let offer;
    try {
      offer = await migration.open();
    } catch (e) {
      await migration.fail((e as Error).message);
      throw new Error(`${(e as Error).message}; the drop was lifted, nothing imported`);
    }
    void migration.run(offer);
    this.log.info('incoming session started', { vm: vm.uuid, session: session.id, source: session.info.peer });
    return session.snapshot();
  }

  // ---- source ------------------------------------------------------------

  private async incoming(conn: PeerConnection): Promise<void> {
    let first: PeerMessage;
    try {
      first = await conn.receive(FIRST_MESSAGE_TIMEOUT_MS);
    } catch {
      conn.destroy();
      return;
    }
    try {
      if (!this.authorization.allows(conn.remote.host)) return await this.refuse(conn, PeerErrorCode.Refused, this.authorization.refusal(conn.remote));
      if (first.kind === MessageKind.WhoHas) {
        // A finished (migrated, failed) source session is history: the VM runs elsewhere or not at all.
        const s = this.sources.get(first.vm);
        const has = this.vms.has(first.vm) || (s !== undefined && !s.session.over);
        await conn.send({ kind: MessageKind.HasVm, queryId: first.queryId, vm: first.vm, has });
        await conn.close();
        return;
      }
      if (first.kind === MessageKind.ContainerState) return await this.holdContainer(conn, first);
      if (first.kind === MessageKind.Start) return await this.startSource(conn, first);
      if (first.kind === MessageKind.Resume) return await this.resumeSource(conn, first);
      await this.refuse(conn, PeerErrorCode.Protocol, `expected Start or WhoHas, got ${MessageKind[first.kind]}`);
    } catch (e) {
      this.log.warn(`peer ${formatPeerAddress(conn.remote)}: ${(e as Error).message}`);
      conn.destroy();
    }
  }

  private async refuse(conn: PeerConnection, code: PeerErrorCode, text: string): Promise<void> {
    const m: ErrorMessage = { kind: MessageKind.Error, code, text };
    await conn.send(m).catch(() => undefined);
    await conn.close().catch(() => undefined);
    this.log.warn(`refused peer ${formatPeerAddress(conn.remote)}: ${text}`);
  }

  private async startSource(conn: PeerConnection, start: StartMessage): Promise<void> {
    // Only a VM registered here is served, with this host's idea of its
    // addresses: a peer cannot pull the entries of arbitrary addresses.
    const known = this.vms.get(start.vm);
    if (!known) return this.refuse(conn, PeerErrorCode.NotSource, `VM ${start.vm} is not registered on this host`);
    const vm: VmSpec = known.vm;
    const live = this.activeSession(vm.uuid);
    if (live) return this.refuse(conn, PeerErrorCode.Refused, `VM ${vm.uuid} already has a ${live.role} session here (${live.state})`);
    this.replace(vm.uuid);
    const session = new Session('source', vm.uuid, '', this.clock, this.emit, start.sessionId);
    session.update({ peer: formatPeerAddress(conn.remote), route: this.routeOf(conn) });
    this.emit({ kind: 'session-added', session: session.snapshot() });
    let tracker = this.trackers.get(vm.uuid) ?? this.track(vm);
    try {
      await tracker.ready();
    } catch {
      // The feed died (kernel, table full): start over for this session.
      await tracker.stop();
      this.trackers.delete(vm.uuid);
      tracker = this.track(vm);
    }
    // Set up before the Offer goes out: the destination's prepare, and with
    // it libvirt's QEMU migration, waits for the Offer.
    let arranged: Promise<CutoverArrangement> | null = null;
    const migration = new SourceMigration(session, vm, conn, tracker, this.conntrack, this.clock, this.log, {
      tableCapacity: this.config.tableCapacity,
      changeIntervalMs: this.config.changeIntervalMs,
      // A destination tries to resume until its block timeout (the same setting on every host, as a rule).
      resumeGraceMs: this.config.blockTimeoutMs + RESUME_SLACK_MS,
      onClosed: (migrated) => {
        if (!arranged) return;
        const undo = arranged
          .then((a) => a.release(migrated))
          .catch((e: Error) => this.log.warn(`cut-over set-up not undone: ${e.message}`, { vm: vm.uuid }))
          .finally(() => this.releases.delete(undo));
        this.releases.add(undo);
      },
    });
    this.sources.set(vm.uuid, migration);
    arranged = arrangeCutover(
      { objects: this.vmstateObjects, events: this.domainEvents, log: this.log },
      vm.uuid,
      known.vmstateArgs,
      () => {
        this.log.info('libvirt reports the VM suspended for migration: cutting over', { vm: vm.uuid, session: session.id });
        migration.cutover().catch((e: Error) => this.log.error(`event cut-over failed: ${e.message}`, { vm: vm.uuid, session: session.id }));
      },
      { hotAttach: this.config.hotAttach, timeoutMs: CUTOVER_SETUP_TIMEOUT_MS },
    );
    const arrangement = await arranged;
    session.update({ path: arrangement.path });
    this.log.info('outgoing session started', { vm: vm.uuid, session: session.id, destination: session.info.peer, path: arrangement.path });
    try {
      await migration.start(start);
    } catch (e) {
      await migration.end(`pre-copy failed: ${(e as Error).message}`);
    }
  }

  /**
   * A destination whose link was lost comes back for its session. Only the
   * host the session was with may resume it, and only while the source
   * still streams (after the snapshot, before the final delta).
   */
  private async resumeSource(conn: PeerConnection, m: ResumeMessage): Promise<void> {
    const s = this.sources.get(m.vm);
    if (!s || s.session.id !== m.sessionId || s.session.over) return this.refuse(conn, PeerErrorCode.CannotResume, `no session ${m.sessionId} of VM ${m.vm} to resume here`);
    if (s.session.state !== 'streaming') return this.refuse(conn, PeerErrorCode.CannotResume, `session ${m.sessionId} is in state ${s.session.state}; only a streaming session resumes`);
    const host = parsePeerAddress(s.session.info.peer).host;
    if (canonicalAddressText(host) !== canonicalAddressText(conn.remote.host))
      return this.refuse(conn, PeerErrorCode.Refused, `session ${m.sessionId} belongs to ${host}, not ${conn.remote.host}`);
    try {
      await s.resume(conn, m.lastVersion);
      s.session.update({ peer: formatPeerAddress(conn.remote) });
    } catch (e) {
      await this.refuse(conn, PeerErrorCode.CannotResume, (e as Error).message);
    }
  }

  /** An incoming connection came through a relay when it comes from a configured relay's address. */
  private routeOf(conn: PeerConnection): string {
    const from = canonicalAddressText(conn.remote.host);
    const relay = configuredRelays(this.config).find((r) => canonicalAddressText(r.host) === from);
    return routeText(relay);
  }

  /** Dial the source again for a session whose link was lost; resolves with the connection its Offer came on. */
  private async resumeAt(at: PeerAddress, session: Session, vm: VmSpec, lastVersion: number): Promise<PeerConnection> {
    const conn = await this.peers.connect(at, { role: PeerRole.Destination, timeoutMs: WHO_HAS_TIMEOUT_MS, via: relayFor(this.config, at) });
    try {
      await conn.send({ kind: MessageKind.Resume, sessionId: session.id, vm: vm.uuid, lastVersion });
      const m = await conn.receive(WHO_HAS_TIMEOUT_MS);
      if (m.kind === MessageKind.Error) {
        if (m.code === PeerErrorCode.CannotResume || m.code === PeerErrorCode.Refused) throw new ResumeRefusedError(m.text);
        throw new Error(`source reported: ${m.text}`);
      }
      if (m.kind !== MessageKind.Offer || m.sessionId !== session.id || m.vm !== vm.uuid || m.resumeFrom !== lastVersion)
        throw new ResumeRefusedError(`source answered the resume with ${MessageKind[m.kind]}${m.kind === MessageKind.Offer ? ` from version ${m.resumeFrom}` : ''}`);
      return conn;
    } catch (e) {
      conn.destroy();
      throw e;
    }
  }

  async cutover(uuid: string): Promise<SessionInfo> {
    const id = parseVmUuid(uuid);
    const s = this.sources.get(id);
    if (!s || s.session.over) throw new NoSessionError(`VM ${id} has no outgoing session on this host`);
    await s.cutover();
    return s.session.snapshot();
  }

  async finish(uuid: string, result: 'migrated' | 'failed'): Promise<void> {
    const id = parseVmUuid(uuid);
    const s = this.sources.get(id);
    const d = this.destinations.get(id);
    if (s && !s.session.over) await s.finish(result);
    else if (d && !d.session.over) await d.finish(result);
    // Closing as failed what already failed (and rolled back) is done, not an error.
    else if (result === 'failed' && (s?.session.state === 'failed' || d?.session.state === 'failed')) return;
    else throw new NoSessionError(`VM ${id} has no open session on this host`);
  }

  async abort(uuid: string): Promise<void> {
    const id = parseVmUuid(uuid);
    const s = this.sources.get(id);
    const d = this.destinations.get(id);
    let any = false;
    if (s && !s.session.over) {
      await s.end('aborted');
      any = true;
    }
    if (d && !d.session.over) {
      await d.fail('aborted');
      any = true;
    }
    if (!any) throw new NoSessionError(`VM ${id} has no open session on this host`);
  }

  // ---- containers (CRIU) -------------------------------------------------

  async sendContainerState(destination: string, state: ContainerState): Promise<void> {
    const at = parsePeerAddress(destination, 'destination');
    // Checked here as the destination will: a state it would refuse is never sent.
    await checkContainerState(state, this.config.tableCapacity);
    const conn = await this.peers.connect(at, { role: PeerRole.Source, timeoutMs: WHO_HAS_TIMEOUT_MS, via: relayFor(this.config, at) });
    try {
      try {
        await conn.send({ kind: MessageKind.ContainerState, container: state.container, manifest: state.manifest, bytes: state.snapshot });
      } catch (e) {
        if (e instanceof RangeError) throw new Error(`container ${state.container}: ${e.message}; its state travels in the checkpoint only`);
        throw e;
      }
      const m = await conn.receive(FIRST_MESSAGE_TIMEOUT_MS);
      if (m.kind === MessageKind.Error) throw new Error(`${formatPeerAddress(at)} refused the state of container ${state.container}: ${m.text}`);
      if (m.kind !== MessageKind.ContainerHeld || m.container !== state.container)
        throw new Error(`${formatPeerAddress(at)} answered the state of container ${state.container} with ${MessageKind[m.kind]}`);
      this.log.info('container state sent', { container: state.container, destination: formatPeerAddress(at), bytes: state.snapshot.length });
    } finally {
      await conn.close().catch(() => conn.destroy());
    }
  }

  async takeContainerState(container: string): Promise<ContainerState> {
    this.forgetOldContainers();
    const held = this.heldContainers.get(container);
    if (!held) throw new NoSessionError(`no peer sent the state of container ${container} to this host (or it was taken, or it is older than ${HELD_CONTAINER_MS / 60_000} minutes)`);
    this.heldContainers.delete(container);
    return held.state;
  }

  /** A peer's container state: checked whole (manifest, size, digest, every record) before it is kept. */
  private async holdContainer(conn: PeerConnection, m: ContainerStateMessage): Promise<void> {
    this.forgetOldContainers();
    // The payload's bytes belong to the connection's buffer: keep a copy.
    const state: ContainerState = { container: m.container, manifest: m.manifest, snapshot: Uint8Array.from(m.bytes) };
    let manifest;
    try {
      manifest = await checkContainerState(state, this.config.tableCapacity);
    } catch (e) {
      return this.refuse(conn, PeerErrorCode.Refused, (e as Error).message);
    }
    // As for a VM: a peer cannot make this host take its own flows, or its own traffic, for a container's.
    const own = this.hostAddressAmong(manifest.addresses.map((a) => formatAddress(a.bytes, 0, a.bytes.length)));
    if (own !== null) return this.refuse(conn, PeerErrorCode.Refused, `the state of container ${state.container} names ${own}, an address of this host`);
    if (!this.heldContainers.has(state.container) && this.heldContainers.size >= MAX_HELD_CONTAINERS)
      return this.refuse(conn, PeerErrorCode.Limit, `this host already holds the states of ${MAX_HELD_CONTAINERS} containers`);
    this.heldContainers.set(state.container, { state, at: this.clock.now() });
    await conn.send({ kind: MessageKind.ContainerHeld, container: state.container });
    await conn.close();
    this.log.info('holding a container state for its restore', { container: state.container, peer: formatPeerAddress(conn.remote), bytes: state.snapshot.length });
  }

  private forgetOldContainers(): void {
    const now = this.clock.now();
    for (const [id, h] of this.heldContainers) if (now - h.at > HELD_CONTAINER_MS) this.heldContainers.delete(id);
  }

  // ---- QEMU dbus-vmstate -------------------------------------------------

  /** Source, VM stopped: ship the residual delta, hand QEMU a reference to it. */
  private async save(uuid: string): Promise<Uint8Array> {
    const s = this.sources.get(uuid);
    if (!s || s.session.over) {
      this.log.warn('QEMU saved state with no outgoing session; the destination gets none', { vm: uuid });
      return encodeReference({ kind: 'none' });
    }
    try {
      return encodeReference(await s.cutover({ paused: true }));
    } catch (e) {
      // Never throw here: QEMU would migrate on without our section.
      const reason = `the source could not ship the residual delta: ${(e as Error).message}`;
      this.log.error(reason, { vm: uuid, session: s.session.id });
      return encodeReference({ kind: 'failed', reason });
    }
  }

  /** Destination, before the VM resumes: wait until the state the reference names is in. */
  private async load(uuid: string, blob: Uint8Array): Promise<void> {
    const ref = decodeReference(blob);
    const d = this.destinations.get(uuid);
    if (!d) {
      if (ref.kind === 'session') this.log.warn('QEMU loaded a state reference but this host has no incoming session', { vm: uuid });
      return;
    }
    if (ref.kind === 'none') {
      if (!d.session.over) await d.fail('the source shipped no state (no outgoing session there)');
      return;
    }
    if (ref.kind === 'failed') {
      if (!d.session.over) await d.fail(ref.reason);
      throw new Error(`${ref.reason}; the VM must not run here without its connection state`);
    }
    try {
      await d.waitFinal(ref, this.config.loadTimeoutMs);
    } catch (e) {
      // A wrong or failed state is never let through; waiting is bounded:
      // QEMU resumes the VM with its traffic still dropped, and the import
      // goes on until the readiness policy lifts the drop (or the block
      // timeout applies).
      if (!(e instanceof FinalTimeoutError)) throw e;
      d.resumedBlocked(this.config.loadTimeoutMs);
    } finally {
      // Said a moment after the answer, with the session's other held signals (Session.releaseSoon).
      const at = this.clock.now();
      this.clock.after(RELEASE_AFTER_ANSWER_MS + 1, () => {
        if (!d.session.over || d.session.state === 'ready') d.session.update({ resumedAt: at });
      });
    }
  }
}

/** A session's route as status shows it. */
function routeText(via: PeerAddress | undefined): string {
  return via ? `via ${formatPeerAddress(via)}` : 'direct';
}

/** Same addresses (in any order), zone and mark. */
function sameSpec(a: VmSpec, b: VmSpec): boolean {
  const key = (v: VmSpec): string =>
    JSON.stringify([
      v.addresses.map((x) => Buffer.from(x.bytes).toString('hex')).sort(),
      v.zone ?? null,
      v.mark ?? null,
    ]);
  return key(a) === key(b);
}
