import sinon from 'sinon';
import { Log } from '../../../plugin/ports/log-port';
import { SessionInfo } from '../../../plugin/migration-service';
import { ManagerClient, ManagerClientError, ManagerStatus } from '../../../plugin/ports/manager-client';

export type FakeManager = { [K in keyof ManagerClient]: sinon.SinonStub } & { client: ManagerClient; state: ManagerStatus };

/** A ManagerClient of sinon stubs; status() answers from `state`. */
export function fakeManager(): FakeManager {
  const state: ManagerStatus = { version: 'test', sessions: [], vms: [] };
  const f = {
    register: sinon.stub().resolves('dbus-vmstate,id=ctmigrate-x,addr=unix:path=/run/here/bus.sock,id-list=ctmigrate'),
    unregister: sinon.stub().resolves(),
    prepareIncoming: sinon.stub(),
    cutover: sinon.stub(),
    finish: sinon.stub().resolves(),
    abort: sinon.stub().resolves(),
    sessions: sinon.stub(),
    session: sinon.stub(),
    status: sinon.stub().callsFake(async () => state),
    vmstateArgs: sinon.stub(),
    sendContainerState: sinon.stub().resolves(),
    takeContainerState: sinon.stub().rejects(new ManagerClientError('failed', 'no peer sent the state of that container (test)')),
    watch: sinon.stub(),
    close: sinon.stub().resolves(),
    state,
  };
  return { ...f, client: f as unknown as ManagerClient };
}

export const absent = (): ManagerClientError => new ManagerClientError('unavailable', 'ctmigrated is not running (test)');

export function session(patch: Partial<SessionInfo>): SessionInfo {
  return {
    id: 's1', role: 'source', vm: '', state: 'streaming', peer: '198.51.100.2:7471', sent: 0, received: 0, committed: 0, refused: 0, bytes: 0,
    blocked: false, readyWhen: '', version: 0, createdAt: 1, updatedAt: 1, cutoverAt: 0, readyAt: 0, error: '', path: '', route: '', resumedAt: 0, ...patch,
  };
}

/** A silent log keeping "level message" lines for assertions. */
export class LinesLog implements Log {
  readonly lines: string[] = [];
  info(message: string): void {
    this.lines.push(`info ${message}`);
  }
  warn(message: string): void {
    this.lines.push(`warn ${message}`);
  }
  error(message: string): void {
    this.lines.push(`error ${message}`);
  }
}
