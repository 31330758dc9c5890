import { Address, AddressError, formatAddress, parseAddress } from './address';
import { FlowFilter } from './flow-filter';
import { vmAddressProblem } from './vm-address';

/** A VM as ctmigrate knows it: its UUID and what identifies its conntrack entries. */
export interface VmSpec {
  /** libvirt domain UUID, lower case. */
  uuid: string;
  /** The VM's own addresses; entries involving any of them belong to it. */
  addresses: Address[];
  /** Conntrack zone its entries live in (absent: any zone). */
  zone?: number;
  /** ct mark its entries carry: (mark & mask) === value. */
  mark?: { value: number; mask: number };
}

/** A VM description that cannot be used. */
export class VmSpecError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'VmSpecError';
  }
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Check and normalise a VM UUID (libvirt prints them lower case with dashes). */
export function parseVmUuid(text: string): string {
  const t = text.trim().toLowerCase();
  if (!UUID.test(t)) throw new VmSpecError(`not a VM UUID: ${JSON.stringify(text)} (expected 8-4-4-4-12 hex digits)`);
  return t;
}

/** Build a VmSpec from text; every problem is one clear VmSpecError. */
export function vmSpec(uuid: string, addresses: readonly string[], zone?: number, mark?: { value: number; mask: number }): VmSpec {
  if (addresses.length === 0) throw new VmSpecError(`VM ${uuid}: no addresses given; its entries cannot be told apart from the host's`);
  const parsed: Address[] = [];
  for (const a of addresses) {
    let address: Address;
    try {
      address = parseAddress(a);
    } catch (e) {
      if (e instanceof AddressError) throw new VmSpecError(`VM ${uuid}: ${e.message}`);
      throw e;
    }
    const problem = vmAddressProblem(address);
    if (problem !== null) throw new VmSpecError(`VM ${uuid}: ${a} is ${problem}, never a VM's own address`);
    parsed.push(address);
  }
  if (zone !== undefined && !(Number.isInteger(zone) && zone >= 0 && zone <= 65535)) throw new VmSpecError(`VM ${uuid}: zone ${zone} is not 0-65535`);
  return { uuid: parseVmUuid(uuid), addresses: parsed, zone, mark };
}

/** The conntrack filter that selects the VM's entries. */
export function vmFilter(vm: VmSpec): FlowFilter {
  return { addresses: vm.addresses, zone: vm.zone, mark: vm.mark };
}

/** Addresses as text, for logs and D-Bus. */
export function vmAddressTexts(vm: VmSpec): string[] {
  return vm.addresses.map((a) => formatAddress(a.bytes, 0, a.bytes.length));
}
