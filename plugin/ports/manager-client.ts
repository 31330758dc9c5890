import { ContainerState, PrepareOptions, ServiceEvent, SessionInfo } from '../migration-service';
import { VmSpec } from '../vm';
import { portToken } from './port-token';

/** A VM registered with the local daemon, as `status` shows it. */
export interface RegisteredVmStatus {
  uuid: string;
  addresses: string[];
  /** Conntrack zone, null = any zone. */
  zone: number | null;
  /** "VALUE/MASK" in hex, '' = no mark filter. */
  mark: string;
  /** QEMU's -object value for the VM's dbus-vmstate helper, '' without one. */
  vmstateArgs: string;
}

/** The whole picture of the local daemon (what `ctmigratectl status --json` prints). */
export interface ManagerStatus {
  /** The daemon's version. */
  version: string;
  sessions: SessionInfo[];
  vms: RegisteredVmStatus[];
}

/** Why a call to the local daemon did not succeed; ctmigratectl picks its exit line from it. */
export type ManagerErrorKind =
  /** Nobody owns the daemon's name, or the bus itself cannot be reached. */
  | 'unavailable'
  /** The bus policy refused the call (changing calls are for root only). */
  | 'access-denied'
  /** The daemon refused the arguments. */
  | 'invalid-args'
  /** The daemon tried and failed; the message says what failed and what was kept. */
  | 'failed'
  /** The daemon did not answer in time. */
  | 'timeout';

/** A failed call to the local daemon. The message is one line, fit for stderr. */
export class ManagerClientError extends Error {
  constructor(
    readonly kind: ManagerErrorKind,
    message: string,
  ) {
    super(message);
    this.name = 'ManagerClientError';
  }
}

/**
 * The local daemon as ctmigratectl and the libvirt hook reach it: each method
 * is one call on the daemon's Manager object. Failures are ManagerClientError.
 */
export interface ManagerClient {
  /** This host runs the VM; resolves to QEMU's -object value for its dbus-vmstate helper. */
  register(vm: VmSpec): Promise<string>;
  unregister(uuid: string): Promise<void>;
  /** The VM is coming here: block its traffic, start pulling its state. */
  prepareIncoming(vm: VmSpec, options: PrepareOptions): Promise<SessionInfo>;
  /** Source: the VM has stopped; ship the residual delta now. */
  cutover(uuid: string): Promise<SessionInfo>;
  finish(uuid: string, result: 'migrated' | 'failed'): Promise<void>;
  abort(uuid: string): Promise<void>;
  sessions(): Promise<SessionInfo[]>;
  /** The VM's current session; fails (kind `failed`) when it has none. */
  session(uuid: string): Promise<SessionInfo>;
  status(): Promise<ManagerStatus>;
  vmstateArgs(uuid: string): Promise<string>;
  /** Hand a container's packed state to the daemon at `destination` (ADDR:PORT) through this host's daemon. */
  sendContainerState(destination: string, state: ContainerState): Promise<void>;
  /** The state a peer sent this host's daemon for the container (kind `failed` when none came). */
  takeContainerState(container: string): Promise<ContainerState>;
  /**
   * Live updates (signals and PropertiesChanged) as ServiceEvents carrying
   * the session's latest properties. Resolves once subscribed, to the
   * unsubscribe function.
   */
  watch(listener: (event: ServiceEvent) => void): Promise<() => Promise<void>>;
  /** Drop the bus connection. */
  close(): Promise<void>;
}
export const ManagerClient = portToken<ManagerClient>('ManagerClient');
