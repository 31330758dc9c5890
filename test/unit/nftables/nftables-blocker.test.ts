import { strict as assert } from 'node:assert';
import sinon from 'sinon';
import { BlockRequestError } from '../../../adapters/nftables/block-request-error';
import { NftError } from '../../../adapters/nftables/nft-error';
import { NftTransaction } from '../../../adapters/nftables/nft-json';
import { NftablesBlocker } from '../../../adapters/nftables/nftables-blocker';
import { formatAddress, parseAddress } from '../../../plugin/address';
import { BlockedVm } from '../../../plugin/ports/blocker-port';
import { FakeNft } from './fake-nft';

const A = '6f9619ff-8b86-d011-b42d-00c04fc964ff';
const B = '0b5f3a8e-1111-4222-8333-444455556666';
const A_ADDRS = ['192.0.2.10', '2001:db8::10'].map(parseAddress);
const B_ADDRS = ['198.51.100.20'].map(parseAddress);

function text(vms: BlockedVm[]): Record<string, string[]> {
  return Object.fromEntries(vms.map((v) => [v.vm, v.addresses.map((a) => formatAddress(a.bytes, 0, a.bytes.length))]));
}

function setsIn(doc: NftTransaction | undefined): string[] {
  return (doc?.nftables ?? []).flatMap((c) => ('add' in c && 'set' in c.add ? [`${c.add.set.family} ${c.add.set.name}`] : []));
}

describe('NftablesBlocker (fake nft at the process boundary)', () => {
  let nft: FakeNft;
  let blocker: NftablesBlocker;

  beforeEach(() => {
    nft = new FakeNft();
    nft.addForeignTable('inet', 'firewalld');
    blocker = new NftablesBlocker({ runner: nft.runner });
  });

  it('installs a VM\'s drop in one nft -j -f - transaction, both tables', async () => {
    const runner = sinon.spy(nft.runner);
    blocker = new NftablesBlocker({ runner });
    await blocker.block(A, A_ADDRS);
    const writes = runner.getCalls().filter((c) => c.args[0].join(' ') === '-j -f -');
    assert.equal(writes.length, 1);
    assert.deepEqual(nft.tableNames(), ['inet firewalld', 'inet ctmigrate', 'bridge ctmigrate']);
    assert.deepEqual(text(await blocker.blocked()), { [A]: ['192.0.2.10', '2001:db8::10'] });
  });

  it('is idempotent: blocking again with the same addresses writes nothing', async () => {
    await blocker.block(A, A_ADDRS);
    const before = nft.writes;
    await blocker.block(A, A_ADDRS);
    await blocker.block(A.toUpperCase(), [...A_ADDRS].reverse());
    assert.equal(nft.writes, before);
  });

  it('replaces the address list when a blocked VM is blocked with other addresses', async () => {
    await blocker.block(A, A_ADDRS);
    await blocker.block(A, [parseAddress('203.0.113.5')]);
    assert.deepEqual(text(await blocker.blocked()), { [A]: ['203.0.113.5'] });
  });

  it('keeps the other VM\'s drop in the same transaction that adds or lifts one', async () => {
    await blocker.block(A, A_ADDRS);
    await blocker.block(B, B_ADDRS);
    assert.ok(setsIn(nft.transactions.at(-1)).includes('inet vm_6f9619ff8b86d011b42d00c04fc964ff_v4'));
    await blocker.unblock(A);
    assert.deepEqual(setsIn(nft.transactions.at(-1)), [
      'inet vm_0b5f3a8e111142228333444455556666_v4',
      'inet vm_0b5f3a8e111142228333444455556666_v6',
      'bridge vm_0b5f3a8e111142228333444455556666_v4',
      'bridge vm_0b5f3a8e111142228333444455556666_v6',
    ]);
    assert.deepEqual(Object.keys(text(await blocker.blocked())), [B]);
  });

  it('removes its tables when the last VM is unblocked', async () => {
    await blocker.block(A, A_ADDRS);
    await blocker.unblock(A);
    assert.deepEqual(nft.tableNames(), ['inet firewalld']);
    assert.deepEqual(await blocker.blocked(), []);
  });

  it('unblocks a VM whose table someone flushed away without an error, in one nft run', async () => {
    await blocker.block(A, A_ADDRS);
    nft.flushRuleset();
    const before = nft.writes;
    await blocker.unblock(A);
    assert.equal(nft.writes, before + 1, 'the cut-over path writes once and reads nothing');
    await blocker.unblock('never-blocked');
    assert.equal(nft.writes, before + 1, 'lifting a drop nobody installed writes nothing');
    assert.deepEqual(await blocker.blocked(), []);
  });

  it('lifting one VM after a flush restores the other VM\'s drop', async () => {
    await blocker.block(A, A_ADDRS);
    await blocker.block(B, B_ADDRS);
    nft.flushRuleset();
    await blocker.unblock(A);
    assert.deepEqual(Object.keys(text(await blocker.blocked())), [B]);
  });

  describe('reconcile()', () => {
    it('writes nothing when the kernel is as desired', async () => {
      await blocker.block(A, A_ADDRS);
      const before = nft.writes;
      assert.deepEqual(await blocker.reconcile(), { repaired: false, differences: [] });
      assert.equal(nft.writes, before);
    });

    it('re-creates both tables after nft flush ruleset, leaving foreign tables gone as the flush left them', async () => {
      await blocker.block(A, A_ADDRS);
      nft.flushRuleset();
      const report = await blocker.reconcile();
      assert.equal(report.repaired, true);
      assert.deepEqual(report.differences, ['table inet ctmigrate is missing', 'table bridge ctmigrate is missing']);
      assert.deepEqual(nft.tableNames(), ['inet ctmigrate', 'bridge ctmigrate']);
      assert.deepEqual(Object.keys(text(await blocker.blocked())), [A]);
    });

    it('restores rules someone flushed from one chain', async () => {
      await blocker.block(A, A_ADDRS);
      nft.flushChain('inet', 'ctmigrate', 'forward');
      assert.deepEqual(await blocker.blocked(), [], 'a VM without its forward drops is not reported blocked');
      const report = await blocker.reconcile();
      assert.deepEqual(report.differences, ['the rules of chain inet ctmigrate forward lack 4 of 4 drop rules and hold 0 foreign ones']);
      assert.deepEqual(Object.keys(text(await blocker.blocked())), [A]);
    });

    it('removes a foreign accept put in front of the drops', async () => {
      await blocker.block(A, A_ADDRS);
      nft.insertRule('inet', 'ctmigrate', { family: 'inet', table: 'ctmigrate', chain: 'prerouting', expr: [{ counter: null }] });
      const report = await blocker.reconcile();
      assert.deepEqual(report.differences, ['the rules of chain inet ctmigrate prerouting lack 0 of 4 drop rules and hold 1 foreign ones']);
      assert.deepEqual((await blocker.reconcile()).differences, []);
    });

    it('takes out an address someone added to a VM\'s set', async () => {
      await blocker.block(A, A_ADDRS);
      nft.addElement('bridge', 'ctmigrate', 'vm_6f9619ff8b86d011b42d00c04fc964ff_v4', '192.0.2.99');
      const report = await blocker.reconcile();
      assert.deepEqual(report.differences, [
        'set bridge ctmigrate vm_6f9619ff8b86d011b42d00c04fc964ff_v4 (VM 6f9619ff-8b86-d011-b42d-00c04fc964ff) holds [192.0.2.10, 192.0.2.99], not [192.0.2.10]',
      ]);
    });

    it('does nothing at all when nothing is blocked and nothing is there', async () => {
      assert.deepEqual(await blocker.reconcile(), { repaired: false, differences: [] });
      assert.equal(nft.writes, 0);
    });
  });

  it('adopts the drops a previous daemon left, so a restart never lifts them', async () => {
    await blocker.block(A, A_ADDRS);
    const restarted = new NftablesBlocker({ runner: nft.runner });
    await restarted.block(B, B_ADDRS);
    assert.deepEqual(Object.keys(text(await restarted.blocked())).sort(), [B, A].sort());
    nft.flushRuleset();
    await restarted.reconcile();
    assert.deepEqual(Object.keys(text(await restarted.blocked())).sort(), [B, A].sort());
  });

  it('clear() removes both tables and forgets every VM, also with nothing there', async () => {
    await blocker.block(A, A_ADDRS);
    await blocker.clear();
    assert.deepEqual(nft.tableNames(), ['inet firewalld']);
    await blocker.clear();
    assert.deepEqual(await blocker.reconcile(), { repaired: false, differences: [] });
  });

  it('never names a foreign table in any command it writes', async () => {
    await blocker.block(A, A_ADDRS);
    await blocker.block(B, B_ADDRS);
    nft.flushRuleset();
    await blocker.reconcile();
    await blocker.unblock(A);
    await blocker.clear();
    for (const doc of nft.transactions) {
      for (const c of doc.nftables) {
        const o = 'add' in c ? c.add : c.delete;
        const table = 'table' in o ? o.table.name : 'chain' in o ? o.chain.table : 'set' in o ? o.set.table : o.rule.table;
        assert.equal(table, 'ctmigrate');
      }
    }
  });

  it('with bridge: false manages the inet table only', async () => {
    blocker = new NftablesBlocker({ runner: nft.runner, bridge: false });
    await blocker.block(A, A_ADDRS);
    assert.deepEqual(nft.tableNames(), ['inet firewalld', 'inet ctmigrate']);
    assert.deepEqual(Object.keys(text(await blocker.blocked())), [A]);
  });

  describe('failures', () => {
    it('says what nft refused and that nothing changed; the VM is not desired afterwards', async () => {
      nft.refuseNext = 'internal:0:0-0: Error: Could not process rule: No space left on device\n\n';
      await assert.rejects(blocker.block(A, A_ADDRS), (e: unknown) => {
        assert.ok(e instanceof NftError);
        assert.equal(e.message, `nft refused to install the drop for VM ${A}: Could not process rule: No space left on device; nothing changed`);
        return true;
      });
      assert.deepEqual(nft.tableNames(), ['inet firewalld']);
      assert.deepEqual(await blocker.reconcile(), { repaired: false, differences: [] });
    });

    it('keeps the drop in place (and desired) when lifting it fails', async () => {
      await blocker.block(A, A_ADDRS);
      nft.refuseNext = 'Error: Could not process rule: Device or resource busy\n';
      await assert.rejects(blocker.unblock(A), /nft refused to lift the drop for VM .*: Could not process rule: Device or resource busy; the drop stays in place/);
      nft.flushRuleset();
      await blocker.reconcile();
      assert.deepEqual(Object.keys(text(await blocker.blocked())), [A]);
    });

    it('reports a timed-out nft as such', async () => {
      nft.timeOutNext = true;
      await assert.rejects(blocker.block(A, A_ADDRS), /^NftError: nft timed out trying to install the drop for VM .*; nothing changed$/);
    });

    it('refuses a block without addresses before asking nft anything', async () => {
      await assert.rejects(blocker.block(A, []), BlockRequestError);
      await assert.rejects(blocker.block(A, []), /cannot block VM .*: no address given; nothing changed/);
      assert.equal(nft.calls.length, 0);
    });

    it('refuses a malformed address', async () => {
      await assert.rejects(blocker.block(A, [{ family: 2, bytes: new Uint8Array(16) }]), BlockRequestError);
    });

    it('keeps working after a failed call', async () => {
      nft.refuseNext = 'Error: boom\n';
      await assert.rejects(blocker.block(A, A_ADDRS));
      await blocker.block(B, B_ADDRS);
      assert.deepEqual(Object.keys(text(await blocker.blocked())), [B]);
    });
  });

  it('runs concurrent calls one after another, so none writes from a stale read', async () => {
    await Promise.all([blocker.block(A, A_ADDRS), blocker.block(B, B_ADDRS), blocker.reconcile()]);
    assert.deepEqual(Object.keys(text(await blocker.blocked())).sort(), [A, B].sort());
  });
});
