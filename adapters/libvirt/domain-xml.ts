// What ctmigrate reads from a libvirt domain XML (CONTRACTS.md, "Which
// addresses belong to a VM"): our metadata, the nwfilter IP/IPV6
// parameters, the <ip> children of <interface>, and any dbus-vmstate object
// already on QEMU's command line.

import { formatAddress, parseAddress } from '../../plugin/address';
import { CtMark, CtMarkError, parseCtMark } from '../../plugin/ct-mark';
import { parseVmUuid, VmSpecError } from '../../plugin/vm';
import { QemuObjectOptions, parseQemuObject } from './qemu-object';
import { attribute, childNamed, childrenNamed, parseXml, XmlAttribute, XmlDocument, XmlElement, XmlLimits, DEFAULT_XML_LIMITS } from './xml-reader';

/** Our metadata namespace: `<metadata><ctmigrate:vm xmlns:ctmigrate="urn:ctmigrate:vm:1">`. */
export const CTMIGRATE_NS = 'urn:ctmigrate:vm:1';
/** libvirt's namespace for `<qemu:commandline>`. */
export const QEMU_NS = 'http://libvirt.org/schemas/domain/qemu/1.0';
/** The helper id our dbus-vmstate objects list in `id-list`. */
export const HELPER_ID = 'ctmigrate';

/** The XML is a well-formed document but not a domain we can act on. */
export class DomainXmlError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DomainXmlError';
  }
}

/** Where an address was found, for the operator's logs. */
export type AddressSource = 'metadata' | 'nwfilter' | 'interface-ip';

/** A `-object dbus-vmstate,...` already on the domain's QEMU command line. */
export interface VmstateObject {
  /** The `<qemu:arg>` carrying the value. */
  arg: XmlElement;
  valueAttribute: XmlAttribute;
  options: QemuObjectOptions;
  /** It lists our helper (`id-list` contains ctmigrate). */
  ours: boolean;
}

export interface DomainFacts {
  doc: XmlDocument;
  name: string;
  /** Lower case, checked. */
  uuid: string;
  /** Normalised (RFC 5952 for IPv6), each once, in document order. */
  addresses: string[];
  /** Address → where it was found first. */
  addressSources: Map<string, AddressSource>;
  zone?: number;
  mark?: CtMark;
  /** `<ctmigrate:require/>`: fail the migration if state cannot be carried. */
  require: boolean;
  /** Our `<ctmigrate:vm>` metadata element, if any. */
  metadata?: XmlElement;
  vmstateObjects: VmstateObject[];
  /** Things ignored on the way (an address that is not one, ...). One line each. */
  warnings: string[];
}

/** Parse and read a domain XML. Throws XmlRefusedError (hostile/malformed) or DomainXmlError. */
export function readDomain(text: string, limits: XmlLimits = DEFAULT_XML_LIMITS): DomainFacts {
  return domainFacts(parseXml(text, limits));
}

export function domainFacts(doc: XmlDocument): DomainFacts {
  const root = doc.root;
  if (root.ns !== '' || root.local !== 'domain') throw new DomainXmlError(`root element is <${root.name}>, not <domain>`);
  const uuidEl = childNamed(root, '', 'uuid');
  if (!uuidEl) throw new DomainXmlError('the domain has no <uuid>');
  let uuid: string;
  try {
    uuid = parseVmUuid(uuidEl.text);
  } catch (e) {
    if (e instanceof VmSpecError) throw new DomainXmlError(`<uuid>: ${e.message}`);
    throw e;
  }
  const facts: DomainFacts = {
    doc,
    name: (childNamed(root, '', 'name')?.text ?? '').trim(),
    uuid,
    addresses: [],
    addressSources: new Map(),
    require: false,
    vmstateObjects: [],
    warnings: [],
  };
  const add = (text: string, from: AddressSource, where: string): void => {
    const t = text.trim();
    let normal: string;
    try {
      const a = parseAddress(t);
      normal = formatAddress(a.bytes, 0, a.bytes.length);
    } catch {
      facts.warnings.push(`${where}: ${JSON.stringify(t.slice(0, 64))} is not an IP address; ignored`);
      return;
    }
    if (facts.addressSources.has(normal)) return;
    facts.addressSources.set(normal, from);
    facts.addresses.push(normal);
  };

  const metadata = childNamed(root, '', 'metadata');
  const vm = metadata ? childNamed(metadata, CTMIGRATE_NS, 'vm') : undefined;
  if (vm) {
    facts.metadata = vm;
    for (const a of childrenNamed(vm, CTMIGRATE_NS, 'address')) add(a.text, 'metadata', '<ctmigrate:address>');
    const zone = childNamed(vm, CTMIGRATE_NS, 'zone');
    if (zone) {
      const z = zone.text.trim();
      if (!/^[0-9]{1,5}$/.test(z) || Number(z) > 65535) throw new DomainXmlError(`<ctmigrate:zone> ${JSON.stringify(z.slice(0, 20))} is not a zone 0-65535`);
      facts.zone = Number(z);
    }
    const mark = childNamed(vm, CTMIGRATE_NS, 'mark');
    if (mark) {
      try {
        facts.mark = parseCtMark(mark.text.trim());
      } catch (e) {
        if (e instanceof CtMarkError) throw new DomainXmlError(`<ctmigrate:mark>: ${e.message}`);
        throw e;
      }
    }
    facts.require = childNamed(vm, CTMIGRATE_NS, 'require') !== undefined;
  }

  const devices = childNamed(root, '', 'devices');
  for (const iface of devices ? childrenNamed(devices, '', 'interface') : []) {
    for (const filterref of childrenNamed(iface, '', 'filterref')) {
      for (const p of childrenNamed(filterref, '', 'parameter')) {
        const n = attribute(p, 'name');
        const v = attribute(p, 'value');
        if ((n === 'IP' || n === 'IPV6') && v !== undefined) add(v, 'nwfilter', `nwfilter parameter ${n}`);
      }
    }
    for (const ip of childrenNamed(iface, '', 'ip')) {
      const v = attribute(ip, 'address');
      if (v !== undefined) add(v, 'interface-ip', '<interface><ip address>');
    }
  }

  for (const cl of childrenNamed(root, QEMU_NS, 'commandline')) {
    const args = childrenNamed(cl, QEMU_NS, 'arg');
    for (let i = 0; i + 1 < args.length; i++) {
      if (attribute(args[i], 'value') !== '-object') continue;
      const valueAttribute = args[i + 1].attributes.find((a) => a.ns === '' && a.local === 'value');
      if (!valueAttribute) continue;
      const options = parseQemuObject(valueAttribute.value);
      if (options.type !== 'dbus-vmstate') continue;
      const ids = (options.values.get('id-list') ?? '').split(',');
      facts.vmstateObjects.push({ arg: args[i + 1], valueAttribute, options, ours: ids.includes(HELPER_ID) });
    }
  }
  return facts;
}
