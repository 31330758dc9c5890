import { strict as assert } from 'node:assert';
import { Blocks, DROP_PRIORITY, dropTable } from '../../../adapters/nftables/drop-ruleset';
import { NftCommand, NftRule } from '../../../adapters/nftables/nft-json';
import { replaceTables } from '../../../adapters/nftables/transaction';
import { Address, parseAddress } from '../../../plugin/address';

const VM = '6f9619ff-8b86-d011-b42d-00c04fc964ff';
const SET4 = 'vm_6f9619ff8b86d011b42d00c04fc964ff_v4';
const SET6 = 'vm_6f9619ff8b86d011b42d00c04fc964ff_v6';

function blocks(entries: Record<string, string[]>): Blocks {
  return new Map(Object.entries(entries).map(([vm, a]) => [vm, a.map(parseAddress)] as [string, Address[]]));
}

function match(protocol: string, field: string, set: string): object {
  return { match: { op: '==', left: { payload: { protocol, field } }, right: `@${set}` } };
}

describe('the drop ruleset as libnftables JSON', () => {
  it('replaces both tables in one transaction: add+delete (never fails), then the new table', () => {
    const doc = replaceTables(['inet', 'bridge'], blocks({ [VM]: ['192.0.2.10', '2001:DB8::10'] }));
    const cmds: NftCommand[] = doc.nftables;
    const inet = { family: 'inet', name: 'ctmigrate' };
    assert.deepEqual(cmds.slice(0, 3), [{ add: { table: inet } }, { delete: { table: inet } }, { add: { table: inet } }]);
    const chains = cmds.flatMap((c) => ('add' in c && 'chain' in c.add ? [c.add.chain] : []));
    assert.deepEqual(
      chains.map((c) => `${c.family} ${c.name} ${c.type} ${c.hook} ${c.prio} ${c.policy}`),
      ['prerouting', 'forward', 'output', 'prerouting', 'forward', 'output'].map(
        (h, i) => `${i < 3 ? 'inet' : 'bridge'} ${h} filter ${h} -300 accept`,
      ),
    );
    const sets = cmds.flatMap((c) => ('add' in c && 'set' in c.add ? [c.add.set] : []));
    assert.deepEqual(sets.slice(0, 2), [
      { family: 'inet', table: 'ctmigrate', name: SET4, type: 'ipv4_addr', elem: ['192.0.2.10'] },
      { family: 'inet', table: 'ctmigrate', name: SET6, type: 'ipv6_addr', elem: ['2001:db8::10'] },
    ]);
    const bridgeStart = cmds.findIndex((c) => 'add' in c && 'table' in c.add && c.add.table.family === 'bridge');
    assert.ok(bridgeStart > 0);
    assert.deepEqual(cmds[bridgeStart + 1], { delete: { table: { family: 'bridge', name: 'ctmigrate' } } });
  });

  it('drops from and to the VM in both families, in every chain, counted', () => {
    const table = dropTable('inet', blocks({ [VM]: ['192.0.2.10'] }));
    assert.ok(table);
    for (const chain of ['prerouting', 'forward', 'output']) {
      const rules: NftRule[] = table.rules.filter((r) => r.chain === chain);
      assert.deepEqual(
        rules.map((r) => r.expr),
        [
          [match('ip', 'saddr', SET4), { counter: null }, { drop: null }],
          [match('ip', 'daddr', SET4), { counter: null }, { drop: null }],
          [match('ip6', 'saddr', SET6), { counter: null }, { drop: null }],
          [match('ip6', 'daddr', SET6), { counter: null }, { drop: null }],
        ],
      );
      assert.ok(rules.every((r) => r.comment === `ctmigrate: VM ${VM} not ready here`));
    }
  });

  it('runs before conntrack (priority -300 < -200)', () => {
    assert.ok(DROP_PRIORITY < -200);
  });

  it('keeps an empty set without an elem key (nft refuses "elem": [])', () => {
    const table = dropTable('bridge', blocks({ [VM]: ['198.51.100.7'] }));
    assert.deepEqual(table?.sets[1], { family: 'bridge', table: 'ctmigrate', name: SET6, type: 'ipv6_addr' });
  });

  it('writes each address once, sorted, formatted from bytes', () => {
    const table = dropTable('inet', blocks({ [VM]: ['203.0.113.9', '192.0.2.10', '192.0.2.10', '2001:0db8:0:0::1'] }));
    assert.deepEqual(table?.sets[0]?.elem, ['192.0.2.10', '203.0.113.9']);
    assert.deepEqual(table?.sets[1]?.elem, ['2001:db8::1']);
  });

  it('lists VMs in a stable order, so the same state always gives the same transaction', () => {
    const a = replaceTables(['inet'], blocks({ b: ['192.0.2.2'], a: ['192.0.2.1'] }));
    const b = replaceTables(['inet'], blocks({ a: ['192.0.2.1'], b: ['192.0.2.2'] }));
    assert.deepEqual(a, b);
  });

  it('deletes the tables and builds nothing when no VM is blocked', () => {
    assert.deepEqual(replaceTables(['inet', 'bridge'], new Map()).nftables, [
      { add: { table: { family: 'inet', name: 'ctmigrate' } } },
      { delete: { table: { family: 'inet', name: 'ctmigrate' } } },
      { add: { table: { family: 'bridge', name: 'ctmigrate' } } },
      { delete: { table: { family: 'bridge', name: 'ctmigrate' } } },
    ]);
  });
});
