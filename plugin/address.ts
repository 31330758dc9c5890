import { isIP } from 'node:net';
import { AF_INET, AF_INET6 } from './flow';

/** An IP address as the record stores it: family plus network-order bytes. */
export interface Address {
  family: typeof AF_INET | typeof AF_INET6;
  /** 4 or 16 bytes, network order. */
  bytes: Uint8Array;
}

/** The address text is not an IPv4 or IPv6 address. */
export class AddressError extends Error {
  constructor(readonly text: string) {
    super(`not an IP address: ${JSON.stringify(text)}`);
    this.name = 'AddressError';
  }
}

/** Parse dotted IPv4 or any textual IPv6 (with ::, embedded IPv4). */
export function parseAddress(text: string): Address {
  const kind = isIP(text);
  if (kind === 4) {
    const b = new Uint8Array(4);
    const parts = text.split('.');
    for (let i = 0; i < 4; i++) b[i] = Number(parts[i]);
    return { family: AF_INET, bytes: b };
  }
  if (kind === 6) return { family: AF_INET6, bytes: parseIpv6(text) };
  throw new AddressError(text);
}

function parseIpv6(text: string): Uint8Array {
  let s = text;
  const pct = s.indexOf('%');
  if (pct >= 0) s = s.slice(0, pct);
  let tail: number[] = [];
  const lastColon = s.lastIndexOf(':');
  if (s.indexOf('.', lastColon) >= 0) {
    const v4 = s.slice(lastColon + 1).split('.').map(Number);
    tail = [(v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]];
    s = s.slice(0, lastColon + 1) + '0';
  }
  const halves = s.split('::');
  const head = halves[0] === '' ? [] : halves[0].split(':');
  const rest = halves.length > 1 ? (halves[1] === '' ? [] : halves[1].split(':')) : [];
  let groups = head.map((g) => parseInt(g, 16));
  const back = rest.map((g) => parseInt(g, 16));
  if (tail.length) {
    if (back.length) back.pop();
    else groups.pop();
  }
  const fill = 8 - groups.length - back.length - tail.length;
  groups = groups.concat(new Array<number>(Math.max(0, fill)).fill(0), back, tail);
  const b = new Uint8Array(16);
  for (let i = 0; i < 8; i++) {
    b[i * 2] = groups[i] >> 8;
    b[i * 2 + 1] = groups[i] & 0xff;
  }
  return b;
}

/** Text form of `len` (4 or 16) address bytes at `off`: dotted IPv4, RFC 5952 IPv6. */
export function formatAddress(bytes: Uint8Array, off: number, len: number): string {
  if (len === 4) return `${bytes[off]}.${bytes[off + 1]}.${bytes[off + 2]}.${bytes[off + 3]}`;
  const g: number[] = [];
  for (let i = 0; i < 8; i++) g.push((bytes[off + i * 2] << 8) | bytes[off + i * 2 + 1]);
  // Longest run of two or more zero groups becomes "::".
  let bestAt = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      bestAt = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (a: number[]): string => a.map((x) => x.toString(16)).join(':');
  if (bestAt < 0) return hex(g);
  return `${hex(g.slice(0, bestAt))}::${hex(g.slice(bestAt + bestLen))}`;
}

/** Whether 16 address bytes are an IPv4-mapped IPv6 address (::ffff:a.b.c.d), a dual-stack socket's view of IPv4. */
export function isIpv4Mapped(b: Uint8Array): boolean {
  return b.length === 16 && b[10] === 0xff && b[11] === 0xff && b.subarray(0, 10).every((x) => x === 0);
}

/** One spelling per address (IPv6 compressed, lower case), or the text as given when it is not an address. */
export function canonicalAddressText(text: string): string {
  try {
    const a = parseAddress(text);
    return formatAddress(a.bytes, 0, a.bytes.length);
  } catch {
    return text;
  }
}
