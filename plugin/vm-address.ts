import { Address, isIpv4Mapped } from './address';
import { AF_INET } from './flow';

/**
 * Why an address can never be a VM's, or null. Its entries would be the
 * host's own (loopback, the host's addresses) or match every flow of a
 * family (unspecified), and a multicast or broadcast address is never a
 * connection's endpoint: a drop for one blocks the host, and a finish as
 * migrated would delete what the host itself holds. Domain XML a tenant can
 * influence must not get that far.
 */
export function vmAddressProblem(a: Address): string | null {
  const b = a.bytes;
  if (a.family === AF_INET) return ipv4Problem(b, 0);
  if (b.every((x) => x === 0)) return 'the unspecified address';
  if (b.subarray(0, 15).every((x) => x === 0) && b[15] === 1) return 'the loopback address';
  if (b[0] === 0xff) return 'a multicast address';
  // IPv4-mapped (::ffff:a.b.c.d): judged as the IPv4 address it names.
  if (isIpv4Mapped(b)) return ipv4Problem(b, 12);
  return null;
}

function ipv4Problem(b: Uint8Array, off: number): string | null {
  const first = b[off];
  if (first === 127) return 'a loopback address';
  if (first === 0) return b[off + 1] === 0 && b[off + 2] === 0 && b[off + 3] === 0 ? 'the unspecified address' : 'an address of "this network" (0.0.0.0/8)';
  if (first >= 224 && first <= 239) return 'a multicast address';
  if (first === 255 && b[off + 1] === 255 && b[off + 2] === 255 && b[off + 3] === 255) return 'the broadcast address';
  return null;
}
