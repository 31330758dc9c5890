import 'reflect-metadata';
import assert from 'node:assert/strict';
import { FakeClock } from './fakes/fake-clock';
import { FakeJournal } from './fakes/fake-journal';
import { FakeNetwork } from './fakes/fake-peer-network';
import { CHANGE_INTERVAL_MS, foreignFlows, Host, put, sessionOf, startHost, tcp, vm, VM_UUID, VM_V4, vmFlows, vmOnly } from './lab';

describe('migration engine: the session journal and recovery after a crash', () => {
  let clock: FakeClock;
  let net: FakeNetwork;
  let a: Host;
  let b: Host;

  beforeEach(async () => {
    clock = new FakeClock();
    net = new FakeNetwork(clock);
    a = await startHost(net, clock, 'A', '192.0.2.10');
    b = await startHost(net, clock, 'B', '192.0.2.20');
    put(a, vmFlows());
    put(a, foreignFlows());
    await a.engine.register(vm);
  });

  afterEach(async () => {
    await a.engine.stop();
    await b.engine.stop();
  });

  it('writes the incoming session down before the drop goes in, and forgets it after a rollback', async () => {
    const order: string[] = [];
    const block = b.blocker.block.bind(b.blocker);
    b.blocker.block = async (id, addresses) => {
      order.push(`block (journal holds ${[...b.journal.records.values()].map((r) => r.phase).join(',') || 'nothing'})`);
      return block(id, addresses);
    };
    await b.engine.prepareIncoming(vm, { source: a.peerText });
    assert.deepEqual(order, ['block (journal holds importing)']);
    const r = b.journal.records.get(VM_UUID);
    assert.equal(r?.session, sessionOf(b).id);
    assert.deepEqual(r?.vm, vm);
    await clock.run(CHANGE_INTERVAL_MS);
    await b.engine.abort(VM_UUID);
    assert.equal(b.journal.records.size, 0, 'nothing to undo after a clean rollback');
  });

  it('marks the session ready once the final delta is in, and forgets it when finished as migrated', async () => {
    await b.engine.prepareIncoming(vm, { source: a.peerText });
    await clock.run(CHANGE_INTERVAL_MS);
    await a.engine.cutover(VM_UUID);
    await clock.run(0);
    assert.equal(sessionOf(b).state, 'ready');
    assert.equal(b.journal.records.get(VM_UUID)?.phase, 'ready');
    await b.engine.finish(VM_UUID, 'migrated');
    assert.equal(b.journal.records.size, 0);
  });

  /** B dies mid-import (its engine is simply dropped); a new engine starts on the same kernel, drops and journal. */
  async function crashMidImport(): Promise<{ journal: FakeJournal; imported: number }> {
    await b.engine.prepareIncoming(vm, { source: a.peerText });
    await clock.run(CHANGE_INTERVAL_MS);
    const imported = b.kernel.texts(vmOnly).length;
    assert.ok(imported > 0, 'something was imported');
    assert.ok(b.blocker.isBlocked(VM_UUID));
    return { journal: b.journal, imported };
  }

  it('a start after a crash lifts the drop and removes what the dead session imported, and nothing else', async () => {
    b.kernel.put(tcp('198.51.100.9', 40100, '192.0.2.88', 22));
    const own = b.kernel.texts().filter((t) => !t.includes(VM_V4));
    const { journal } = await crashMidImport();
    const restarted = await restartB(journal);
    const report = await restarted.engine.recover();
    assert.deepEqual(report.lifted, [VM_UUID]);
    assert.ok(report.removed > 0);
    assert.ok(!restarted.blocker.isBlocked(VM_UUID), 'no drop left');
    assert.deepEqual(restarted.kernel.texts(vmOnly), [], 'no half-imported entry left');
    assert.deepEqual(restarted.kernel.texts().filter((t) => !t.includes(VM_V4)), own, "the host's own entries untouched");
    assert.equal(journal.records.size, 0);
    assert.ok(restarted.log.lines.some((l) => /recovered: removed the entries/.test(l.message)));
  });

  it('keeps the entries when the VM runs on this host now, and lifts the drop anyway', async () => {
    const { journal, imported } = await crashMidImport();
    const restarted = await restartB(journal, true);
    const report = await restarted.engine.recover();
    assert.deepEqual(report.kept, [VM_UUID]);
    assert.equal(restarted.kernel.texts(vmOnly).length, imported);
    assert.ok(!restarted.blocker.isBlocked(VM_UUID));
  });

  it('lifts a drop that no journal names (a previous run that never wrote one)', async () => {
    await crashMidImport();
    const restarted = await restartB(new FakeJournal());
    const report = await restarted.engine.recover();
    assert.deepEqual(report.lifted, [VM_UUID]);
    assert.ok(!restarted.blocker.isBlocked(VM_UUID));
  });

  it('does nothing after a clean stop', async () => {
    const report = await b.engine.recover();
    assert.deepEqual({ ...report, liftedMs: 0 }, { lifted: [], removed: 0, kept: [], liftedMs: 0 });
  });

  /** A new engine on B's kernel and drops (the fakes carry over), with `journal` left in its run dir. */
  async function restartB(journal: FakeJournal, vmRunsHere = false): Promise<Host> {
    const fresh = await startHost(net, clock, 'B2', '192.0.2.21', {}, undefined, { journal });
    fresh.kernel.replaceWith(b.kernel);
    fresh.blocker.adopt(b.blocker);
    if (vmRunsHere) fresh.hostVms.runningHere.add(VM_UUID);
    return fresh;
  }
});
