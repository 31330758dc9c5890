// enable-vm as a user runs it, against a fake virsh first on PATH that serves
// a domain's XML from a file and records what `define` was given.
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readDomain } from '../../../adapters/libvirt/domain-xml';
import { elementNames, isSubsequence, PLAIN_DOMAIN, VM_UUID, xmllint } from './domain-fixtures';

const CTL = join(__dirname, '..', '..', '..', 'adapters', 'cli', 'ctmigratectl.js');

describe('ctmigratectl enable-vm (fake virsh)', function () {
  this.timeout(20000);
  let dir: string;
  const ctl = (args: string[], path: string): { code: number | null; stdout: string; stderr: string } => {
    const r = spawnSync(process.execPath, [CTL, 'enable-vm', ...args], { env: { PATH: path, DBUS_SYSTEM_BUS_ADDRESS: `unix:path=${join(dir, 'no-bus')}` } });
    return { code: r.status, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
  };

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'ctmigrate-enable-'));
    writeFileSync(join(dir, 'domain.xml'), PLAIN_DOMAIN);
    writeFileSync(
      join(dir, 'virsh'),
      `#!/bin/sh
echo "$*" >> '${dir}/calls'
case "$1" in
  dumpxml) [ "$4" = plain ] || { echo "error: failed to get domain '$4'" >&2; exit 1; }; cat '${dir}/domain.xml' ;;
  define) cp "$2" '${dir}/defined.xml' ;;
  *) exit 3 ;;
esac
`,
    );
    chmodSync(join(dir, 'virsh'), 0o755);
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('prints the diff and defines metadata plus the dbus-vmstate object, keeping every element', () => {
    const r = ctl(['plain', '--run-dir', '/run/ctm-test', '--require'], `${dir}:/usr/bin:/bin`);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^--- a\/plain \(persistent XML\)\n\+\+\+ b\/plain \(persistent XML\)\n@@ /);
    assert.match(r.stdout, /^\+ {6}<ctmigrate:address>203\.0\.113\.7<\/ctmigrate:address>$/m);
    const defined = readFileSync(join(dir, 'defined.xml'), 'utf8');
    xmllint(defined);
    assert.ok(isSubsequence(elementNames(PLAIN_DOMAIN), elementNames(defined)));
    const f = readDomain(defined);
    assert.deepEqual([f.addresses, f.require], [['203.0.113.7'], true]);
    assert.equal(f.vmstateObjects[0].options.values.get('addr'), `unix:path=/run/ctm-test/vm/${VM_UUID}/bus.sock`);
    assert.match(readFileSync(join(dir, 'calls'), 'utf8'), /^dumpxml --inactive --security-info plain\ndefine /);
  });

  it('--dry-run prints the diff and defines nothing; --address replaces what the XML names', () => {
    const r = ctl(['plain', '--dry-run', '--address', '192.0.2.44'], `${dir}:/usr/bin:/bin`);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /<ctmigrate:address>192\.0\.2\.44</);
    assert.match(r.stdout, /addr=unix:path=\/run\/ctmigrate\/vm\//, 'default run dir without a daemon');
    assert.ok(!existsSync(join(dir, 'defined.xml')));
  });

  it('says clearly when virsh is absent, or refuses the domain', () => {
    const none = ctl(['plain'], '/nonexistent');
    assert.equal(none.code, 1);
    assert.match(none.stderr, /virsh not found on PATH: install libvirt-clients/);
    const unknown = ctl(['nosuch'], `${dir}:/usr/bin:/bin`);
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /virsh dumpxml failed \(exit 1\): error: failed to get domain 'nosuch'/);
  });

  it('does nothing the second time', () => {
    assert.equal(ctl(['plain', '--run-dir', '/run/x'], `${dir}:/usr/bin:/bin`).code, 0);
    writeFileSync(join(dir, 'domain.xml'), readFileSync(join(dir, 'defined.xml')));
    rmSync(join(dir, 'defined.xml'));
    const again = ctl(['plain', '--run-dir', '/run/x'], `${dir}:/usr/bin:/bin`);
    assert.equal(again.code, 0);
    assert.match(again.stdout, /already enabled/);
    assert.ok(!existsSync(join(dir, 'defined.xml')));
  });
});
