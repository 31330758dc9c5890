/**
 * The vmstate reference: what Save() hands QEMU on the source and Load()
 * gets on the destination. Not the state itself (that travels on the peer
 * channel) but a pointer to it: the session, the final version and a digest
 * of the final delta. A few dozen bytes, so QEMU's blob limit and the slow
 * byte-array marshalling never matter.
 *
 * Layout: "CTMR" | u8 format (1) | u8 kind (0 none, 1 session) |
 *         u16 id length | id | u48 final version (LE) | u8 digest length | digest
 */
const MAGIC = [0x43, 0x54, 0x4d, 0x52];
const FORMAT = 1;

export type VmStateReference = { kind: 'none' } | { kind: 'session'; sessionId: string; finalVersion: number; digest: Uint8Array };

export class VmStateReferenceError extends Error {
  constructor(message: string) {
    super(`vmstate blob: ${message}`);
    this.name = 'VmStateReferenceError';
  }
}

export function encodeReference(r: VmStateReference): Uint8Array {
  if (r.kind === 'none') return Uint8Array.from([...MAGIC, FORMAT, 0]);
  const id = Buffer.from(r.sessionId, 'utf8');
  const out = Buffer.alloc(4 + 2 + 2 + id.length + 6 + 1 + r.digest.length);
  let p = 0;
  for (const b of MAGIC) out[p++] = b;
  out[p++] = FORMAT;
  out[p++] = 1;
  out.writeUInt16LE(id.length, p);
  p += 2;
  id.copy(out, p);
  p += id.length;
  out.writeUIntLE(r.finalVersion, p, 6);
  p += 6;
  out[p++] = r.digest.length;
  out.set(r.digest, p);
  return out;
}

export function decodeReference(blob: Uint8Array): VmStateReference {
  const b = Buffer.from(blob.buffer, blob.byteOffset, blob.byteLength);
  if (b.length < 6 || MAGIC.some((m, i) => b[i] !== m)) throw new VmStateReferenceError('not a ctmigrate reference');
  if (b[4] !== FORMAT) throw new VmStateReferenceError(`unsupported reference format ${b[4]}`);
  if (b[5] === 0) {
    if (b.length !== 6) throw new VmStateReferenceError('trailing bytes');
    return { kind: 'none' };
  }
  if (b[5] !== 1 || b.length < 8) throw new VmStateReferenceError('malformed');
  const idLen = b.readUInt16LE(6);
  let p = 8;
  if (b.length < p + idLen + 7) throw new VmStateReferenceError('truncated');
  const sessionId = b.toString('utf8', p, p + idLen);
  p += idLen;
  const finalVersion = b.readUIntLE(p, 6);
  p += 6;
  const dl = b[p++];
  if (b.length !== p + dl) throw new VmStateReferenceError('truncated or trailing bytes');
  return { kind: 'session', sessionId, finalVersion, digest: Uint8Array.from(b.subarray(p, p + dl)) };
}
