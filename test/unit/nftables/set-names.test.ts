import { strict as assert } from 'node:assert';
import { BlockRequestError } from '../../../adapters/nftables/block-request-error';
import { canonicalVmId, parseSetName, setName } from '../../../adapters/nftables/set-names';

describe('per-VM set names', () => {
  const uuid = '6F9619FF-8B86-D011-B42D-00C04FC964FF';

  it('names a UUID VM by its 32 hex digits, lower-case', () => {
    assert.equal(setName(uuid, 'v4'), 'vm_6f9619ff8b86d011b42d00c04fc964ff_v4');
    assert.equal(setName(uuid.toLowerCase(), 'v6'), 'vm_6f9619ff8b86d011b42d00c04fc964ff_v6');
  });

  it('reads the canonical UUID back from the set name', () => {
    assert.deepEqual(parseSetName('vm_6f9619ff8b86d011b42d00c04fc964ff_v6'), {
      vm: '6f9619ff-8b86-d011-b42d-00c04fc964ff',
      family: 'v6',
    });
  });

  it('carries any other id injectively, with only [a-z0-9_] in the name', () => {
    for (const vm of ['web-1', 'web_1', 'Web-1', 'my vm "x"', 'ünïcode', 'a'.repeat(64)]) {
      const name = setName(vm, 'v4');
      assert.match(name, /^[a-z0-9_]+$/);
      assert.deepEqual(parseSetName(name), { vm, family: 'v4' });
    }
    assert.notEqual(setName('web-1', 'v4'), setName('web_1', 'v4'));
  });

  it('refuses an empty or over-long id before anything reaches nft', () => {
    assert.throws(() => canonicalVmId(''), BlockRequestError);
    assert.throws(() => setName('a'.repeat(65), 'v4'), /65 bytes long \(limit 64\); nothing changed/);
  });

  it('does not claim sets it never makes', () => {
    for (const name of ['allowed', 'vm_abc_v4', 'vm_6f9619ff8b86d011b42d00c04fc964ff_v5', 'vmx_zz_v4', 'vmx_6_v4', 'vmx_ff_v4']) {
      assert.equal(parseSetName(name), undefined, name);
    }
  });
});
