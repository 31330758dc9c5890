import { strict as assert } from 'node:assert';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { tableDrift } from '../../../adapters/nftables/drift';
import { Blocks, dropTable } from '../../../adapters/nftables/drop-ruleset';
import { enforcedVms, vmsWithSets } from '../../../adapters/nftables/kernel-blocks';
import { ListingError, parseTable, parseTableNames } from '../../../adapters/nftables/kernel-tables';
import { formatAddress, parseAddress } from '../../../plugin/address';

// Listings printed by nft 1.0.6 (Debian 12) after the blocker blocked two VMs
// in a scratch namespace, and one SYN to 192.0.2.10 was dropped in output.
const FIXTURES = join(__dirname, '..', '..', '..', '..', 'test', 'unit', 'nftables', 'fixtures');
const inetListing = readFileSync(join(FIXTURES, 'inet-two-vms-1.0.6.json'), 'utf8');
const tablesListing = readFileSync(join(FIXTURES, 'tables-1.0.6.json'), 'utf8');

const UUID = '6f9619ff-8b86-d011-b42d-00c04fc964ff';
const DESIRED: Blocks = new Map([
  [UUID, ['192.0.2.10', '2001:db8::10', '::ffff:192.0.2.11'].map(parseAddress)],
  ['web-1', ['198.51.100.7'].map(parseAddress)],
]);

describe('reading the blocker\'s tables back from nft 1.0.6', () => {
  it('finds our tables among foreign ones', () => {
    assert.deepEqual([...parseTableNames(tablesListing, 'inet')].sort(), ['ctmigrate', 'foreign']);
    assert.deepEqual([...parseTableNames(tablesListing, 'bridge')], ['ctmigrate']);
  });

  it('sees no difference between what it wrote and what nft prints (counters, handles, address spelling)', () => {
    const got = parseTable(inetListing, 'inet', 'ctmigrate');
    assert.deepEqual(tableDrift('inet', dropTable('inet', DESIRED), got), []);
  });

  it('reads every VM and its addresses from the set names and elements', () => {
    const vms = vmsWithSets([parseTable(inetListing, 'inet', 'ctmigrate')]);
    const text = new Map([...vms].map(([vm, a]) => [vm, a.map((x) => formatAddress(x.bytes, 0, x.bytes.length))]));
    assert.deepEqual(text, new Map([
      [UUID, ['192.0.2.10', '2001:db8::10', '::ffff:c000:20b']],
      ['web-1', ['198.51.100.7']],
    ]));
    assert.deepEqual([...enforcedVms(parseTable(inetListing, 'inet', 'ctmigrate'))].sort(), [UUID, 'web-1']);
  });

  it('names what differs when the kernel holds another address', () => {
    const other: Blocks = new Map([...DESIRED, ['web-1', [parseAddress('198.51.100.8')]]]);
    assert.deepEqual(tableDrift('inet', dropTable('inet', other), parseTable(inetListing, 'inet', 'ctmigrate')), [
      'set inet ctmigrate vmx_7765622d31_v4 (VM web-1) holds [198.51.100.7], not [198.51.100.8]',
    ]);
  });

  it('refuses a listing that is not nft\'s', () => {
    assert.throws(() => parseTable('Error: nonsense', 'inet', 'ctmigrate'), ListingError);
    assert.throws(() => parseTable('{"foo": 1}', 'inet', 'ctmigrate'), /no "nftables" array/);
  });
});
