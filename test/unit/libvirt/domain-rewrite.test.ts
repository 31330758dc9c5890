import { strict as assert } from 'node:assert';
import { withCtmigrateMetadata, withVmstateObject } from '../../../adapters/libvirt/domain-rewrite';
import { readDomain } from '../../../adapters/libvirt/domain-xml';
import { elementNames, isSubsequence, LIBVIRT_DOMAIN, PLAIN_DOMAIN, VM_UUID, xmllint, xmllintElementCount } from './domain-fixtures';

const ARGS = `dbus-vmstate,id=ctmigrate-6f1c2b3a,addr=unix:path=/run/ctmigrate/vm/${VM_UUID}/bus.sock,id-list=ctmigrate`;

/** The rewrite parses (xmllint and ours), keeps every element, and only adds text. */
function checkKept(before: string, after: string): void {
  xmllint(after);
  assert.ok(isSubsequence(elementNames(before), elementNames(after)), 'every original element kept, in order');
  assert.equal(xmllintElementCount(after), elementNames(after).length);
}

/** Text of `after` with every insertion removed equals `before` (byte for byte elsewhere). */
function onlyInserted(before: string, after: string): void {
  let i = 0;
  for (const ch of after) if (i < before.length && ch === before[i]) i++;
  assert.equal(i, before.length, 'the original text survives as a subsequence');
}

describe('domain XML rewrite: the dbus-vmstate object', () => {
  it('adds <qemu:commandline> and declares the qemu namespace on <domain>', () => {
    const r = withVmstateObject(readDomain(LIBVIRT_DOMAIN), ARGS);
    assert.ok(r.changed);
    checkKept(LIBVIRT_DOMAIN, r.xml);
    onlyInserted(LIBVIRT_DOMAIN, r.xml);
    assert.match(r.xml, /^<domain type='qemu' xmlns:qemu='http:\/\/libvirt.org\/schemas\/domain\/qemu\/1.0'>/);
    assert.ok(r.xml.endsWith(`  <qemu:commandline>
    <qemu:arg value='-object'/>
    <qemu:arg value='${ARGS}'/>
  </qemu:commandline>
</domain>
`));
    const again = readDomain(r.xml);
    assert.equal(again.vmstateObjects.length, 1);
    assert.ok(again.vmstateObjects[0].ours);
  });

  it('is idempotent: an object of ours with this host\'s bus leaves the XML alone', () => {
    const once = withVmstateObject(readDomain(LIBVIRT_DOMAIN), ARGS).xml;
    const twice = withVmstateObject(readDomain(once), ARGS);
    assert.equal(twice.changed, false);
    assert.equal(twice.xml, once);
  });

  it('appends to an existing <qemu:commandline> with other args, under its own prefix', () => {
    const xml = `<domain type="kvm" xmlns:q="http://libvirt.org/schemas/domain/qemu/1.0">
  <uuid>${VM_UUID}</uuid>
  <q:commandline>
    <q:arg value="-newarg"/>
    <q:env name="FOO" value="bar"/>
  </q:commandline>
</domain>
`;
    const r = withVmstateObject(readDomain(xml), ARGS);
    checkKept(xml, r.xml);
    onlyInserted(xml, r.xml);
    assert.ok(r.xml.includes(`    <q:env name="FOO" value="bar"/>
    <q:arg value='-object'/>
    <q:arg value='${ARGS}'/>
  </q:commandline>`));
    assert.ok(!r.xml.includes('xmlns:qemu'), 'no second declaration');
  });

  it('fills a self-closing <qemu:commandline/>', () => {
    const xml = `<domain xmlns:qemu="http://libvirt.org/schemas/domain/qemu/1.0"><uuid>${VM_UUID}</uuid><qemu:commandline/></domain>`;
    const r = withVmstateObject(readDomain(xml), ARGS);
    checkKept(xml, r.xml);
    assert.equal(readDomain(r.xml).vmstateObjects.length, 1);
  });

  it('picks another prefix when "qemu" is taken by another namespace', () => {
    const xml = `<domain xmlns:qemu="urn:not-libvirt"><uuid>${VM_UUID}</uuid><qemu:x/></domain>`;
    const r = withVmstateObject(readDomain(xml), ARGS);
    checkKept(xml, r.xml);
    assert.match(r.xml, /xmlns:qemu2='http:\/\/libvirt.org\/schemas\/domain\/qemu\/1.0'/);
    assert.ok(readDomain(r.xml).vmstateObjects[0].ours);
  });

  it('points an existing object of ours at this host\'s helper, keeping its id and other options', () => {
    const xml = `<domain xmlns:qemu="http://libvirt.org/schemas/domain/qemu/1.0"><uuid>${VM_UUID}</uuid>
  <qemu:commandline>
    <qemu:arg value="-object"/>
    <qemu:arg value="dbus-vmstate,id=mine,addr=unix:path=/run/source-host/vm/x/bus.sock,id-list=ctmigrate"/>
  </qemu:commandline>
</domain>`;
    const r = withVmstateObject(readDomain(xml), ARGS);
    checkKept(xml, r.xml);
    const o = readDomain(r.xml).vmstateObjects[0];
    assert.equal(o.options.values.get('id'), 'mine');
    assert.equal(o.options.values.get('addr'), `unix:path=/run/ctmigrate/vm/${VM_UUID}/bus.sock`);
    assert.equal(r.xml.replace(/addr=[^,]*/, 'addr=X'), xml.replace(/addr=[^,]*/, 'addr=X'), 'nothing else changed');
  });

  it('adds ours next to a dbus-vmstate object of someone else', () => {
    const xml = `<domain xmlns:qemu="http://libvirt.org/schemas/domain/qemu/1.0"><uuid>${VM_UUID}</uuid><qemu:commandline><qemu:arg value="-object"/><qemu:arg value="dbus-vmstate,id=theirs,addr=unix:path=/x,id-list=other"/></qemu:commandline></domain>`;
    const r = withVmstateObject(readDomain(xml), ARGS);
    checkKept(xml, r.xml);
    assert.deepEqual(readDomain(r.xml).vmstateObjects.map((o) => o.ours), [false, true]);
  });

  it('escapes what an attribute value cannot carry', () => {
    const r = withVmstateObject(readDomain(PLAIN_DOMAIN), `dbus-vmstate,id=a,addr=unix:path=/run/a'b&c/bus.sock,id-list=ctmigrate`);
    checkKept(PLAIN_DOMAIN, r.xml);
    assert.equal(readDomain(r.xml).vmstateObjects[0].options.values.get('addr'), "unix:path=/run/a'b&c/bus.sock");
  });
});

describe('domain XML rewrite: our metadata', () => {
  it('adds <metadata> after <uuid> to a domain without one', () => {
    const r = withCtmigrateMetadata(readDomain(PLAIN_DOMAIN), { addresses: ['203.0.113.7'], zone: 3, mark: { value: 1, mask: 0xff }, require: true });
    checkKept(PLAIN_DOMAIN, r.xml);
    onlyInserted(PLAIN_DOMAIN, r.xml);
    const f = readDomain(r.xml);
    assert.deepEqual([f.addresses, f.zone, f.mark, f.require], [['203.0.113.7'], 3, { value: 1, mask: 0xff }, true]);
  });

  it('replaces our earlier metadata and leaves other metadata alone', () => {
    const xml = `<domain><uuid>${VM_UUID}</uuid>
  <metadata>
    <app:info xmlns:app="urn:example:app">keep</app:info>
    <c:vm xmlns:c="urn:ctmigrate:vm:1"><c:address>192.0.2.1</c:address></c:vm>
  </metadata>
</domain>`;
    const r = withCtmigrateMetadata(readDomain(xml), { addresses: ['192.0.2.2'], require: false });
    xmllint(r.xml);
    assert.ok(r.xml.includes('<app:info xmlns:app="urn:example:app">keep</app:info>'));
    assert.deepEqual(readDomain(r.xml).addresses, ['192.0.2.2']);
    assert.equal(withCtmigrateMetadata(readDomain(r.xml), { addresses: ['192.0.2.2'], require: false }).changed, false);
  });

  it('adds into an existing <metadata> and a self-closing one', () => {
    for (const meta of ['<metadata>\n    <x:y xmlns:x="urn:x"/>\n  </metadata>', '<metadata/>']) {
      const xml = `<domain>\n  <uuid>${VM_UUID}</uuid>\n  ${meta}\n</domain>\n`;
      const r = withCtmigrateMetadata(readDomain(xml), { addresses: ['192.0.2.3'], require: false });
      checkKept(xml, r.xml);
      assert.deepEqual(readDomain(r.xml).addresses, ['192.0.2.3']);
    }
  });
});
