import * as sinon from 'sinon';
import { MigrationService, RegisteredVm, ServiceEvent, SessionInfo } from '../../../plugin/migration-service';

/** A MigrationService of sinon stubs whose events the test emits. */
export interface FakeEngine {
  engine: MigrationService;
  register: sinon.SinonStub<Parameters<MigrationService['register']>, ReturnType<MigrationService['register']>>;
  unregister: sinon.SinonStub<Parameters<MigrationService['unregister']>, ReturnType<MigrationService['unregister']>>;
  prepareIncoming: sinon.SinonStub<Parameters<MigrationService['prepareIncoming']>, ReturnType<MigrationService['prepareIncoming']>>;
  cutover: sinon.SinonStub<Parameters<MigrationService['cutover']>, ReturnType<MigrationService['cutover']>>;
  finish: sinon.SinonStub<Parameters<MigrationService['finish']>, ReturnType<MigrationService['finish']>>;
  abort: sinon.SinonStub<Parameters<MigrationService['abort']>, ReturnType<MigrationService['abort']>>;
  sendContainerState: sinon.SinonStub<Parameters<MigrationService['sendContainerState']>, ReturnType<MigrationService['sendContainerState']>>;
  takeContainerState: sinon.SinonStub<Parameters<MigrationService['takeContainerState']>, ReturnType<MigrationService['takeContainerState']>>;
  /** The engine's current sessions (what sessions() returns). */
  sessions: SessionInfo[];
  registered: RegisteredVm[];
  emit(event: ServiceEvent): void;
  listenerCount(): number;
}

export function fakeEngine(): FakeEngine {
  const listeners = new Set<(e: ServiceEvent) => void>();
  const fake: Omit<FakeEngine, 'engine'> = {
    register: sinon.stub(),
    unregister: sinon.stub<[string], Promise<void>>().resolves(),
    prepareIncoming: sinon.stub(),
    cutover: sinon.stub(),
    finish: sinon.stub<[string, 'migrated' | 'failed'], Promise<void>>().resolves(),
    abort: sinon.stub<[string], Promise<void>>().resolves(),
    sendContainerState: sinon.stub(),
    takeContainerState: sinon.stub(),
    sessions: [],
    registered: [],
    emit(event) {
      for (const l of [...listeners]) l(event);
    },
    listenerCount: () => listeners.size,
  };
  const engine: MigrationService = {
    register: fake.register,
    unregister: fake.unregister,
    prepareIncoming: fake.prepareIncoming,
    cutover: fake.cutover,
    finish: fake.finish,
    abort: fake.abort,
    sendContainerState: fake.sendContainerState,
    takeContainerState: fake.takeContainerState,
    sessions: () => fake.sessions,
    registered: () => fake.registered,
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
  };
  return Object.assign(fake, { engine });
}

export const VM = '0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0';

/** A destination session in precopy, with distinct numbers per field. */
export function sampleSession(over: Partial<SessionInfo> = {}): SessionInfo {
  return {
    id: `${VM}-dst`,
    role: 'destination',
    vm: VM,
    state: 'precopy',
    peer: '198.51.100.1:7471',
    sent: 0,
    received: 10,
    committed: 5,
    refused: 1,
    bytes: 1234,
    blocked: true,
    readyWhen: 'complete',
    version: 77,
    createdAt: 1_700_000_000_000,
    updatedAt: 1_700_000_000_500,
    cutoverAt: 0,
    readyAt: 0,
    error: '',
    path: '',
    route: '',
    resumedAt: 0,
    ...over,
  };
}
