import { strict as assert } from 'node:assert';
import { DbusService, DbusServiceError } from '../../../adapters/dbus/dbus-service';
import { sessionObjectPath } from '../../../adapters/dbus/names';
import { AF_INET } from '../../../plugin/flow';
import { ManagerStatus } from '../../../plugin/ports/manager-client';
import { NoSessionError, SessionBusyError } from '../../../plugin/service-errors';
import { vmSpec, VmSpecError } from '../../../plugin/vm';
import { PrivateBus, startPrivateBus } from '../../support/private-bus';
import { FakeEngine, fakeEngine, sampleSession, VM } from './fake-engine';
import { propertiesChanged, RawClient } from './raw-client';

const SESSION = 'org.ctmigrate1.Session';
const MANAGER = 'org.ctmigrate1.Manager';

describe('D-Bus service org.ctmigrate1 (private dbus-daemon)', function () {
  this.timeout(20000);
  let bus: PrivateBus;
  let fake: FakeEngine;
  let service: DbusService;
  let client: RawClient;

  before(async () => {
    bus = await startPrivateBus();
  });
  after(async () => {
    await bus?.stop();
  });
  beforeEach(async () => {
    fake = fakeEngine();
    service = new DbusService(fake.engine, {
      version: '9.8.7',
      busAddress: bus.address,
      propertiesIntervalMs: 100,
      objectArgs: (uuid) => `dbus-vmstate,id=x,addr=unix:path=/run/x/${uuid}/bus.sock,id-list=ctmigrate`,
    });
    await service.start();
    client = await RawClient.connect(bus.address);
  });
  afterEach(async () => {
    client?.close();
    await service?.stop();
  });

  it('maps Register onto engine.register with the parsed VM and returns its vmstate args', async () => {
    fake.register.resolves({ vm: vmSpec(VM, ['192.0.2.10']), vmstateArgs: 'dbus-vmstate,id=a,addr=b,id-list=ctmigrate' });
    const [args] = await client.manager('Register', 'sasis', [VM.toUpperCase(), ['192.0.2.10', '2001:db8::10'], 7, '0x10/0xf0']);
    assert.equal(args, 'dbus-vmstate,id=a,addr=b,id-list=ctmigrate');
    assert.equal(fake.register.callCount, 1);
    const vm = fake.register.firstCall.args[0];
    assert.equal(vm.uuid, VM);
    assert.deepEqual(vm.addresses.map((a) => a.family), [AF_INET, 10]);
    assert.equal(vm.zone, 7);
    assert.deepEqual(vm.mark, { value: 0x10, mask: 0xf0 });
  });

  it('passes zone -1 and mark "" as absent', async () => {
    fake.register.resolves({ vm: vmSpec(VM, ['192.0.2.10']), vmstateArgs: '' });
    await client.manager('Register', 'sasis', [VM, ['192.0.2.10'], -1, '']);
    const vm = fake.register.firstCall.args[0];
    assert.equal(vm.zone, undefined);
    assert.equal(vm.mark, undefined);
  });

  it('returns the session object of PrepareIncoming, whose properties mirror SessionInfo', async () => {
    const s = sampleSession();
    fake.prepareIncoming.callsFake(async () => {
      fake.sessions = [s];
      fake.emit({ kind: 'session-added', session: s });
      return s;
    });
    const [path] = await client.manager('PrepareIncoming', 'sasisss', [VM, ['192.0.2.10'], -1, '', '', '']);
    assert.equal(path, sessionObjectPath(s.id));
    assert.match(String(path), /^\/org\/ctmigrate1\/session\/[A-Za-z0-9_]+$/);
    assert.deepEqual(fake.prepareIncoming.firstCall.args[1], {});
    const props = await client.getAll(String(path), SESSION);
    assert.deepEqual(props, {
      Id: s.id, Role: 'destination', Vm: VM, State: 'precopy', Peer: '198.51.100.1:7471',
      Sent: 0n, Received: 10n, Committed: 5n, Refused: 1n, Bytes: 1234n, Blocked: true, ReadyWhen: 'complete',
      Version: 77n, CreatedAt: 1_700_000_000_000n, UpdatedAt: 1_700_000_000_500n, CutoverAt: 0n, ReadyAt: 0n, ResumedAt: 0n, Error: '', Path: '', Route: '',
    });
    const added = await client.waitFor((x) => x.member === 'SessionAdded');
    assert.deepEqual(added.body, [path]);
    const [sessions] = await client.manager('ListSessions');
    assert.deepEqual(sessions, [path]);
  });

  it('passes PrepareIncoming source and ready_when when given', async () => {
    fake.prepareIncoming.resolves(sampleSession());
    await client.manager('PrepareIncoming', 'sasisss', [VM, ['192.0.2.10'], 3, '', '198.51.100.1:7471', 'precopy']);
    assert.deepEqual(fake.prepareIncoming.firstCall.args[1], { source: '198.51.100.1:7471', readyWhen: 'precopy' });
    assert.equal(fake.prepareIncoming.firstCall.args[0].zone, 3);
  });

  it('maps Cutover, Finish, Abort and Unregister onto the engine', async () => {
    const s = sampleSession({ role: 'source', state: 'cutover', id: 'src-1' });
    fake.cutover.resolves(s);
    const [path] = await client.manager('Cutover', 's', [VM]);
    assert.equal(path, sessionObjectPath('src-1'));
    await client.manager('Finish', 'ss', [VM, 'migrated']);
    assert.deepEqual(fake.finish.firstCall.args, [VM, 'migrated']);
    await client.manager('Abort', 's', [VM]);
    assert.deepEqual(fake.abort.firstCall.args, [VM]);
    await client.manager('Unregister', 's', [VM]);
    assert.deepEqual(fake.unregister.firstCall.args, [VM]);
  });

  it("turns an engine exception into org.ctmigrate1.Error.Failed with the engine's one line", async () => {
    fake.cutover.rejects(new Error('peer 198.51.100.2 is gone; delta not shipped, source untouched\n    at stack'));
    const e = await client.managerError('Cutover', 's', [VM]);
    assert.equal(e.type, 'org.ctmigrate1.Error.Failed');
    assert.equal(e.text, 'peer 198.51.100.2 is gone; delta not shipped, source untouched');
  });

  it('maps the engine\'s typed refusals to their own error names, with the engine\'s words', async () => {
    fake.cutover.rejects(new NoSessionError(`VM ${VM} has no outgoing session on this host`));
    const none = await client.managerError('Cutover', 's', [VM]);
    assert.equal(none.type, 'org.ctmigrate1.Error.NoSuchSession');
    assert.equal(none.text, `VM ${VM} has no outgoing session on this host`);
    fake.unregister.rejects(new SessionBusyError(`VM ${VM} has a source session in state streaming; finish or abort it first`));
    const busy = await client.managerError('Unregister', 's', [VM]);
    assert.equal(busy.type, 'org.ctmigrate1.Error.Busy');
    assert.match(busy.text, /finish or abort it first$/);
    fake.register.rejects(new VmSpecError(`VM ${VM}: 198.51.100.1 is an address of this host, never a VM's own address`));
    const spec = await client.managerError('Register', 'sasis', [VM, ['198.51.100.1'], -1, '']);
    assert.equal(spec.type, 'org.ctmigrate1.Error.InvalidArgs');
  });

  it('refuses bad arguments with org.ctmigrate1.Error.InvalidArgs before reaching the engine', async () => {
    const badUuid = await client.managerError('Register', 'sasis', ['not-a-uuid', ['192.0.2.1'], -1, '']);
    assert.equal(badUuid.type, 'org.ctmigrate1.Error.InvalidArgs');
    assert.match(badUuid.text, /not a VM UUID/);
    const badAddress = await client.managerError('Register', 'sasis', [VM, ['192.0.2.300'], -1, '']);
    assert.equal(badAddress.type, 'org.ctmigrate1.Error.InvalidArgs');
    const badZone = await client.managerError('PrepareIncoming', 'sasisss', [VM, ['192.0.2.1'], 70000, '', '', '']);
    assert.equal(badZone.type, 'org.ctmigrate1.Error.InvalidArgs');
    const badMark = await client.managerError('Register', 'sasis', [VM, ['192.0.2.1'], -1, '0x1/0x2/3']);
    assert.equal(badMark.type, 'org.ctmigrate1.Error.InvalidArgs');
    const badResult = await client.managerError('Finish', 'ss', [VM, 'maybe']);
    assert.equal(badResult.type, 'org.ctmigrate1.Error.InvalidArgs');
    assert.equal(fake.register.callCount + fake.prepareIncoming.callCount + fake.finish.callCount, 0);
  });

  it('answers GetSession with the VM’s latest session, and NoSuchSession without one', async () => {
    const e = await client.managerError('GetSession', 's', [VM]);
    assert.equal(e.type, 'org.ctmigrate1.Error.NoSuchSession');
    fake.sessions = [sampleSession({ id: 'old', createdAt: 1 }), sampleSession({ id: 'new', createdAt: 2 })];
    const [path] = await client.manager('GetSession', 's', [VM]);
    assert.equal(path, sessionObjectPath('new'));
  });

  it('returns the whole picture from Status as JSON', async () => {
    fake.sessions = [sampleSession()];
    fake.registered = [{ vm: vmSpec(VM, ['192.0.2.10', '2001:db8::a'], 4, { value: 1, mask: 0xff }), vmstateArgs: 'dbus-vmstate,id=q' }];
    const [json] = await client.manager('Status');
    const status = JSON.parse(String(json)) as ManagerStatus;
    assert.equal(status.version, '9.8.7');
    assert.deepEqual(status.sessions, [sampleSession()]);
    assert.deepEqual(status.vms, [{ uuid: VM, addresses: ['192.0.2.10', '2001:db8::a'], zone: 4, mark: '0x1/0xff', vmstateArgs: 'dbus-vmstate,id=q' }]);
  });

  it('answers VmstateArgs from the registration, else from the helper configuration', async () => {
    fake.registered = [{ vm: vmSpec(VM, ['192.0.2.10']), vmstateArgs: 'registered-args' }];
    assert.deepEqual(await client.manager('VmstateArgs', 's', [VM]), ['registered-args']);
    const other = '11111111-2222-3333-4444-555555555555';
    assert.deepEqual(await client.manager('VmstateArgs', 's', [other]), [`dbus-vmstate,id=x,addr=unix:path=/run/x/${other}/bus.sock,id-list=ctmigrate`]);
  });

  it('exposes Version and Sessions on the Manager, and Sessions changes are announced', async () => {
    const props = await client.getAll('/org/ctmigrate1', MANAGER);
    assert.deepEqual(props, { Version: '9.8.7', Sessions: [] });
    const s = sampleSession();
    fake.emit({ kind: 'session-added', session: s });
    await client.waitFor((x) => x.member === 'PropertiesChanged' && x.path === '/org/ctmigrate1');
    assert.deepEqual(propertiesChanged(client.signals, '/org/ctmigrate1', MANAGER), [{ Sessions: [sessionObjectPath(s.id)] }]);
  });

  it('emits PropertiesChanged with exactly the changed properties', async () => {
    const s = sampleSession();
    fake.emit({ kind: 'session-added', session: s });
    const path = sessionObjectPath(s.id);
    await client.settle(150);
    fake.emit({ kind: 'session-changed', session: { ...s, received: 20, bytes: 2000 } });
    await client.waitFor((x) => x.member === 'PropertiesChanged' && x.path === path);
    assert.deepEqual(propertiesChanged(client.signals, path, SESSION), [{ Received: 20n, Bytes: 2000n }]);
  });

  it('rate-limits a burst of changes and always delivers the final values', async () => {
    const s = sampleSession();
    fake.emit({ kind: 'session-added', session: s });
    const path = sessionObjectPath(s.id);
    const started = Date.now();
    let last = s;
    // 20k changes over ~300 ms: without a limit, 20k signals.
    while (Date.now() - started < 300) {
      for (let i = 0; i < 1000; i++) {
        last = { ...last, received: last.received + 1, committed: last.committed + 1 };
        fake.emit({ kind: 'session-changed', session: last });
      }
      await new Promise((r) => setImmediate(r));
    }
    await client.settle(300);
    const changes = propertiesChanged(client.signals, path, SESSION);
    const elapsed = Date.now() - started;
    assert.ok(changes.length >= 2, `expected progress updates, got ${changes.length}`);
    assert.ok(changes.length <= Math.ceil(elapsed / 100) + 1, `${changes.length} PropertiesChanged in ${elapsed} ms (limit 10/s)`);
    assert.equal(changes.at(-1)?.Received, BigInt(last.received));
    assert.equal(changes.at(-1)?.Committed, BigInt(last.committed));
    const now = await client.getAll(path, SESSION);
    assert.equal(now.Received, BigInt(last.received));
  });

  it('flushes pending progress before StateChanged, and signals Ready, Failed and FailOpen', async () => {
    const s = sampleSession();
    fake.emit({ kind: 'session-added', session: s });
    const path = sessionObjectPath(s.id);
    await client.settle(150);
    fake.emit({ kind: 'session-changed', session: { ...s, received: 11 } });
    fake.emit({ kind: 'session-changed', session: { ...s, received: 12 } });
    const streaming = { ...s, received: 12, state: 'streaming' as const };
    fake.emit({ kind: 'state-changed', session: streaming, from: 'precopy' });
    const ready = { ...streaming, state: 'ready' as const, blocked: false, readyAt: 1_700_000_001_000 };
    fake.emit({ kind: 'ready', session: ready });
    fake.emit({ kind: 'fail-open', session: ready, reason: 'block timeout 30 s passed; traffic let through with 90% of entries' });
    fake.emit({ kind: 'failed', session: { ...ready, state: 'failed', error: 'peer gone' }, reason: 'peer gone' });
    const stateChanged = await client.waitFor((x) => x.member === 'StateChanged');
    assert.deepEqual(stateChanged.body, [path, 'precopy', 'streaming']);
    await client.waitFor((x) => x.member === 'Failed');
    const mine = client.signals.filter((x) => x.path === path || x.interface === MANAGER).map((x) => x.member);
    assert.ok(mine.indexOf('PropertiesChanged') < mine.indexOf('StateChanged'), `order: ${mine.join(',')}`);
    assert.deepEqual((await client.waitFor((x) => x.member === 'Ready')).body, [path]);
    assert.deepEqual((await client.waitFor((x) => x.member === 'FailOpen')).body, [path, 'block timeout 30 s passed; traffic let through with 90% of entries']);
    assert.deepEqual((await client.waitFor((x) => x.member === 'Failed')).body, [path, 'peer gone']);
    const changes = propertiesChanged(client.signals, path, SESSION);
    // 11 leaves at once (the interval had passed), 12 was held back and goes out with the state.
    assert.deepEqual(changes, [
      { Received: 11n },
      { Received: 12n, State: 'streaming' },
      { State: 'ready', Blocked: false, ReadyAt: 1_700_000_001_000n },
      { State: 'failed', Error: 'peer gone' },
    ]);
  });

  it('removes the session object with SessionRemoved after its final values', async () => {
    const s = sampleSession();
    fake.emit({ kind: 'session-added', session: s });
    const path = sessionObjectPath(s.id);
    await client.settle(150);
    fake.emit({ kind: 'session-removed', session: { ...s, state: 'ready', blocked: false } });
    assert.deepEqual((await client.waitFor((x) => x.member === 'SessionRemoved')).body, [path]);
    assert.deepEqual(propertiesChanged(client.signals, path, SESSION), [{ State: 'ready', Blocked: false }]);
    await assert.rejects(client.getAll(path, SESSION), /not exported|No such interface|Path/);
    assert.deepEqual(await client.manager('ListSessions'), [[]]);
  });

  it('calls engine.abort for the session’s VM on Session.Abort', async () => {
    const s = sampleSession();
    fake.emit({ kind: 'session-added', session: s });
    await client.call('org.ctmigrate1', sessionObjectPath(s.id), SESSION, 'Abort');
    assert.deepEqual(fake.abort.firstCall.args, [VM]);
  });

  it('is introspectable, with interfaces, members and argument names', async () => {
    const [xml] = await client.call('org.ctmigrate1', '/org/ctmigrate1', 'org.freedesktop.DBus.Introspectable', 'Introspect');
    const text = String(xml);
    for (const needle of ['interface name="org.ctmigrate1.Manager"', 'method name="PrepareIncoming"', 'name="ready_when"', 'signal name="StateChanged"', 'property name="Version" type="s" access="read"']) {
      assert.ok(text.includes(needle), `missing ${needle} in\n${text}`);
    }
  });

  it('refuses to start when another ctmigrated owns org.ctmigrate1', async () => {
    const second = new DbusService(fakeEngine().engine, { version: '0', busAddress: bus.address });
    await assert.rejects(second.start(), (e: unknown) => e instanceof DbusServiceError && /another ctmigrated owns org\.ctmigrate1/.test(e.message));
  });

  it('says which bus it could not reach', async () => {
    const lost = new DbusService(fakeEngine().engine, { version: '0', busAddress: 'unix:path=/nonexistent/ctmigrate/bus.sock' });
    await assert.rejects(lost.start(), /cannot connect to the D-Bus bus at unix:path=\/nonexistent\/ctmigrate\/bus\.sock/);
  });

  it('stops listening to the engine when stopped', async () => {
    assert.equal(fake.listenerCount(), 1);
    await service.stop();
    assert.equal(fake.listenerCount(), 0);
  });
});
