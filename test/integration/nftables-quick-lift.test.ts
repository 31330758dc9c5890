import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Lab, NetNs } from './lab/netns';

const RUNNER = join(__dirname, '..', 'fixtures', 'nftables', 'quick-lift-runner.js');

describe('nftables blocker: lifting a drop at cut-over', () => {
  let lab: Lab;
  let ns: NetNs;

  before(async () => {
    lab = new Lab();
    ns = await lab.netns('lift');
  });
  after(async () => lab.cleanup());

  it('empties the VM\'s sets in one netlink transaction, then removes its tables', async () => {
    const r = await ns.execOk(process.execPath, [RUNNER]);
    const out = JSON.parse(r.stdout) as { blocked: boolean; right: boolean | null; after: unknown[]; tables: string; liftMs: number };
    assert.equal(out.blocked, true, 'the address was in the set while blocked');
    assert.notEqual(out.right, true, 'the address left the set as soon as unblock() returned');
    assert.deepEqual(out.after, [], 'no VM is blocked afterwards');
    assert.equal(out.tables, '', 'the tidy-up removed the ctmigrate tables');
  });
});
