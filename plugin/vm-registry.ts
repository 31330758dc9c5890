// The VMs this host runs, as the daemon persists them under its run dir so
// that after a restart it still answers "who runs VM X?" for them. The file
// is JSON, one object per VM:
//
//   {"format":1,"vms":[{"uuid":"...","addresses":["192.0.2.10"],"zone":null,"mark":"0x1/0xff"}]}
//
// A record that does not check out is skipped with a reason, never fatal:
// losing one VM's registration must not cost the others theirs.

import { CtMarkError, formatCtMark, parseCtMark } from './ct-mark';
import { VmSpec, vmAddressTexts, vmSpec, VmSpecError } from './vm';

export const REGISTRY_FORMAT = 1;

/** The registry file as a whole cannot be read (not JSON, another format). */
export class VmRegistryError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'VmRegistryError';
  }
}

export interface RegistryRecord {
  uuid: string;
  addresses: string[];
  zone: number | null;
  /** "0xVALUE/0xMASK", '' for none. */
  mark: string;
}

/** What a registry file held: the VMs that check out, and why the others did not. */
export interface DecodedRegistry {
  vms: VmSpec[];
  problems: string[];
}

export function encodeRegistry(vms: readonly VmSpec[]): string {
  return `${JSON.stringify({ format: REGISTRY_FORMAT, vms: vms.map(vmRecord) })}\n`;
}

/** One VM as the run dir's files hold it (the registry, the session journal). */
export function vmRecord(vm: VmSpec): RegistryRecord {
  return { uuid: vm.uuid, addresses: vmAddressTexts(vm), zone: vm.zone ?? null, mark: vm.mark ? formatCtMark(vm.mark) : '' };
}

/** The VM a record names; throws VmSpecError or CtMarkError when it does not check out. */
export function vmFromRecord(raw: unknown): VmSpec {
  const r = raw as Partial<RegistryRecord> | null;
  if (!r || typeof r.uuid !== 'string' || !Array.isArray(r.addresses) || !r.addresses.every((a) => typeof a === 'string')) {
    throw new VmSpecError('needs uuid and addresses');
  }
  const zone = r.zone === null || r.zone === undefined ? undefined : r.zone;
  if (zone !== undefined && typeof zone !== 'number') throw new VmSpecError('zone is not a number');
  const mark = typeof r.mark === 'string' && r.mark !== '' ? parseCtMark(r.mark) : undefined;
  return vmSpec(r.uuid, r.addresses, zone, mark);
}

export function decodeRegistry(text: string): DecodedRegistry {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new VmRegistryError('registry file is not JSON');
  }
  const top = parsed as { format?: unknown; vms?: unknown } | null;
  if (!top || typeof top !== 'object' || top.format !== REGISTRY_FORMAT || !Array.isArray(top.vms)) {
    throw new VmRegistryError(`registry file is not format ${REGISTRY_FORMAT} (expected {"format":${REGISTRY_FORMAT},"vms":[...]})`);
  }
  const out: DecodedRegistry = { vms: [], problems: [] };
  const seen = new Set<string>();
  top.vms.forEach((raw: unknown, i: number) => {
    try {
      const vm = vmFromRecord(raw);
      if (seen.has(vm.uuid)) throw new VmSpecError(`VM ${vm.uuid} listed twice; the first kept`);
      seen.add(vm.uuid);
      out.vms.push(vm);
    } catch (e) {
      if (e instanceof VmSpecError || e instanceof CtMarkError) out.problems.push(`record ${i + 1}: ${e.message}`);
      else throw e;
    }
  });
  return out;
}
