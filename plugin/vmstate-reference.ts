/**
 * The vmstate reference: what Save() hands QEMU on the source and Load()
 * gets on the destination. Not the state itself (that travels on the peer
 * channel) but a pointer to it: the session, the final version and a digest
 * of the final delta. A few dozen bytes, so QEMU's blob limit and the slow
 * byte-array marshalling never matter.
 *
 * Layout: "CTMR" | u8 format (1) | u8 kind (0 none, 1 session, 2 failed) |
 *   session: u16 id length | id | u48 final version (LE) | u8 digest length | digest
 *   failed:  u16 reason length | reason (UTF-8)
 *
 * `failed` exists because QEMU does not fail a migration when Save()
 * reports an error: it carries on without our section. A reference that
 * makes the destination's Load() refuse is the only way to stop the VM
 * from running there without its state (and libvirt then resumes it on
 * the source).
 */
const MAGIC = [0x43, 0x54, 0x4d, 0x52];
const FORMAT = 1;

export type VmStateReference =
  | { kind: 'none' }
  | { kind: 'session'; sessionId: string; finalVersion: number; digest: Uint8Array }
  | { kind: 'failed'; reason: string };

export class VmStateReferenceError extends Error {
  constructor(message: string) {
    super(`vmstate blob: ${message}`);
    this.name = 'VmStateReferenceError';
  }
}

export function encodeReference(r: VmStateReference): Uint8Array {
  if (r.kind === 'none') return Uint8Array.from([...MAGIC, FORMAT, 0]);
  if (r.kind === 'failed') {
    const text = Buffer.from(r.reason.slice(0, 1000), 'utf8');
    const out = Buffer.alloc(8 + text.length);
    MAGIC.forEach((b, i) => (out[i] = b));
    out[4] = FORMAT;
    out[5] = 2;
    out.writeUInt16LE(text.length, 6);
    text.copy(out, 8);
    return out;
  }
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
  if (b[5] === 2) {
    if (b.length < 8 || b.length !== 8 + b.readUInt16LE(6)) throw new VmStateReferenceError('truncated or trailing bytes');
    return { kind: 'failed', reason: b.toString('utf8', 8) };
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
