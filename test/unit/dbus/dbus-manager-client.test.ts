import { strict as assert } from 'node:assert';
import { DbusManagerClient } from '../../../adapters/dbus/dbus-manager-client';
import { DbusService } from '../../../adapters/dbus/dbus-service';
import { ServiceEvent } from '../../../plugin/migration-service';
import { ManagerClientError } from '../../../plugin/ports/manager-client';
import { vmSpec } from '../../../plugin/vm';
import { PrivateBus, startPrivateBus } from '../../support/private-bus';
import { FakeEngine, fakeEngine, sampleSession, VM } from './fake-engine';

describe('ManagerClient over D-Bus (private dbus-daemon)', function () {
  this.timeout(20000);
  let bus: PrivateBus;
  let fake: FakeEngine;
  let service: DbusService;
  let client: DbusManagerClient;

  before(async () => {
    bus = await startPrivateBus();
  });
  after(async () => {
    await bus?.stop();
  });
  beforeEach(async () => {
    fake = fakeEngine();
    service = new DbusService(fake.engine, { version: '1.2.3', busAddress: bus.address, propertiesIntervalMs: 50 });
    await service.start();
    client = new DbusManagerClient({ busAddress: bus.address, callTimeoutMs: 5000 });
  });
  afterEach(async () => {
    await client?.close();
    await service?.stop();
  });

  it('registers a VM and returns its vmstate args', async () => {
    fake.register.resolves({ vm: vmSpec(VM, ['192.0.2.10']), vmstateArgs: 'args' });
    assert.equal(await client.register(vmSpec(VM, ['192.0.2.10', '2001:db8::1'], 5, { value: 2, mask: 3 })), 'args');
    const vm = fake.register.firstCall.args[0];
    assert.equal(vm.zone, 5);
    assert.deepEqual(vm.mark, { value: 2, mask: 3 });
    assert.equal(vm.addresses.length, 2);
  });

  it('returns SessionInfo from prepareIncoming, cutover and session', async () => {
    const s = sampleSession();
    fake.prepareIncoming.resolves(s);
    fake.cutover.resolves(s);
    fake.sessions = [s];
    assert.deepEqual(await client.prepareIncoming(vmSpec(VM, ['192.0.2.10']), { readyWhen: 'precopy' }), s);
    assert.deepEqual(fake.prepareIncoming.firstCall.args[1], { readyWhen: 'precopy' });
    assert.deepEqual(await client.cutover(VM), s);
    assert.deepEqual(await client.session(VM), s);
    assert.deepEqual(await client.sessions(), [s]);
  });

  it('reads status and vmstate args', async () => {
    fake.registered = [{ vm: vmSpec(VM, ['192.0.2.10']), vmstateArgs: 'a,b' }];
    const status = await client.status();
    assert.equal(status.version, '1.2.3');
    assert.deepEqual(status.vms, [{ uuid: VM, addresses: ['192.0.2.10'], zone: null, mark: '', vmstateArgs: 'a,b' }]);
    assert.equal(await client.vmstateArgs(VM), 'a,b');
  });

  it('reports engine failures and bad arguments by kind, with the daemon’s message', async () => {
    fake.finish.rejects(new Error('no session for VM; nothing changed'));
    await assert.rejects(client.finish(VM, 'migrated'), (e: unknown) => e instanceof ManagerClientError && e.kind === 'failed' && e.message === 'no session for VM; nothing changed');
    await assert.rejects(client.abort('nope'), (e: unknown) => e instanceof ManagerClientError && e.kind === 'invalid-args' && /not a VM UUID/.test(e.message));
  });

  it('says ctmigrated is not running when nobody owns the name', async () => {
    await service.stop();
    await assert.rejects(
      client.sessions(),
      (e: unknown) => e instanceof ManagerClientError && e.kind === 'unavailable' && e.message === `ctmigrated is not running (no owner of org.ctmigrate1 on the system bus at ${bus.address})`,
    );
  });

  it('says which bus it cannot reach', async () => {
    const lost = new DbusManagerClient({ busAddress: 'unix:path=/nonexistent/ctmigrate.sock' });
    await assert.rejects(lost.status(), (e: unknown) => e instanceof ManagerClientError && e.kind === 'unavailable' && /unix:path=\/nonexistent\/ctmigrate\.sock/.test(e.message));
    await lost.close();
  });

  it('watches sessions: added, progress, state, ready and removed, each with the latest properties', async () => {
    const events: ServiceEvent[] = [];
    const stop = await client.watch((e) => events.push(e));
    const s = sampleSession();
    fake.sessions = [s];
    fake.emit({ kind: 'session-added', session: s });
    await until(() => events.length >= 1);
    fake.emit({ kind: 'session-changed', session: { ...s, received: 99 } });
    await until(() => events.some((e) => e.kind === 'session-changed' && e.session.received === 99));
    const streaming = { ...s, received: 99, state: 'streaming' as const };
    fake.emit({ kind: 'state-changed', session: streaming, from: 'precopy' });
    const ready = { ...streaming, state: 'ready' as const, blocked: false };
    fake.emit({ kind: 'ready', session: ready });
    fake.emit({ kind: 'session-removed', session: ready });
    await until(() => events.some((e) => e.kind === 'session-removed'));
    await stop();
    const kinds = events.map((e) => e.kind);
    assert.deepEqual(kinds.filter((k) => k !== 'session-changed'), ['session-added', 'state-changed', 'ready', 'session-removed']);
    const stateChanged = events.find((e) => e.kind === 'state-changed');
    assert.ok(stateChanged && stateChanged.kind === 'state-changed');
    assert.equal(stateChanged.from, 'precopy');
    assert.equal(stateChanged.session.state, 'streaming');
    assert.equal(stateChanged.session.received, 99);
    const last = events.at(-1);
    assert.equal(last?.session.blocked, false);
    assert.equal(last?.session.state, 'ready');
  });
});

async function until(cond: () => boolean, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}
