import * as dbus from 'dbus-next';
import { MigrationService, SessionInfo } from '../../plugin/migration-service';
import { nameArguments } from './argument-names';
import { containerArgument, finishResultArgument, prepareArguments, vmSpecArguments, vmUuidArgument } from './call-arguments';
import { managerStatus } from './manager-status';
import { MANAGER_INTERFACE } from './names';
import { asDbusCall } from './service-errors';
import { NoSessionError } from '../../plugin/service-errors';

/** What the Manager needs from whoever keeps the session objects. */
export interface SessionDirectory {
  /** The session's object path, exporting its object first if needed. */
  pathOf(session: SessionInfo): string;
  /** Paths of every exported session object. */
  paths(): string[];
}

export interface ManagerDependencies {
  engine: MigrationService;
  sessions: SessionDirectory;
  version: string;
  /** QEMU's -object value for a VM that is not registered (yet); absent: such VMs are refused. */
  objectArgs?: (uuid: string) => string;
}

/** The VM's most recent session here. */
export function latestSession(engine: MigrationService, uuid: string): SessionInfo {
  let best: SessionInfo | undefined;
  for (const s of engine.sessions()) if (s.vm === uuid && (!best || s.createdAt >= best.createdAt)) best = s;
  if (!best) throw new NoSessionError(`VM ${uuid} has no migration session on this host`);
  return best;
}

/**
 * `org.ctmigrate1.Manager` at /org/ctmigrate1: one method per engine call,
 * plus reading calls and the signals. Methods are named as on the bus,
 * because dbus-next dispatches by property name.
 */
export class ManagerObject extends dbus.interface.Interface {
  constructor(private readonly deps: ManagerDependencies) {
    super(MANAGER_INTERFACE);
    nameArguments(this, {
      Register: ['uuid', 'addresses', 'zone', 'mark', 'vmstate_args'],
      Unregister: ['uuid'],
      PrepareIncoming: ['uuid', 'addresses', 'zone', 'mark', 'source', 'ready_when', 'session'],
      Cutover: ['uuid', 'session'],
      Finish: ['uuid', 'result'],
      Abort: ['uuid'],
      ListSessions: ['sessions'],
      GetSession: ['uuid', 'session'],
      Status: ['status_json'],
      VmstateArgs: ['uuid', 'vmstate_args'],
      SendContainerState: ['destination', 'container', 'manifest', 'snapshot'],
      TakeContainerState: ['container', 'manifest', 'snapshot'],
      SessionAdded: ['session'],
      SessionRemoved: ['session'],
      StateChanged: ['session', 'from', 'to'],
      Ready: ['session'],
      Failed: ['session', 'reason'],
      FailOpen: ['session', 'reason'],
    });
  }

  get Version(): string {
    return this.deps.version;
  }

  get Sessions(): string[] {
    return this.deps.sessions.paths();
  }

  Register(uuid: string, addresses: string[], zone: number, mark: string): Promise<string> {
    return asDbusCall(async () => (await this.deps.engine.register(vmSpecArguments(uuid, addresses, zone, mark))).vmstateArgs);
  }

  Unregister(uuid: string): Promise<void> {
    return asDbusCall(() => this.deps.engine.unregister(vmUuidArgument(uuid)));
  }

  PrepareIncoming(uuid: string, addresses: string[], zone: number, mark: string, source: string, readyWhen: string): Promise<string> {
    return asDbusCall(async () => {
      const vm = vmSpecArguments(uuid, addresses, zone, mark);
      return this.deps.sessions.pathOf(await this.deps.engine.prepareIncoming(vm, prepareArguments(source, readyWhen)));
    });
  }

  Cutover(uuid: string): Promise<string> {
    return asDbusCall(async () => this.deps.sessions.pathOf(await this.deps.engine.cutover(vmUuidArgument(uuid))));
  }

  Finish(uuid: string, result: string): Promise<void> {
    return asDbusCall(() => this.deps.engine.finish(vmUuidArgument(uuid), finishResultArgument(result)));
  }

  Abort(uuid: string): Promise<void> {
    return asDbusCall(() => this.deps.engine.abort(vmUuidArgument(uuid)));
  }

  ListSessions(): Promise<string[]> {
    return asDbusCall(() => this.deps.engine.sessions().map((s) => this.deps.sessions.pathOf(s)));
  }

  GetSession(uuid: string): Promise<string> {
    return asDbusCall(() => this.deps.sessions.pathOf(latestSession(this.deps.engine, vmUuidArgument(uuid))));
  }

  /** JSON of ManagerStatus: one string is what `ctmigratectl status --json` prints anyway. */
  Status(): Promise<string> {
    return asDbusCall(() => JSON.stringify(managerStatus(this.deps.engine, this.deps.version)));
  }

  VmstateArgs(uuid: string): Promise<string> {
    return asDbusCall(() => {
      const vm = vmUuidArgument(uuid);
      const registered = this.deps.engine.registered().find((r) => r.vm.uuid === vm);
      if (registered) return registered.vmstateArgs;
      if (this.deps.objectArgs) return this.deps.objectArgs(vm);
      throw new NoSessionError(`VM ${vm} is not registered on this host`);
    });
  }

  /** criu-action at CRIU's network-lock, the destination known: send the container's packed state there. */
  SendContainerState(destination: string, container: string, manifest: string, snapshot: Buffer): Promise<void> {
    return asDbusCall(() => this.deps.engine.sendContainerState(destination, { container: containerArgument(container), manifest, snapshot }));
  }

  /** criu-action at pre-restore, the image directory without ctmigrate's files: the state a peer sent. */
  TakeContainerState(container: string): Promise<[string, Buffer]> {
    return asDbusCall(async () => {
      const s = await this.deps.engine.takeContainerState(containerArgument(container));
      return [s.manifest, Buffer.from(s.snapshot)];
    });
  }

  // Signals: dbus-next wraps these (configureMembers) to send what they return.
  SessionAdded(session: string): string {
    return session;
  }
  SessionRemoved(session: string): string {
    return session;
  }
  StateChanged(session: string, from: string, to: string): string[] {
    return [session, from, to];
  }
  Ready(session: string): string {
    return session;
  }
  Failed(session: string, reason: string): string[] {
    return [session, reason];
  }
  FailOpen(session: string, reason: string): string[] {
    return [session, reason];
  }
}

ManagerObject.configureMembers({
  properties: {
    Version: { signature: 's', access: 'read' },
    Sessions: { signature: 'ao', access: 'read' },
  },
  methods: {
    Register: { inSignature: 'sasis', outSignature: 's' },
    Unregister: { inSignature: 's' },
    PrepareIncoming: { inSignature: 'sasisss', outSignature: 'o' },
    Cutover: { inSignature: 's', outSignature: 'o' },
    Finish: { inSignature: 'ss' },
    Abort: { inSignature: 's' },
    ListSessions: { outSignature: 'ao' },
    GetSession: { inSignature: 's', outSignature: 'o' },
    Status: { outSignature: 's' },
    VmstateArgs: { inSignature: 's', outSignature: 's' },
    SendContainerState: { inSignature: 'sssay' },
    TakeContainerState: { inSignature: 's', outSignature: 'say' },
  },
  signals: {
    SessionAdded: { signature: 'o' },
    SessionRemoved: { signature: 'o' },
    StateChanged: { signature: 'oss' },
    Ready: { signature: 'o' },
    Failed: { signature: 'os' },
    FailOpen: { signature: 'os' },
  },
});
