import { readFileSync } from 'node:fs';

function readNumber(path: string): number | null {
  try {
    const n = Number(readFileSync(path, 'utf8').trim());
    return Number.isFinite(n) && n >= 0 ? n : null;
  } catch {
    return null;
  }
}

/**
 * Capacity for a table that must hold this namespace's conntrack entries:
 * the kernel's own limit (nf_conntrack_max) bounds what a dump can return.
 * The memory is reserved, not used: pages become resident as records land.
 */
export function kernelTableCapacity(): number {
  const max = readNumber('/proc/sys/net/netfilter/nf_conntrack_max') ?? 262144;
  const count = readNumber('/proc/sys/net/netfilter/nf_conntrack_count') ?? 0;
  // Entries created during the dump can push past the count; never below 64k.
  return Math.max(65536, max, Math.ceil(count * 1.25));
}
