import { strict as assert } from 'node:assert';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parsePskHex, PskKeyError, readPskFile } from '../../../adapters/peer/psk-key';

const KEY = 'a1'.repeat(32);

describe('pre-shared key file', () => {
  let dir = '';
  before(() => (dir = mkdtempSync(join(tmpdir(), 'ctm-psk-'))));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('reads 32 bytes of hex with a trailing newline', () => {
    const p = join(dir, 'ok');
    writeFileSync(p, `${KEY}\n`, { mode: 0o600 });
    assert.deepEqual(readPskFile(p), Buffer.from(KEY, 'hex'));
  });

  it('refuses a key file that group or others can read, saying how to fix it', () => {
    for (const mode of [0o644, 0o640, 0o604, 0o620]) {
      const p = join(dir, `loose-${mode.toString(8)}`);
      writeFileSync(p, `${KEY}\n`);
      chmodSync(p, mode);
      assert.throws(
        () => readPskFile(p),
        (e: unknown) => e instanceof PskKeyError && e.message.includes(`(mode 0${mode.toString(8)}): chmod 600 ${p}`),
      );
    }
  });

  it('tolerates whitespace inside the key', () => {
    const spaced = `  ${KEY.slice(0, 20)}\n\t${KEY.slice(20, 40)} ${KEY.slice(40)}\r\n`;
    assert.deepEqual(parsePskHex(spaced), Buffer.from(KEY, 'hex'));
  });

  const bad: [string, string, RegExp][] = [
    ['empty', '\n', /is empty; expected at least 32 bytes/],
    ['short', 'ab'.repeat(31), /holds 31 bytes of key; at least 32 are required/],
    ['not hex', `${KEY.slice(0, 10)}zz${KEY.slice(12)}`, /not hex: character "z" at position 11/],
    ['odd digits', `${KEY}a`, /odd number of hex digits \(65\)/],
    ['too long', 'ab'.repeat(513), /at most 512/],
  ];
  for (const [name, text, msg] of bad) {
    it(`refuses a key that is ${name}, saying why`, () => {
      assert.throws(() => parsePskHex(text, 'pre-shared key file /etc/ctmigrate/psk'), (e: unknown) => e instanceof PskKeyError && msg.test(e.message));
    });
  }

  it('names a missing file', () => {
    assert.throws(() => readPskFile(join(dir, 'absent')), /cannot read the pre-shared key file .*absent: ENOENT/);
  });
});
