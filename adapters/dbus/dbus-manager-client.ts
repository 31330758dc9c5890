import * as dbus from 'dbus-next';
import { ContainerState, PrepareOptions, ServiceEvent, SessionInfo, SessionState } from '../../plugin/migration-service';
import { ManagerClient, ManagerClientError, ManagerStatus } from '../../plugin/ports/manager-client';
import { vmAddressTexts, VmSpec } from '../../plugin/vm';
import { BusConnection, connectBus, systemBusAddress } from './bus-connection';
import { formatMark } from './call-arguments';
import { clientError } from './client-errors';
import { BUS_NAME, MANAGER_INTERFACE, MANAGER_PATH, SESSION_INTERFACE, SESSION_PATH_PREFIX, sessionObjectPath } from './names';
import { applyWireProperties, emptySessionInfo } from './session-properties';

export interface DbusManagerClientOptions {
  /** Default: the system bus (`DBUS_SYSTEM_BUS_ADDRESS` honoured). */
  busAddress?: string;
  /** How long one call may take; default 60 s (PrepareIncoming may look for the source among the peers). */
  callTimeoutMs?: number;
}

type Body = unknown[];

/**
 * ManagerClient over D-Bus, speaking to `org.ctmigrate1` with plain method
 * calls (no proxy objects: they cost an Introspect round trip each). Connects
 * on first use.
 */
export class DbusManagerClient implements ManagerClient {
  readonly busAddress: string;
  private readonly callTimeoutMs: number;
  private connecting: Promise<BusConnection> | undefined;
  private readonly pending = new Set<(e: ManagerClientError) => void>();

  constructor(options: DbusManagerClientOptions = {}) {
    this.busAddress = options.busAddress ?? systemBusAddress();
    this.callTimeoutMs = options.callTimeoutMs ?? 60_000;
  }

  async register(vm: VmSpec): Promise<string> {
    const [args] = await this.manager('Register', 'sasis', [vm.uuid, vmAddressTexts(vm), vm.zone ?? -1, formatMark(vm.mark)]);
    return asString(args, 'Register');
  }

  async unregister(uuid: string): Promise<void> {
    await this.manager('Unregister', 's', [uuid]);
  }

  async prepareIncoming(vm: VmSpec, options: PrepareOptions): Promise<SessionInfo> {
    const [path] = await this.manager('PrepareIncoming', 'sasisss', [vm.uuid, vmAddressTexts(vm), vm.zone ?? -1, formatMark(vm.mark), options.source ?? '', options.readyWhen ?? '']);
    return this.sessionAt(asString(path, 'PrepareIncoming'));
  }

  async cutover(uuid: string): Promise<SessionInfo> {
    const [path] = await this.manager('Cutover', 's', [uuid]);
    return this.sessionAt(asString(path, 'Cutover'));
  }

  async finish(uuid: string, result: 'migrated' | 'failed'): Promise<void> {
    await this.manager('Finish', 'ss', [uuid, result]);
  }

  async abort(uuid: string): Promise<void> {
    await this.manager('Abort', 's', [uuid]);
  }

  async sessions(): Promise<SessionInfo[]> {
    return (await this.status()).sessions;
  }

  async session(uuid: string): Promise<SessionInfo> {
    const [path] = await this.manager('GetSession', 's', [uuid]);
    return this.sessionAt(asString(path, 'GetSession'));
  }

  async status(): Promise<ManagerStatus> {
    const [json] = await this.manager('Status', '', []);
    return parseStatus(asString(json, 'Status'));
  }

  async vmstateArgs(uuid: string): Promise<string> {
    const [args] = await this.manager('VmstateArgs', 's', [uuid]);
    return asString(args, 'VmstateArgs');
  }

  async sendContainerState(destination: string, state: ContainerState): Promise<void> {
    await this.manager('SendContainerState', 'sssay', [destination, state.container, state.manifest, Buffer.from(state.snapshot)]);
  }

  async takeContainerState(container: string): Promise<ContainerState> {
    const [manifest, snapshot] = await this.manager('TakeContainerState', 's', [container]);
    if (!Buffer.isBuffer(snapshot)) throw new ManagerClientError('failed', 'ctmigrated answered TakeContainerState without the snapshot bytes');
    return { container, manifest: asString(manifest, 'TakeContainerState'), snapshot };
  }

  async watch(listener: (event: ServiceEvent) => void): Promise<() => Promise<void>> {
    const connection = await this.connection();
    const rule = `type='signal',sender='${BUS_NAME}',path_namespace='${MANAGER_PATH}'`;
    await this.call(connection, 'org.freedesktop.DBus.AddMatch', {
      destination: 'org.freedesktop.DBus', path: '/org/freedesktop/DBus', interface: 'org.freedesktop.DBus', member: 'AddMatch', signature: 's', body: [rule],
    });
    const known = new Map<string, SessionInfo>();
    for (const s of (await this.status()).sessions) known.set(sessionObjectPath(s.id), s);
    // Signals are handled one after the other: SessionAdded needs a GetAll
    // before the PropertiesChanged that follow it make sense.
    let queue = Promise.resolve();
    const onMessage = (msg: dbus.Message): void => {
      if (msg.type !== dbus.MessageType.SIGNAL || !msg.path?.startsWith(MANAGER_PATH)) return;
      queue = queue.then(() => this.translate(msg, known)).then(
        (event) => {
          try {
            if (event) listener(event);
          } catch {
            // A listener's failure is its own; later signals still arrive.
          }
        },
        () => undefined, // A session that vanished between signal and GetAll: nothing to report.
      );
    };
    connection.bus.on('message', onMessage);
    return async () => {
      connection.bus.removeListener('message', onMessage);
      await this.call(connection, 'org.freedesktop.DBus.RemoveMatch', {
        destination: 'org.freedesktop.DBus', path: '/org/freedesktop/DBus', interface: 'org.freedesktop.DBus', member: 'RemoveMatch', signature: 's', body: [rule],
      }).catch(() => undefined);
    };
  }

  async close(): Promise<void> {
    const connecting = this.connecting;
    this.connecting = undefined;
    if (!connecting) return;
    try {
      (await connecting).close();
    } catch {
      // Never connected: nothing to close.
    }
  }

  private async translate(msg: dbus.Message, known: Map<string, SessionInfo>): Promise<ServiceEvent | undefined> {
    const body: Body = msg.body ?? [];
    if (msg.interface === 'org.freedesktop.DBus.Properties' && msg.member === 'PropertiesChanged') {
      if (body[0] !== SESSION_INTERFACE || !msg.path.startsWith(SESSION_PATH_PREFIX)) return undefined;
      const before = known.get(msg.path) ?? (await this.sessionAt(msg.path));
      const session = applyWireProperties(before, unwrapVariants(body[1]));
      known.set(msg.path, session);
      return { kind: 'session-changed', session };
    }
    if (msg.interface !== MANAGER_INTERFACE) return undefined;
    const path = asString(body[0], msg.member);
    const cached = async (): Promise<SessionInfo> => known.get(path) ?? this.sessionAt(path).then((s) => (known.set(path, s), s));
    switch (msg.member) {
      case 'SessionAdded': {
        const session = await this.sessionAt(path);
        known.set(path, session);
        return { kind: 'session-added', session };
      }
      case 'SessionRemoved': {
        const session = known.get(path);
        known.delete(path);
        return session ? { kind: 'session-removed', session } : undefined;
      }
      case 'StateChanged': {
        const session = { ...(await cached()), state: asString(body[2], 'StateChanged') as SessionState };
        known.set(path, session);
        return { kind: 'state-changed', session, from: asString(body[1], 'StateChanged') as SessionState };
      }
      case 'Ready':
        return { kind: 'ready', session: await cached() };
      case 'Failed':
        return { kind: 'failed', session: await cached(), reason: asString(body[1], 'Failed') };
      case 'FailOpen':
        return { kind: 'fail-open', session: await cached(), reason: asString(body[1], 'FailOpen') };
      default:
        return undefined;
    }
  }

  private async sessionAt(path: string): Promise<SessionInfo> {
    const connection = await this.connection();
    const [props] = await this.call(connection, 'org.freedesktop.DBus.Properties.GetAll', {
      destination: BUS_NAME, path, interface: 'org.freedesktop.DBus.Properties', member: 'GetAll', signature: 's', body: [SESSION_INTERFACE],
    });
    try {
      return applyWireProperties(emptySessionInfo(), unwrapVariants(props));
    } catch (e) {
      throw new ManagerClientError('failed', `ctmigrated sent a session that does not fit: ${e instanceof Error ? e.message : String(e)}`);
    }
  }

  private async manager(member: string, signature: string, body: Body): Promise<Body> {
    const connection = await this.connection();
    return this.call(connection, `${MANAGER_INTERFACE}.${member}`, { destination: BUS_NAME, path: MANAGER_PATH, interface: MANAGER_INTERFACE, member, signature, body });
  }

  private connection(): Promise<BusConnection> {
    if (!this.connecting) {
      const connecting = connectBus(this.busAddress).then((c) => {
        c.onLost((err) => {
          this.connecting = undefined;
          const e = new ManagerClientError('unavailable', `lost the connection to the system bus at ${this.busAddress}: ${err.message}`);
          for (const reject of [...this.pending]) reject(e);
        });
        return c;
      });
      this.connecting = connecting;
      connecting.catch(() => {
        if (this.connecting === connecting) this.connecting = undefined;
      });
    }
    return this.connecting.catch((e: unknown) => {
      throw new ManagerClientError('unavailable', `ctmigrated cannot be reached: ${e instanceof Error ? e.message : String(e)}`);
    });
  }

  /** One call with a deadline; dbus-next itself would wait forever. */
  private call(connection: BusConnection, what: string, message: ConstructorParameters<typeof dbus.Message>[0]): Promise<Body> {
    return new Promise<Body>((resolve, reject) => {
      const fail = (e: ManagerClientError): void => {
        clearTimeout(timer);
        this.pending.delete(fail);
        reject(e);
      };
      const timer = setTimeout(() => fail(new ManagerClientError('timeout', `ctmigrated did not answer ${what} within ${this.callTimeoutMs / 1000} s`)), this.callTimeoutMs);
      this.pending.add(fail);
      connection.bus.call(new dbus.Message(message)).then(
        (reply) => {
          clearTimeout(timer);
          this.pending.delete(fail);
          resolve(reply?.body ?? []);
        },
        (e: unknown) => fail(clientError(e, what, this.busAddress)),
      );
    });
  }
}

function asString(v: unknown, what: string): string {
  if (typeof v !== 'string') throw new ManagerClientError('failed', `ctmigrated answered ${what} with something that is not a string`);
  return v;
}

/** a{sv} as dbus-next hands it over (name → Variant) to name → value. */
function unwrapVariants(v: unknown): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (typeof v !== 'object' || v === null) return out;
  for (const [k, variant] of Object.entries(v as Record<string, unknown>)) out[k] = variant instanceof dbus.Variant ? variant.value : variant;
  return out;
}

function parseStatus(json: string): ManagerStatus {
  let parsed: unknown;
  try {
    parsed = JSON.parse(json);
  } catch {
    throw new ManagerClientError('failed', 'ctmigrated sent a Status that is not JSON');
  }
  const s = parsed as Partial<ManagerStatus> | null;
  if (!s || typeof s.version !== 'string' || !Array.isArray(s.sessions) || !Array.isArray(s.vms)) {
    throw new ManagerClientError('failed', 'ctmigrated sent a Status without version, sessions and vms');
  }
  return s as ManagerStatus;
}
