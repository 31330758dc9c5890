import { strict as assert } from 'node:assert';
import { mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileJournalStore } from '../../../adapters/registry/file-journal-store';
import { decodeJournalRecord, encodeJournalRecord, JournalError, JournalRecord } from '../../../plugin/session-journal';
import { vmSpec } from '../../../plugin/vm';

const VM = vmSpec('6f1c2b3a-0000-4000-8000-0000000000a1', ['192.0.2.10', '2001:db8::10'], 7, { value: 0x10, mask: 0xff });
const RECORD: JournalRecord = { session: '8c38d20eeee9f812', phase: 'importing', since: 1764745555123, vm: VM };

describe('session journal', () => {
  it('round-trips a record with the VM, its zone and mark', () => {
    assert.deepEqual(decodeJournalRecord(encodeJournalRecord(RECORD)), RECORD);
  });

  it('refuses what is not a record, saying why', () => {
    assert.throws(() => decodeJournalRecord('{'), JournalError);
    assert.throws(() => decodeJournalRecord('{"format":2}'), /not journal format 1/);
    const bad = (patch: Record<string, unknown>): string => JSON.stringify({ ...JSON.parse(encodeJournalRecord(RECORD)), ...patch });
    assert.throws(() => decodeJournalRecord(bad({ phase: 'done' })), /neither importing nor ready/);
    assert.throws(() => decodeJournalRecord(bad({ session: '../x' })), /no session id/);
    assert.throws(() => decodeJournalRecord(bad({ vm: { uuid: VM.uuid, addresses: ['nope'] } })), /vm: /);
  });

  describe('as files under the run dir', () => {
    let dir: string;
    beforeEach(() => {
      dir = mkdtempSync(join(tmpdir(), 'ctmigrate-journal-'));
    });
    afterEach(() => rmSync(dir, { recursive: true, force: true }));

    it('is empty without a folder; writes 0600 records in a 0700 folder, replaces and forgets them', async () => {
      const store = new FileJournalStore(join(dir, 'run'));
      assert.deepEqual(await store.load(), { records: [], problems: [] });
      await store.write(RECORD);
      await store.write({ ...RECORD, phase: 'ready' });
      assert.equal(statSync(store.dir).mode & 0o777, 0o700);
      assert.deepEqual(readdirSync(store.dir), [`${VM.uuid}.json`]);
      assert.equal(statSync(join(store.dir, `${VM.uuid}.json`)).mode & 0o777, 0o600);
      assert.deepEqual((await store.load()).records, [{ ...RECORD, phase: 'ready' }]);
      await store.forget(VM.uuid);
      await store.forget(VM.uuid);
      assert.deepEqual(await store.load(), { records: [], problems: [] });
    });

    it('runs writes and removals in call order: a write still on its way never outlives the forget after it', async () => {
      const store = new FileJournalStore(dir);
      const w = store.write({ ...RECORD, phase: 'ready' });
      await store.forget(VM.uuid);
      await w;
      assert.deepEqual(await store.load(), { records: [], problems: [] });
    });

    it('reports an unreadable record, drops a torn temporary write and ignores foreign files', async () => {
      const store = new FileJournalStore(dir);
      await store.write(RECORD);
      const other = '6f1c2b3a-0000-4000-8000-0000000000b2';
      writeFileSync(join(store.dir, `${other}.json`), 'garbage');
      writeFileSync(join(store.dir, `${VM.uuid}.json.1234abcd.tmp`), '{"form');
      writeFileSync(join(store.dir, 'README'), 'not ours');
      const got = await store.load();
      assert.deepEqual(got.records, [RECORD]);
      assert.equal(got.problems.length, 1);
      assert.equal(got.problems[0]?.vm, other);
      assert.match(got.problems[0]?.reason ?? '', /not JSON/);
      assert.ok(!readdirSync(store.dir).some((n) => n.endsWith('.tmp')));
    });
  });
});
