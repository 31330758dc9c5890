// Per-VM set names. nft 1.0.6 drops set and table comments from its JSON
// (they are accepted and not printed back), so the set name itself must carry
// the VM's identity for blocked() to read it back: the encoding is injective
// and uses only [a-z0-9_], which `nft list` prints and the text syntax
// accepts unquoted.

import { BlockRequestError } from './block-request-error';

/** Which address family a set holds. */
export type SetFamily = 'v4' | 'v6';

/** A VM id is refused beyond this many UTF-8 bytes (hex-encoded names double it; the kernel allows 255). */
export const MAX_VM_ID_BYTES = 64;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const SET_NAME = /^(vm|vmx)_([0-9a-f]+)_(v4|v6)$/;

/**
 * The canonical form of a VM id: UUIDs (libvirt's) are case-insensitive and
 * become lower-case; any other id is kept as given.
 */
export function canonicalVmId(vm: string): string {
  if (UUID.test(vm)) return vm.toLowerCase();
  const bytes = Buffer.byteLength(vm, 'utf8');
  if (bytes === 0) throw new BlockRequestError(vm, 'the VM id is empty');
  if (bytes > MAX_VM_ID_BYTES) throw new BlockRequestError(vm, `the VM id is ${bytes} bytes long (limit ${MAX_VM_ID_BYTES})`);
  return vm;
}

/**
 * `vm_<32 hex digits>_v4` for a UUID (readable next to `virsh domuuid`),
 * `vmx_<hex of the UTF-8 bytes>_v4` for any other id.
 */
export function setName(vm: string, family: SetFamily): string {
  const id = canonicalVmId(vm);
  if (UUID.test(id)) return `vm_${id.replace(/-/g, '')}_${family}`;
  return `vmx_${Buffer.from(id, 'utf8').toString('hex')}_${family}`;
}

/** The VM and family a set name stands for; undefined for a name the blocker never makes. */
export function parseSetName(name: string): { vm: string; family: SetFamily } | undefined {
  const m = SET_NAME.exec(name);
  if (!m) return undefined;
  const [, kind, hex, family] = m as unknown as [string, string, string, SetFamily];
  if (kind === 'vm') {
    if (hex.length !== 32) return undefined;
    const vm = `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
    return { vm, family };
  }
  if (hex.length % 2 !== 0) return undefined;
  const vm = Buffer.from(hex, 'hex').toString('utf8');
  // Reject what setName() would not have produced (invalid UTF-8, a UUID in vmx form, too long).
  try {
    return setName(vm, family) === name ? { vm, family } : undefined;
  } catch {
    return undefined;
  }
}
