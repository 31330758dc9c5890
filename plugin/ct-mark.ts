/** A ct mark selector: an entry matches when (mark & mask) === value. */
export interface CtMark {
  value: number;
  mask: number;
}

/** A mark text that cannot be used. */
export class CtMarkError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CtMarkError';
  }
}

function u32(text: string, what: string): number {
  const t = text.trim();
  const n = /^0x[0-9a-f]{1,8}$/i.test(t) ? parseInt(t.slice(2), 16) : /^[0-9]{1,10}$/.test(t) ? Number(t) : NaN;
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new CtMarkError(`${what} ${JSON.stringify(text)} is not a 32-bit number (decimal or 0x hex)`);
  return n;
}

/**
 * "VALUE[/MASK]" (decimal or 0x hex), as the domain XML's
 * `<ctmigrate:mark>` and the registry file write it; no mask = all bits.
 */
export function parseCtMark(text: string): CtMark {
  const parts = text.split('/');
  if (parts.length > 2) throw new CtMarkError(`mark ${JSON.stringify(text)} is not VALUE[/MASK]`);
  const value = u32(parts[0], 'mark value');
  const mask = parts.length === 2 ? u32(parts[1], 'mark mask') : 0xffffffff;
  // A value bit outside the mask could never match: refuse rather than select nothing.
  if ((value & mask) >>> 0 !== value) throw new CtMarkError(`mark value 0x${value.toString(16)} has bits outside its mask 0x${mask.toString(16)}`);
  return { value, mask };
}

/** "0xVALUE/0xMASK", the form D-Bus and the registry use. */
export function formatCtMark(mark: CtMark): string {
  return `0x${mark.value.toString(16)}/0x${mark.mask.toString(16)}`;
}
