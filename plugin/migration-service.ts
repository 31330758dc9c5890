import type { RecoveryReport } from './crash-recovery';
import type { PeerAddress } from './ports/peer-port';
import { VmSpec } from './vm';
import { portToken } from './ports/port-token';

/** Which side of a migration a session is. */
export type SessionRole = 'source' | 'destination';

/**
 * Session states. Source: precopy → streaming → cutover → migrated, or
 * failed. Destination: preparing → precopy → streaming → cutover → ready,
 * or failed. `failed` also covers cancelled (the reason says which).
 */
export type SessionState = 'preparing' | 'precopy' | 'streaming' | 'cutover' | 'ready' | 'migrated' | 'failed';

/** A session as the outside world sees it (D-Bus properties, status output). */
export interface SessionInfo {
  /** Opaque id, stable for the session's life; also the D-Bus object name. */
  id: string;
  role: SessionRole;
  vm: string;
  state: SessionState;
  /** Peer daemon (ADDR:PORT) the session talks to, '' while unknown. */
  peer: string;
  /** Entries sent (source) or received (destination), snapshot and changes. */
  sent: number;
  received: number;
  /** Entries committed to the kernel (destination). */
  committed: number;
  /** Entries refused on import (not the VM's, malformed); never reach the kernel. */
  refused: number;
  /** Bytes of state on the wire so far. */
  bytes: number;
  /** The destination drops the VM's traffic right now. */
  blocked: boolean;
  /** Readiness policy in force (complete, precopy, fraction:F, tcp-established). */
  readyWhen: string;
  /** Table version shipped (source) or applied (destination). */
  version: number;
  /** Milliseconds since the epoch; 0 = not yet. */
  createdAt: number;
  updatedAt: number;
  cutoverAt: number;
  readyAt: number;
  /**
   * Destination: when QEMU's Load() answered and the VM resumed here (0:
   * not yet, or no dbus-vmstate). readyAt - resumedAt > 0 is how long the VM
   * ran with its traffic blocked.
   */
  resumedAt: number;
  /** Why the session failed, '' otherwise. */
  error: string;
  /**
   * How the residual delta is handed over at the source's stop (see
   * cutover-path.ts): vmstate, vmstate-hot, event or hook; '' until the
   * source has chosen (the destination learns it from the source's offer).
   */
  path: string;
  /** How the peer connection runs: `direct`, or `via ADDR:PORT` (a relay); '' until connected. */
  route: string;
}

/** What changed, for listeners (D-Bus signals and PropertiesChanged). */
export type ServiceEvent =
  | { kind: 'session-added'; session: SessionInfo }
  | { kind: 'session-changed'; session: SessionInfo }
  | { kind: 'session-removed'; session: SessionInfo }
  | { kind: 'state-changed'; session: SessionInfo; from: SessionState }
  | { kind: 'ready'; session: SessionInfo }
  | { kind: 'failed'; session: SessionInfo; reason: string }
  /** The block was lifted before the state was complete (timeout policy fail-open). */
  | { kind: 'fail-open'; session: SessionInfo; reason: string };

export interface PrepareOptions {
  /** Source daemon ADDR:PORT; absent: ask the configured peers. */
  source?: string;
  /** Readiness policy text; absent: the daemon's default. */
  readyWhen?: string;
}

/** A VM registered on this host (it runs here, or is about to). */
export interface RegisteredVm {
  vm: VmSpec;
  /** QEMU's -object value for this VM's dbus-vmstate helper, '' without one. */
  vmstateArgs: string;
}

/**
 * The migration engine's face to its callers: the D-Bus Manager object,
 * and through it ctmigratectl and the libvirt hook. Every method either
 * does what it says or throws an Error whose message says what failed and
 * what was kept.
 */
export interface MigrationService {
  /** This host runs the VM: track its entries, start its dbus-vmstate helper. Idempotent. */
  register(vm: VmSpec): Promise<RegisteredVm>;
  /** Stop tracking a VM that is gone (no session may be running for it). */
  unregister(uuid: string): Promise<void>;
  /** The VM is coming here: block its traffic, start pulling its state. */
  prepareIncoming(vm: VmSpec, options: PrepareOptions): Promise<SessionInfo>;
  /** Source: the VM has stopped; ship the residual delta now (no-op if already shipped). */
  cutover(uuid: string): Promise<SessionInfo>;
  /** Close the VM's session: `migrated` deletes the source's entries; `failed` rolls back. */
  finish(uuid: string, result: 'migrated' | 'failed'): Promise<void>;
  /** Cancel and roll back whatever session the VM has here. */
  abort(uuid: string): Promise<void>;
  sessions(): SessionInfo[];
  registered(): RegisteredVm[];
  /** Subscribe to changes; returns the unsubscribe function. */
  subscribe(listener: (event: ServiceEvent) => void): () => void;
  /**
   * A container's packed state (CRIU's network-lock, criu-action.ts) to the
   * daemon at `destination` (ADDR:PORT), which holds it for the restore.
   */
  sendContainerState(destination: string, state: ContainerState): Promise<void>;
  /** The state a peer sent for this container, handed over once (NoSessionError when none came). */
  takeContainerState(container: string): Promise<ContainerState>;
}

/** A container's packed state: ctmigrate.json's text and ctmigrate.ctm's bytes. */
export interface ContainerState {
  container: string;
  manifest: string;
  snapshot: Uint8Array;
}
export const MigrationService = portToken<MigrationService>('MigrationService');

/**
 * The service with the daemon's lifecycle around it, as ctmigrated runs it:
 * recover() once before anything else, restore() the registered VMs,
 * start() answering peers, stop() rolling every open session back.
 */
export interface MigrationDaemon extends MigrationService {
  /** Undo what a crashed earlier run left: its drops, its half-imported entries. */
  recover(): Promise<RecoveryReport>;
  /** Register again the VMs the run dir lists; resolves with how many. */
  restore(): Promise<number>;
  /** Listen for peers; resolves with the address bound. */
  start(): Promise<PeerAddress>;
  stop(): Promise<void>;
}
export const MigrationDaemon = portToken<MigrationDaemon>('MigrationDaemon');
