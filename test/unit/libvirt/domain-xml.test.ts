import { strict as assert } from 'node:assert';
import { DomainXmlError, readDomain } from '../../../adapters/libvirt/domain-xml';
import { XmlRefusedError } from '../../../adapters/libvirt/xml-reader';
import { LIBVIRT_DOMAIN, PLAIN_DOMAIN, VM_UUID } from './domain-fixtures';

describe('domain XML: which addresses belong to a VM', () => {
  it('reads our metadata, nwfilter IP/IPV6 and <interface><ip>, each address once and normalised', () => {
    const f = readDomain(LIBVIRT_DOMAIN);
    assert.equal(f.uuid, VM_UUID);
    assert.equal(f.name, 'web1');
    assert.deepEqual(f.addresses, ['192.0.2.10', '2001:db8::10', '192.0.2.11', '2001:db8::11', '198.51.100.20']);
    assert.equal(f.addressSources.get('192.0.2.10'), 'metadata');
    assert.equal(f.addressSources.get('2001:db8::11'), 'nwfilter');
    assert.equal(f.addressSources.get('198.51.100.20'), 'interface-ip');
    assert.equal(f.zone, 7);
    assert.deepEqual(f.mark, { value: 0x10, mask: 0xff });
    assert.equal(f.require, false);
    assert.deepEqual(f.warnings, []);
  });

  it('reads a domain without <metadata>', () => {
    const f = readDomain(PLAIN_DOMAIN);
    assert.deepEqual(f.addresses, ['203.0.113.7']);
    assert.equal(f.metadata, undefined);
    assert.equal(f.zone, undefined);
  });

  it('finds our metadata under any prefix, and <require/>', () => {
    const f = readDomain(`<domain><uuid>${VM_UUID}</uuid><metadata>
      <other:x xmlns:other="urn:someone:else"><other:address>192.0.2.99</other:address></other:x>
      <c:vm xmlns:c='urn:ctmigrate:vm:1'><c:address>192.0.2.1</c:address><c:require/></c:vm>
      <address xmlns="urn:ctmigrate:vm:1">192.0.2.98</address>
    </metadata></domain>`);
    assert.deepEqual(f.addresses, ['192.0.2.1']);
    assert.equal(f.require, true);
  });

  it('ignores elements that only look like ours: wrong namespace, or not where the contract says', () => {
    const f = readDomain(`<domain xmlns:c="urn:ctmigrate:vm:1"><uuid>${VM_UUID}</uuid>
      <c:vm><c:address>192.0.2.50</c:address></c:vm>
      <devices><interface><source><ip address="192.0.2.51"/></source>
      <filterref filter="f"><parameter name="ip" value="192.0.2.52"/><parameter name="IP" value="192.0.2.53"/></filterref></interface></devices>
    </domain>`);
    assert.deepEqual(f.addresses, ['192.0.2.53']);
  });

  it('warns about an address that is not one and keeps the others', () => {
    const f = readDomain(`<domain><uuid>${VM_UUID}</uuid><metadata><vm xmlns="urn:ctmigrate:vm:1"><address>not-an-ip</address><address> 192.0.2.5 </address></vm></metadata></domain>`);
    assert.deepEqual(f.addresses, ['192.0.2.5']);
    assert.equal(f.warnings.length, 1);
    assert.match(f.warnings[0], /not-an-ip.*not an IP address/);
  });

  it('reads CDATA and entities in text the same as plain text', () => {
    const f = readDomain(`<domain><uuid><![CDATA[${VM_UUID.toUpperCase()}]]></uuid><metadata><vm xmlns="urn:ctmigrate:vm:1"><address>192.0.2.&#x37;</address><!-- c --></vm></metadata></domain>`);
    assert.equal(f.uuid, VM_UUID);
    assert.deepEqual(f.addresses, ['192.0.2.7']);
  });

  it('refuses a bad zone or mark rather than widen the VM to every zone or mark', () => {
    const meta = (inner: string): string => `<domain><uuid>${VM_UUID}</uuid><metadata><vm xmlns="urn:ctmigrate:vm:1"><address>192.0.2.1</address>${inner}</vm></metadata></domain>`;
    assert.throws(() => readDomain(meta('<zone>70000</zone>')), DomainXmlError);
    assert.throws(() => readDomain(meta('<mark>0x100/0xff</mark>')), DomainXmlError);
  });

  it('refuses what is not a domain, and a domain without a usable uuid', () => {
    assert.throws(() => readDomain('<network/>'), /not <domain>/);
    assert.throws(() => readDomain('<domain><name>x</name></domain>'), /no <uuid>/);
    assert.throws(() => readDomain('<domain><uuid>nope</uuid></domain>'), /not a VM UUID/);
    assert.throws(() => readDomain('<!DOCTYPE domain><domain/>'), XmlRefusedError);
  });

  it('finds dbus-vmstate objects on the QEMU command line, and which are ours', () => {
    const f = readDomain(`<domain xmlns:q="http://libvirt.org/schemas/domain/qemu/1.0"><uuid>${VM_UUID}</uuid>
      <q:commandline><q:arg value="-object"/><q:arg value="dbus-vmstate,id=other,addr=unix:path=/x,id-list=foo"/>
      <q:arg value="-object"/><q:arg value="dbus-vmstate,id=ctm,addr=unix:path=/run/a/bus.sock,id-list=foo,,ctmigrate"/></q:commandline></domain>`);
    assert.deepEqual(f.vmstateObjects.map((o) => [o.options.values.get('id'), o.ours]), [['other', false], ['ctm', true]]);
  });
});
