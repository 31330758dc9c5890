import 'reflect-metadata';
import assert from 'node:assert/strict';
import { FakeClock } from './fakes/fake-clock';
import { FakeNetwork } from './fakes/fake-peer-network';
import { CHANGE_INTERVAL_MS, Host, put, sessionOf, startHost, tcp, vm, VM_UUID, VM_V4, vmFlows } from './lab';

describe("migration engine: an import never replaces what is not the VM's", () => {
  let clock: FakeClock;
  let a: Host;
  let b: Host;

  beforeEach(async () => {
    clock = new FakeClock();
    const net = new FakeNetwork(clock);
    a = await startHost(net, clock, 'A', '192.0.2.10');
    b = await startHost(net, clock, 'B', '192.0.2.20');
    put(a, vmFlows());
    await a.engine.register(vm);
  });

  afterEach(async () => {
    await a.engine.stop();
    await b.engine.stop();
  });

  /** B's own flow with the original tuple of A's DNAT entry (198.51.100.9:50000 -> 198.51.100.200:8080), not NAT'd to the VM. */
  const hostFlow = (): ReturnType<typeof tcp> => tcp('198.51.100.9', 50000, '198.51.100.200', 8080);

  it("leaves the host's own flow that a NAT-only entry collides with, counts the refusal, and a rollback keeps it", async () => {
    put(b, [hostFlow()]);
    const before = b.kernel.texts();
    await b.engine.prepareIncoming(vm, { source: a.peerText });
    await clock.run(CHANGE_INTERVAL_MS);
    const own = b.kernel.texts().filter((t) => t.includes('50000'));
    assert.deepEqual(own, before, "the host's flow is still its own (reply not rewritten to the VM)");
    assert.ok(!own.some((t) => t.includes(VM_V4)));
    assert.equal(sessionOf(b).refused, 1);
    assert.ok(b.log.lines.some((l) => /whose original tuple an entry that is not the VM's already holds/.test(l.message)));
    await b.engine.abort(VM_UUID);
    assert.deepEqual(b.kernel.texts(), before, "after the rollback B holds exactly its own flow");
  });

  it("replaces an entry that holds the VM in its original tuple (it is the VM's by the same rule)", async () => {
    put(b, [tcp('198.51.100.9', 40001, VM_V4, 22, { timeout: 11 })]);
    await b.engine.prepareIncoming(vm, { source: a.peerText });
    await clock.run(CHANGE_INTERVAL_MS);
    assert.equal(sessionOf(b).refused, 0);
    assert.equal(b.kernel.texts().filter((t) => t.includes('40001')).length, 1);
  });
});
