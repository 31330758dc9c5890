import { Address } from './address';
import { R_FAMILY, R_MARK, R_ORIG_DST, R_ORIG_SRC, R_REPLY_DST, R_REPLY_SRC, R_ZONE, RecordFlag, R_FLAGS } from './flow';
import { FlowView } from './flow-view';

/**
 * Which entries belong to a VM: any of its addresses in either tuple, and
 * optionally its zone and mark. An empty address list matches every address.
 */
export interface FlowFilter {
  addresses: Address[];
  /** Entry zone (CTA_ZONE) the entry must have. */
  zone?: number;
  /** ct mark: (mark & mask) === value. */
  mark?: { value: number; mask: number };
}

/** The filter that matches everything. */
export const ALL_FLOWS: FlowFilter = { addresses: [] };

/**
 * Exact userspace check of a record against the filter. Kernels without a
 * dump filter for some criterion send more than asked; this makes the
 * outcome the same on every kernel.
 */
export function flowMatches(filter: FlowFilter, v: FlowView): boolean {
  const u8 = v.u8;
  const rec = v.rec;
  if (filter.zone !== undefined) {
    const zone = (u8[rec + R_FLAGS] & RecordFlag.HasZone) !== 0 ? v.u16[(rec + R_ZONE) >> 1] : 0;
    if (zone !== filter.zone) return false;
  }
  if (filter.mark !== undefined) {
    const mark = v.u32[(rec + R_MARK) >> 2];
    if (((mark & filter.mark.mask) >>> 0) !== filter.mark.value >>> 0) return false;
  }
  const list = filter.addresses;
  if (list.length === 0) return true;
  const family = u8[rec + R_FAMILY];
  for (let i = 0; i < list.length; i++) {
    const a = list[i];
    if (a.family !== family) continue;
    if (
      sameAt(u8, rec + R_ORIG_SRC, a.bytes) ||
      sameAt(u8, rec + R_ORIG_DST, a.bytes) ||
      sameAt(u8, rec + R_REPLY_SRC, a.bytes) ||
      sameAt(u8, rec + R_REPLY_DST, a.bytes)
    )
      return true;
  }
  return false;
}

function sameAt(u8: Uint8Array, off: number, bytes: Uint8Array): boolean {
  for (let i = 0; i < bytes.length; i++) if (u8[off + i] !== bytes[i]) return false;
  return true;
}
