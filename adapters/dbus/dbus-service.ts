import * as dbus from 'dbus-next';
import { MigrationService, ServiceEvent, SessionInfo } from '../../plugin/migration-service';
import { Log } from '../../plugin/ports/log-port';
import { BusConnection, connectBus, systemBusAddress } from './bus-connection';
import { ChangeThrottle } from './change-throttle';
import { ManagerObject, SessionDirectory } from './manager-object';
import { BUS_NAME, MANAGER_PATH, sessionObjectPath } from './names';
import { SessionObject } from './session-object';

export interface DbusServiceOptions {
  /** The daemon's version (Manager.Version). */
  version: string;
  /** Bus to serve on; default the system bus (`DBUS_SYSTEM_BUS_ADDRESS` honoured). */
  busAddress?: string;
  /** Least time between two PropertiesChanged of one session; default 100 ms (10 per second). */
  propertiesIntervalMs?: number;
  /** QEMU's -object value for VMs not registered (Manager.VmstateArgs); usually VmStatePort.objectArgs. */
  objectArgs?: (uuid: string) => string;
  log?: Log;
  /** The bus connection went away after start(); the daemon cannot be reached any more. */
  onDisconnect?: (error: Error) => void;
}

/** The service could not be put on the bus; the message says why and that nothing was left behind. */
export class DbusServiceError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DbusServiceError';
  }
}

interface Exported {
  path: string;
  object: SessionObject;
  throttle: ChangeThrottle;
}

/**
 * `org.ctmigrate1` on a bus: the Manager object over the injected engine and
 * one Session object per engine session, kept in step with the engine's
 * events (signals at once, property progress rate-limited per session).
 */
export class DbusService implements SessionDirectory {
  private connection: BusConnection | undefined;
  private manager: ManagerObject | undefined;
  private unsubscribe: (() => void) | undefined;
  private readonly exported = new Map<string, Exported>();
  private readonly intervalMs: number;
  readonly busAddress: string;

  constructor(
    private readonly engine: MigrationService,
    private readonly options: DbusServiceOptions,
  ) {
    this.busAddress = options.busAddress ?? systemBusAddress();
    this.intervalMs = options.propertiesIntervalMs ?? 100;
  }

  /** Connect, export the objects and own `org.ctmigrate1`. Fails with DbusServiceError, leaving nothing behind. */
  async start(): Promise<void> {
    if (this.connection) return;
    let connection: BusConnection;
    try {
      connection = await connectBus(this.busAddress);
    } catch (e) {
      throw new DbusServiceError(`${e instanceof Error ? e.message : String(e)}; org.ctmigrate1 not served`);
    }
    this.connection = connection;
    try {
      this.manager = new ManagerObject({ engine: this.engine, sessions: this, version: this.options.version, objectArgs: this.options.objectArgs });
      connection.bus.export(MANAGER_PATH, this.manager);
      for (const s of this.engine.sessions()) this.ensure(s, false);
      this.unsubscribe = this.engine.subscribe((event) => this.onEvent(event));
      await this.requestName(connection);
    } catch (e) {
      await this.stop();
      throw e;
    }
    connection.onLost((error) => {
      this.options.log?.error('lost the D-Bus connection', { bus: this.busAddress, error: error.message });
      this.teardown();
      this.options.onDisconnect?.(error);
    });
    this.options.log?.info('serving org.ctmigrate1', { bus: this.busAddress, name: connection.uniqueName });
  }

  /** Release the name, remove every object, disconnect. Idempotent. */
  async stop(): Promise<void> {
    const connection = this.connection;
    if (!connection) return;
    for (const e of this.exported.values()) e.throttle.flush();
    try {
      await withDeadline(connection.bus.releaseName(BUS_NAME), 2000);
    } catch {
      // Disconnecting releases the name anyway; only the order was nicer.
    }
    this.teardown();
    connection.close();
  }

  pathOf(session: SessionInfo): string {
    return this.ensure(session, true).path;
  }

  paths(): string[] {
    return [...this.exported.values()].map((e) => e.path);
  }

  private teardown(): void {
    this.unsubscribe?.();
    this.unsubscribe = undefined;
    for (const e of this.exported.values()) e.throttle.cancel();
    this.exported.clear();
    this.connection = undefined;
    this.manager = undefined;
  }

  private async requestName(connection: BusConnection): Promise<void> {
    let reply: number;
    try {
      reply = await connection.bus.requestName(BUS_NAME, dbus.NameFlag.DO_NOT_QUEUE);
    } catch (e) {
      if (e instanceof dbus.DBusError && e.type === 'org.freedesktop.DBus.Error.AccessDenied') {
        throw new DbusServiceError(
          `the bus at ${this.busAddress} does not let uid ${process.getuid?.() ?? '?'} own org.ctmigrate1 (its policy, org.ctmigrate1.conf, allows root only); not served`,
        );
      }
      throw new DbusServiceError(`cannot own org.ctmigrate1 on the bus at ${this.busAddress}: ${e instanceof Error ? e.message : String(e)}`);
    }
    if (reply !== dbus.RequestNameReply.PRIMARY_OWNER && reply !== dbus.RequestNameReply.ALREADY_OWNER) {
      throw new DbusServiceError(`another ctmigrated owns org.ctmigrate1 on the bus at ${this.busAddress}; this one does not start`);
    }
  }

  /** The session's exported object, exporting it (and announcing it) when new. */
  private ensure(session: SessionInfo, announce: boolean): Exported {
    const found = this.exported.get(session.id);
    if (found) {
      found.object.update(session);
      return found;
    }
    const connection = this.connection;
    if (!connection || !this.manager) throw new DbusServiceError('org.ctmigrate1 is not on the bus');
    const path = sessionObjectPath(session.id);
    const object = new SessionObject(session, (vm) => this.engine.abort(vm));
    const throttle = new ChangeThrottle(this.intervalMs, () => object.publish());
    const entry = { path, object, throttle };
    connection.bus.export(path, object);
    this.exported.set(session.id, entry);
    if (announce) {
      this.manager.SessionAdded(path);
      this.sessionsChanged();
    }
    return entry;
  }

  private sessionsChanged(): void {
    if (this.manager) dbus.interface.Interface.emitPropertiesChanged(this.manager, { Sessions: this.paths() }, []);
  }

  private onEvent(event: ServiceEvent): void {
    try {
      this.apply(event);
    } catch (e) {
      // The engine must never fail because a subscriber did.
      this.options.log?.warn('could not publish a session event on D-Bus', { kind: event.kind, session: event.session.id, error: e instanceof Error ? e.message : String(e) });
    }
  }

  private apply(event: ServiceEvent): void {
    const manager = this.manager;
    const connection = this.connection;
    if (!manager || !connection) return;
    if (event.kind === 'session-removed') {
      const entry = this.exported.get(event.session.id);
      if (!entry) return;
      entry.object.update(event.session);
      entry.throttle.flush();
      connection.bus.unexport(entry.path, entry.object);
      this.exported.delete(event.session.id);
      manager.SessionRemoved(entry.path);
      this.sessionsChanged();
      return;
    }
    const entry = this.ensure(event.session, true);
    switch (event.kind) {
      case 'session-added':
        entry.throttle.flush();
        return;
      case 'session-changed':
        entry.throttle.poke();
        return;
      case 'state-changed':
        entry.throttle.flush();
        manager.StateChanged(entry.path, event.from, event.session.state);
        return;
      case 'ready':
        entry.throttle.flush();
        manager.Ready(entry.path);
        return;
      case 'failed':
        entry.throttle.flush();
        manager.Failed(entry.path, event.reason);
        return;
      case 'fail-open':
        entry.throttle.flush();
        manager.FailOpen(entry.path, event.reason);
        return;
    }
  }
}

function withDeadline<T>(p: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no reply within ${ms} ms`)), ms);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(t);
        reject(e instanceof Error ? e : new Error(String(e)));
      },
    );
  });
}
