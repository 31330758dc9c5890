import { strict as assert } from 'node:assert';
import { mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileRegistryStore } from '../../../adapters/registry/file-registry-store';
import { vmSpec } from '../../../plugin/vm';
import { decodeRegistry, encodeRegistry, VmRegistryError } from '../../../plugin/vm-registry';

const A = vmSpec('6f1c2b3a-0000-4000-8000-0000000000a1', ['192.0.2.10', '2001:db8::10'], 7, { value: 0x10, mask: 0xff });
const B = vmSpec('6f1c2b3a-0000-4000-8000-0000000000b2', ['198.51.100.20']);

describe('VM registry', () => {
  it('round-trips VMs with addresses, zone and mark', () => {
    assert.deepEqual(decodeRegistry(encodeRegistry([A, B])), { vms: [A, B], problems: [] });
  });

  it('skips a bad record with a reason and keeps the others', () => {
    const text = JSON.stringify({ format: 1, vms: [{ uuid: 'nope', addresses: ['192.0.2.1'] }, { uuid: B.uuid, addresses: ['198.51.100.20'], zone: null, mark: '' }, { uuid: B.uuid, addresses: ['192.0.2.2'] }] });
    const d = decodeRegistry(text);
    assert.deepEqual(d.vms, [B]);
    assert.equal(d.problems.length, 2);
    assert.match(d.problems[0], /record 1: not a VM UUID/);
    assert.match(d.problems[1], /record 3: .*listed twice/);
  });

  it('refuses a file that is not the format', () => {
    assert.throws(() => decodeRegistry('{'), VmRegistryError);
    assert.throws(() => decodeRegistry('{"format":2,"vms":[]}'), /not format 1/);
  });

  describe('as a file under the run dir', () => {
    let dir: string;
    beforeEach(() => {
      dir = mkdtempSync(join(tmpdir(), 'ctmigrate-registry-'));
    });
    afterEach(() => rmSync(dir, { recursive: true, force: true }));

    it('starts empty, saves atomically (0600, no temporary left) and loads back', async () => {
      const store = new FileRegistryStore(join(dir, 'run'));
      assert.deepEqual(await store.load(), { vms: [], problems: [] });
      await Promise.all([store.save([A]), store.save([A, B])]);
      assert.deepEqual((await new FileRegistryStore(join(dir, 'run')).load()).vms, [A, B]);
      assert.deepEqual(readdirSync(join(dir, 'run')), ['vms.json']);
      assert.equal(statSync(store.path).mode & 0o777, 0o600);
    });

    it('says which file is broken', async () => {
      writeFileSync(join(dir, 'vms.json'), 'garbage');
      await assert.rejects(new FileRegistryStore(dir).load(), /vms\.json: registry file is not JSON/);
    });
  });
});
