import { strict as assert } from 'node:assert';
import { hookAction, hookInvocation, printsXml, teardownSteps } from '../../../adapters/libvirt/hook-operation';
import { HookOutcome, LibvirtHook } from '../../../adapters/libvirt/libvirt-hook';
import { ManagerClientError } from '../../../plugin/ports/manager-client';

import { LIBVIRT_DOMAIN, PLAIN_DOMAIN, VM_UUID } from './domain-fixtures';
import { absent, FakeManager, fakeManager, LinesLog, session } from './fake-manager';

const REQUIRED = LIBVIRT_DOMAIN.replace('</ctmigrate:vm>', '  <ctmigrate:require/>\n    </ctmigrate:vm>');

async function call(m: FakeManager, argv: string[], xml: string, remainingMs = 5000): Promise<{ outcome: HookOutcome; log: LinesLog }> {
  const log = new LinesLog();
  const outcome = new HookOutcome();
  await new LibvirtHook(m.client, log, { remainingMs: () => remainingMs, reserveMs: 100 }).run(hookInvocation(argv), xml, outcome);
  return { outcome, log };
}

describe('libvirt hook: operation → action', () => {
  it('maps every libvirt operation', () => {
    const table: [string, string][] = [
      ['prepare begin -', 'register'], ['start begin -', 'register'], ['started begin -', 'register'], ['attach begin -', 'register'],
      ['migrate begin -', 'migrate-in'], ['restore begin -', 'none'], ['reconnect begin -', 'reconnect'],
      ['stopped end -', 'stopped'], ['release end -', 'release'], ['release end migrated', 'release'], ['shutdown end -', 'none'],
    ];
    for (const [args, action] of table) assert.equal(hookAction(hookInvocation(['g', ...args.split(' ')])), action, args);
    assert.ok(printsXml(hookInvocation(['g', 'migrate', 'begin', '-'])));
    assert.ok(printsXml(hookInvocation(['g', 'restore', 'begin', '-'])));
    assert.ok(!printsXml(hookInvocation(['g', 'start', 'begin', '-'])));
  });

  it('tears down by session role and state, not by libvirt\'s reason (9.0 passes "-" after success)', () => {
    const src = session({ role: 'source', state: 'streaming' });
    assert.deepEqual(teardownSteps('stopped', '-', src), ['cutover']);
    assert.deepEqual(teardownSteps('release', '-', { ...src, state: 'cutover' }), ['finish-migrated', 'unregister']);
    assert.deepEqual(teardownSteps('release', 'migrated', src), ['finish-migrated', 'unregister']);
    assert.deepEqual(teardownSteps('release', 'failed', src), ['finish-failed', 'unregister']);
    const dst = session({ role: 'destination', state: 'streaming', blocked: true });
    assert.deepEqual(teardownSteps('stopped', '-', dst), ['finish-failed', 'unregister']);
    assert.deepEqual(teardownSteps('release', '-', dst), ['finish-failed', 'unregister']);
    assert.deepEqual(teardownSteps('release', '-', { ...dst, state: 'ready' }), ['finish-migrated', 'unregister']);
    assert.deepEqual(teardownSteps('release', '-', { ...dst, state: 'failed' }), ['unregister']);
    assert.deepEqual(teardownSteps('stopped', '-', { ...src, state: 'migrated' }), ['unregister']);
    assert.deepEqual(teardownSteps('stopped', '-', undefined), ['unregister']);
  });
});

describe('libvirt hook against the daemon port', () => {
  it('registers the VM with addresses, zone and mark from the XML', async () => {
    const m = fakeManager();
    const { outcome } = await call(m, ['web1', 'start', 'begin', '-'], LIBVIRT_DOMAIN);
    assert.equal(outcome.exitCode, 0);
    const vm = m.register.firstCall.args[0];
    assert.equal(vm.uuid, VM_UUID);
    assert.equal(vm.addresses.length, 5);
    assert.equal(vm.zone, 7);
    assert.deepEqual(vm.mark, { value: 0x10, mask: 0xff });
  });

  it('migrate begin: registers, prepares the incoming session and returns the XML with this host\'s object', async () => {
    const m = fakeManager();
    m.prepareIncoming.resolves(session({ role: 'destination', state: 'precopy', blocked: true }));
    const { outcome } = await call(m, ['web1', 'migrate', 'begin', '-'], PLAIN_DOMAIN);
    assert.equal(outcome.exitCode, 0);
    assert.ok(m.register.calledBefore(m.prepareIncoming));
    assert.match(outcome.xml ?? '', /<qemu:arg value='dbus-vmstate,id=ctmigrate-x,addr=unix:path=\/run\/here\/bus.sock,id-list=ctmigrate'\/>/);
  });

  it('migrate begin without a source to be found still hands QEMU the helper (the VM migrates without state)', async () => {
    const m = fakeManager();
    m.prepareIncoming.rejects(new ManagerClientError('failed', 'none of the peers runs VM x'));
    const { outcome, log } = await call(m, ['web1', 'migrate', 'begin', '-'], PLAIN_DOMAIN);
    assert.equal(outcome.exitCode, 0);
    assert.ok(outcome.xml);
    assert.ok(log.lines.some((l) => /without its connection state/.test(l)));
  });

  it('migrate begin of a VM that requires its state fails when it cannot be prepared, and undoes the registration', async () => {
    const m = fakeManager();
    m.prepareIncoming.rejects(new ManagerClientError('failed', 'none of the peers runs VM x'));
    const { outcome, log } = await call(m, ['web1', 'migrate', 'begin', '-'], REQUIRED);
    assert.equal(outcome.exitCode, 1);
    assert.equal(outcome.xml, null);
    assert.ok(m.unregister.calledOnce);
    assert.ok(log.lines.some((l) => /requires its connection state.*migration refused/.test(l)));
  });

  it('a prepare slower than the deadline is aborted for a VM that requires its state', async () => {
    const m = fakeManager();
    m.prepareIncoming.returns(new Promise(() => undefined));
    const { outcome } = await call(m, ['web1', 'migrate', 'begin', '-'], REQUIRED, 300);
    assert.equal(outcome.exitCode, 1);
    assert.ok(m.abort.calledOnce);
  });

  it('without a daemon: nothing printed, exit 0 — exit 1 on migrate begin only for a VM that requires its state', async () => {
    for (const op of ['prepare begin -', 'start begin -', 'started begin -', 'stopped end -', 'release end -', 'reconnect begin -', 'migrate begin -']) {
      const m = fakeManager();
      m.register.rejects(absent());
      m.status.rejects(absent());
      const plain = await call(m, ['web1', ...op.split(' ')], LIBVIRT_DOMAIN);
      assert.deepEqual([plain.outcome.exitCode, plain.outcome.xml], [0, null], op);
      const req = await call(m, ['web1', ...op.split(' ')], REQUIRED);
      assert.deepEqual([req.outcome.exitCode, req.outcome.xml], [op === 'migrate begin -' ? 1 : 0, null], op);
    }
  });

  it('does nothing, with a warning, for a domain without addresses', async () => {
    const m = fakeManager();
    const bare = `<domain><uuid>${VM_UUID}</uuid></domain>`;
    const { outcome, log } = await call(m, ['g', 'migrate', 'begin', '-'], bare);
    assert.deepEqual([outcome.exitCode, outcome.xml], [0, null]);
    assert.ok(m.register.notCalled && m.prepareIncoming.notCalled);
    assert.ok(log.lines.some((l) => /names no addresses/.test(l)));
  });

  it('refuses hostile XML without calling the daemon; fails a migration only when the VM appears to require its state', async () => {
    const m = fakeManager();
    const bomb = `<!DOCTYPE d [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]>${PLAIN_DOMAIN.replace('<name>plain</name>', '<name>&b;</name>')}`;
    const r1 = await call(m, ['g', 'migrate', 'begin', '-'], bomb);
    assert.deepEqual([r1.outcome.exitCode, r1.outcome.xml], [0, null]);
    const r2 = await call(m, ['g', 'migrate', 'begin', '-'], `<!DOCTYPE d>${REQUIRED}`);
    assert.equal(r2.outcome.exitCode, 1);
    const r3 = await call(m, ['g', 'reconnect', 'begin', '-'], `<!DOCTYPE d>${REQUIRED}`);
    assert.equal(r3.outcome.exitCode, 0);
    assert.ok(m.register.notCalled && m.status.notCalled);
  });

  it('stopped then release on a source: cut over, then finish migrated and unregister', async () => {
    const m = fakeManager();
    m.cutover.resolves(session({ vm: VM_UUID, state: 'cutover' }));
    m.state.sessions = [session({ vm: VM_UUID, state: 'streaming' })];
    m.state.vms = [{ uuid: VM_UUID, addresses: ['192.0.2.10'], zone: null, mark: '', vmstateArgs: '' }];
    await call(m, ['web1', 'stopped', 'end', '-'], LIBVIRT_DOMAIN);
    assert.ok(m.cutover.calledOnceWith(VM_UUID));
    assert.ok(m.unregister.notCalled);
    m.state.sessions = [session({ vm: VM_UUID, state: 'cutover' })];
    await call(m, ['web1', 'release', 'end', '-'], LIBVIRT_DOMAIN);
    assert.ok(m.finish.calledOnceWith(VM_UUID, 'migrated'));
    assert.ok(m.unregister.calledOnceWith(VM_UUID));
  });

  it('release on a destination before ready rolls it back', async () => {
    const m = fakeManager();
    m.state.sessions = [session({ vm: VM_UUID, role: 'destination', state: 'streaming', blocked: true })];
    m.state.vms = [{ uuid: VM_UUID, addresses: ['192.0.2.10'], zone: null, mark: '', vmstateArgs: '' }];
    await call(m, ['web1', 'release', 'end', '-'], LIBVIRT_DOMAIN);
    assert.ok(m.finish.calledOnceWith(VM_UUID, 'failed'));
    assert.ok(m.unregister.calledOnce);
  });
});
