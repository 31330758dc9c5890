// Domain XMLs as libvirt writes them (and a few as people do), with
// documentation addresses only.

import { execFileSync } from 'node:child_process';
import { allElements, parseXml } from '../../../adapters/libvirt/xml-reader';

export const VM_UUID = '6f1c2b3a-0000-4000-8000-0000000000a1';

/** What `virsh dumpxml` prints for a small TCG guest with our metadata and an nwfilter. */
export const LIBVIRT_DOMAIN = `<domain type='qemu'>
  <name>web1</name>
  <uuid>${VM_UUID}</uuid>
  <metadata>
    <ctmigrate:vm xmlns:ctmigrate="urn:ctmigrate:vm:1">
      <ctmigrate:address>192.0.2.10</ctmigrate:address>
      <ctmigrate:address>2001:DB8:0:0::10</ctmigrate:address>
      <ctmigrate:zone>7</ctmigrate:zone>
      <ctmigrate:mark>0x10/0xff</ctmigrate:mark>
    </ctmigrate:vm>
  </metadata>
  <memory unit='KiB'>32768</memory>
  <currentMemory unit='KiB'>32768</currentMemory>
  <vcpu placement='static'>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type>
  </os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <interface type='ethernet'>
      <mac address='52:54:00:12:34:56'/>
      <target dev='vnet0' managed='no'/>
      <model type='virtio'/>
      <filterref filter='clean-traffic'>
        <parameter name='IP' value='192.0.2.11'/>
        <parameter name='IPV6' value='2001:db8::11'/>
        <parameter name='MAC' value='52:54:00:12:34:56'/>
      </filterref>
    </interface>
    <interface type='user'>
      <ip address='198.51.100.20' family='ipv4' prefix='24'/>
      <model type='virtio'/>
    </interface>
  </devices>
</domain>
`;

/** No metadata, nothing of ours; an <ip> for the address. */
export const PLAIN_DOMAIN = `<domain type="qemu">
  <name>plain</name>
  <uuid>${VM_UUID}</uuid>
  <memory unit="KiB">32768</memory>
  <devices>
    <interface type="ethernet">
      <ip address="203.0.113.7" prefix="24"/>
    </interface>
  </devices>
</domain>
`;

/** Every element's {namespace}local name, in document order. */
export function elementNames(xml: string): string[] {
  return allElements(parseXml(xml).root).map((e) => `{${e.ns}}${e.local}`);
}

/** Whether `small` appears in `big` in order (every original element kept). */
export function isSubsequence(small: string[], big: string[]): boolean {
  let i = 0;
  for (const x of big) if (i < small.length && x === small[i]) i++;
  return i === small.length;
}

/** xmllint --noout on the text; throws with xmllint's complaint. */
export function xmllint(xml: string): void {
  execFileSync('xmllint', ['--noout', '-'], { input: xml, stdio: ['pipe', 'pipe', 'pipe'] });
}

/** Element names as xmllint (libxml2) sees them: an independent parser's view. */
export function xmllintElementCount(xml: string): number {
  return Number(execFileSync('xmllint', ['--xpath', 'count(//*)', '-'], { input: xml }).toString().trim());
}
