import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Lab, NetNs } from './lab/netns';

const RUNNER = join(__dirname, '..', 'fixtures', 'nftables', 'quick-lift-runner.js');

interface Round {
  blocked: boolean;
  right: boolean | null;
  after: unknown[];
  tables: string;
  liftMs: number;
}

describe('nftables blocker: lifting a drop at cut-over', () => {
  let lab: Lab;
  let ns: NetNs;

  before(async () => {
    lab = new Lab();
    ns = await lab.netns('lift');
  });
  after(async () => lab.cleanup());

  it("empties the VM's sets in one netlink transaction, then removes its tables; again on the same socket, also for a paused VM; falls back to nft after a flush", async () => {
    const r = await ns.execOk(process.execPath, [RUNNER], { timeoutMs: 30_000 });
    const out = JSON.parse(r.stdout) as { rounds: Round[]; flushed: { after: unknown[]; tables: string } };
    assert.equal(out.rounds.length, 3);
    for (const [i, round] of out.rounds.entries()) {
      assert.equal(round.blocked, true, `round ${i + 1}: the address was in the set while blocked`);
      assert.notEqual(round.right, true, `round ${i + 1}: the address left the set as soon as unblock() returned`);
      assert.deepEqual(round.after, [], `round ${i + 1}: no VM is blocked afterwards`);
      assert.equal(round.tables, '', `round ${i + 1}: the tidy-up removed the ctmigrate tables`);
    }
    assert.deepEqual(out.flushed.after, [], 'after a flushed ruleset the lift still ends with nothing blocked');
    assert.equal(out.flushed.tables, '', 'and with no ctmigrate table');
  });
});
