import { strict as assert } from 'node:assert';
import { execFile } from 'node:child_process';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { DbusService } from '../../adapters/dbus/dbus-service';
import { sessionObjectPath } from '../../adapters/dbus/names';
import { vmSpec } from '../../plugin/vm';
import { PrivateBus, startPrivateBus } from '../support/private-bus';
import { FakeEngine, fakeEngine, sampleSession, VM } from '../unit/dbus/fake-engine';
import { RawClient } from '../unit/dbus/raw-client';

const run = promisify(execFile);
const REPO = resolve(__dirname, '../../..');
const POLICY = join(REPO, 'packaging/dbus/org.ctmigrate1.conf');
const AS_NOBODY = ['--reuid=nobody', '--regid=nogroup', '--clear-groups'];

interface Outcome {
  ok: boolean;
  stdout: string;
  stderr: string;
}

async function outcome(file: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<Outcome> {
  try {
    const r = await run(file, args, { env, timeout: 15000 });
    return { ok: true, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const x = e as { stdout?: string; stderr?: string };
    return { ok: false, stdout: x.stdout ?? '', stderr: x.stderr ?? '' };
  }
}

describe('org.ctmigrate1 on a system-like bus with the real policy file', function () {
  this.timeout(60000);
  let bus: PrivateBus;
  let fake: FakeEngine;
  let service: DbusService;
  const session = sampleSession();

  const busctl = (asNobody: boolean, ...args: string[]): Promise<Outcome> =>
    asNobody ? outcome('setpriv', [...AS_NOBODY, 'busctl', `--address=${bus.address}`, ...args]) : outcome('busctl', [`--address=${bus.address}`, ...args]);

  before(async () => {
    bus = await startPrivateBus({ policy: 'system', include: [POLICY] });
    fake = fakeEngine();
    fake.sessions = [session];
    fake.registered = [{ vm: vmSpec(VM, ['192.0.2.10']), vmstateArgs: 'dbus-vmstate,id=ctmigrate-0f1e2d3c,addr=unix:path=/run/ctmigrate/vm/x/bus.sock,id-list=ctmigrate' }];
    fake.register.resolves(fake.registered[0]);
    service = new DbusService(fake.engine, { version: '0.1.0', busAddress: bus.address });
    await service.start();
  });
  after(async () => {
    await service?.stop();
    await bus?.stop();
  });

  it('lets root own the name and call a changing method', async () => {
    const root = await RawClient.connect(bus.address);
    try {
      assert.deepEqual(await root.manager('Register', 'sasis', [VM, ['192.0.2.10'], -1, '']), [fake.registered[0].vmstateArgs]);
    } finally {
      root.close();
    }
    const viaBusctl = await busctl(false, 'call', 'org.ctmigrate1', '/org/ctmigrate1', 'org.ctmigrate1.Manager', 'Abort', 's', VM);
    assert.ok(viaBusctl.ok, viaBusctl.stderr);
  });

  it('refuses every changing call from nobody with AccessDenied, before the engine sees it', async () => {
    const before = fake.register.callCount + fake.abort.callCount + fake.finish.callCount + fake.unregister.callCount;
    const calls: string[][] = [
      ['/org/ctmigrate1', 'org.ctmigrate1.Manager', 'Register', 'sasis', VM, '1', '192.0.2.10', '7', ''],
      ['/org/ctmigrate1', 'org.ctmigrate1.Manager', 'Unregister', 's', VM],
      ['/org/ctmigrate1', 'org.ctmigrate1.Manager', 'PrepareIncoming', 'sasisss', VM, '1', '192.0.2.10', '7', '', '', ''],
      ['/org/ctmigrate1', 'org.ctmigrate1.Manager', 'Cutover', 's', VM],
      ['/org/ctmigrate1', 'org.ctmigrate1.Manager', 'Finish', 'ss', VM, 'migrated'],
      ['/org/ctmigrate1', 'org.ctmigrate1.Manager', 'Abort', 's', VM],
      [sessionObjectPath(session.id), 'org.ctmigrate1.Session', 'Abort'],
      ['/org/ctmigrate1', 'org.freedesktop.DBus.Properties', 'Set', 'ssv', 'org.ctmigrate1.Manager', 'Version', 's', 'x'],
    ];
    for (const c of calls) {
      const r = await busctl(true, 'call', 'org.ctmigrate1', ...c);
      assert.equal(r.ok, false, `${c[2]} was allowed for nobody`);
      assert.match(r.stderr, /access denied/i, `${c[2]}: ${r.stderr}`);
    }
    assert.equal(fake.register.callCount + fake.abort.callCount + fake.finish.callCount + fake.unregister.callCount, before);
  });

  it('lets nobody read: properties, introspection and the reading methods', async () => {
    const version = await busctl(true, 'get-property', 'org.ctmigrate1', '/org/ctmigrate1', 'org.ctmigrate1.Manager', 'Version');
    assert.ok(version.ok, version.stderr);
    assert.equal(version.stdout.trim(), 's "0.1.0"');
    const state = await busctl(true, 'get-property', 'org.ctmigrate1', sessionObjectPath(session.id), 'org.ctmigrate1.Session', 'State');
    assert.equal(state.stdout.trim(), 's "precopy"', state.stderr);
    const received = await busctl(true, 'get-property', 'org.ctmigrate1', sessionObjectPath(session.id), 'org.ctmigrate1.Session', 'Received');
    assert.equal(received.stdout.trim(), 't 10', received.stderr);
    const list = await busctl(true, 'call', 'org.ctmigrate1', '/org/ctmigrate1', 'org.ctmigrate1.Manager', 'ListSessions');
    assert.equal(list.stdout.trim(), `ao 1 "${sessionObjectPath(session.id)}"`, list.stderr);
    const status = await busctl(true, '--json=short', 'call', 'org.ctmigrate1', '/org/ctmigrate1', 'org.ctmigrate1.Manager', 'Status');
    assert.ok(status.ok, status.stderr);
    const json = JSON.parse((JSON.parse(status.stdout) as { data: string[] }).data[0]) as { sessions: unknown[] };
    assert.equal(json.sessions.length, 1);
    const args = await busctl(true, 'call', 'org.ctmigrate1', '/org/ctmigrate1', 'org.ctmigrate1.Manager', 'VmstateArgs', 's', VM);
    assert.match(args.stdout, /^s "dbus-vmstate,id=ctmigrate-0f1e2d3c,/, args.stderr);
    const getSession = await busctl(true, 'call', 'org.ctmigrate1', '/org/ctmigrate1', 'org.ctmigrate1.Manager', 'GetSession', 's', VM);
    assert.equal(getSession.stdout.trim(), `o "${sessionObjectPath(session.id)}"`, getSession.stderr);
  });

  it('shows the interfaces to busctl introspect, also as nobody', async () => {
    const manager = await busctl(true, 'introspect', 'org.ctmigrate1', '/org/ctmigrate1');
    assert.ok(manager.ok, manager.stderr);
    for (const needle of [/org\.ctmigrate1\.Manager\s+interface/, /\.PrepareIncoming\s+method\s+sasisss\s+o/, /\.StateChanged\s+signal\s+oss/, /\.Sessions\s+property\s+ao/, /org\.freedesktop\.DBus\.Properties\s+interface/]) {
      assert.match(manager.stdout, needle);
    }
    const s = await busctl(true, 'introspect', 'org.ctmigrate1', sessionObjectPath(session.id));
    assert.match(s.stdout, /org\.ctmigrate1\.Session\s+interface/);
    assert.match(s.stdout, /\.Blocked\s+property\s+b\s+true\s+emits-change/);
    const tree = await busctl(true, 'tree', 'org.ctmigrate1');
    assert.ok(tree.stdout.includes(sessionObjectPath(session.id)), tree.stdout + tree.stderr);
  });

  it('works with gdbus on the system bus named by DBUS_SYSTEM_BUS_ADDRESS', async () => {
    const env = { ...process.env, DBUS_SYSTEM_BUS_ADDRESS: bus.address };
    const introspect = await outcome('gdbus', ['introspect', '--system', '--dest', 'org.ctmigrate1', '--object-path', '/org/ctmigrate1'], env);
    assert.ok(introspect.ok, introspect.stderr);
    assert.match(introspect.stdout, /interface org\.ctmigrate1\.Manager/);
    assert.match(introspect.stdout, /PrepareIncoming\(in\s+s uuid,/);
    const call = await outcome('gdbus', ['call', '--system', '--dest', 'org.ctmigrate1', '--object-path', '/org/ctmigrate1', '--method', 'org.ctmigrate1.Manager.GetSession', VM], env);
    assert.ok(call.ok, call.stderr);
    assert.equal(call.stdout.trim(), `(objectpath '${sessionObjectPath(session.id)}',)`);
    const denied = await outcome('setpriv', [...AS_NOBODY, 'gdbus', 'call', '--system', '--dest', 'org.ctmigrate1', '--object-path', '/org/ctmigrate1', '--method', 'org.ctmigrate1.Manager.Abort', VM], env);
    assert.equal(denied.ok, false);
    assert.match(denied.stderr, /AccessDenied/);
  });

  it('tells a non-root ctmigratectl "access denied", and a non-root daemon that it may not own the name', async () => {
    const script = `
      const { DbusManagerClient } = require(${JSON.stringify(join(REPO, 'dist/adapters/dbus/dbus-manager-client.js'))});
      const { DbusService } = require(${JSON.stringify(join(REPO, 'dist/adapters/dbus/dbus-service.js'))});
      const { vmSpec } = require(${JSON.stringify(join(REPO, 'dist/plugin/vm.js'))});
      (async () => {
        const client = new DbusManagerClient();
        const out = {};
        try { await client.abort(${JSON.stringify(VM)}); out.abort = 'allowed'; } catch (e) { out.abort = e.kind + ': ' + e.message; }
        try { await client.register(vmSpec(${JSON.stringify(VM)}, ['192.0.2.10'])); out.register = 'allowed'; } catch (e) { out.register = e.kind + ': ' + e.message; }
        out.sessions = (await client.sessions()).length;
        await client.close();
        const engine = { sessions: () => [], registered: () => [], subscribe: () => () => {} };
        try { await new DbusService(engine, { version: '0' }).start(); out.own = 'allowed'; } catch (e) { out.own = e.message; }
        console.log(JSON.stringify(out));
      })();`;
    const r = await outcome('setpriv', [...AS_NOBODY, process.execPath, '-e', script], { ...process.env, DBUS_SYSTEM_BUS_ADDRESS: bus.address });
    assert.ok(r.ok, r.stderr);
    const out = JSON.parse(r.stdout) as Record<string, string | number>;
    assert.equal(out.abort, 'access-denied: access denied: the D-Bus policy lets only root call org.ctmigrate1.Manager.Abort (run as root)');
    assert.match(String(out.register), /^access-denied: access denied/);
    assert.equal(out.sessions, 1);
    assert.match(String(out.own), /does not let uid 65534 own org\.ctmigrate1/);
  });
});
