import { Address, AddressError, formatAddress, parseAddress } from './address';
import { vmAddressProblem } from './vm-address';

/**
 * What a container's checkpoint holds of ctmigrate: two files in CRIU's
 * image directory, so they travel with the checkpoint (`podman container
 * checkpoint --export` tars that directory). The manifest names the
 * container and its addresses, which the destination blocks at pre-restore
 * before any task exists to ask; the snapshot is the host's conntrack
 * entries of those addresses, in the binary snapshot format.
 */
export const MANIFEST_FILE = 'ctmigrate.json';
export const SNAPSHOT_FILE = 'ctmigrate.ctm';
export const MANIFEST_FORMAT = 'ctmigrate-checkpoint/1';
/** A manifest is a few hundred bytes; anything much larger is not ours. */
export const MANIFEST_MAX_BYTES = 64 * 1024;
const MAX_ADDRESSES = 64;

export interface CheckpointManifest {
  format: typeof MANIFEST_FORMAT;
  /** The container's id (runtime's id from its cgroup, or CTMIGRATE_CONTAINER). */
  container: string;
  /** The container's own addresses, as its network namespace had them at network-lock. */
  addresses: Address[];
  /** Entries in the snapshot file. */
  entries: number;
  /** Size of the snapshot file in bytes. */
  bytes: number;
  /** SHA-256 of the snapshot file, hex. */
  sha256: string;
  /** Host name of the source, for people. */
  host: string;
  /** When the entries were packed (ms since the epoch). */
  packedAt: number;
}

/** A manifest that cannot be used; the message says what is wrong. */
export class ManifestError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ManifestError';
  }
}

/** A container id: printable, no separators a path or a log line would trip on. */
export const CONTAINER_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

export function encodeManifest(m: CheckpointManifest): string {
  return `${JSON.stringify(
    {
      format: m.format,
      container: m.container,
      addresses: m.addresses.map((a) => formatAddress(a.bytes, 0, a.bytes.length)),
      entries: m.entries,
      bytes: m.bytes,
      sha256: m.sha256,
      host: m.host,
      packedAt: new Date(m.packedAt).toISOString(),
    },
    null,
    2,
  )}\n`;
}

/** Parse and check a manifest; every problem is one ManifestError naming the field. */
export function parseManifest(text: string): CheckpointManifest {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new ManifestError(`not JSON (${(e as Error).message})`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new ManifestError('not a JSON object');
  const o = raw as Record<string, unknown>;
  if (o.format !== MANIFEST_FORMAT) throw new ManifestError(`format is ${JSON.stringify(o.format)}, this build reads ${MANIFEST_FORMAT}`);
  if (typeof o.container !== 'string' || !CONTAINER_ID.test(o.container)) throw new ManifestError(`container ${JSON.stringify(o.container)} is not a container id`);
  if (!Array.isArray(o.addresses) || o.addresses.length === 0 || o.addresses.length > MAX_ADDRESSES)
    throw new ManifestError(`addresses must be a list of 1 to ${MAX_ADDRESSES} addresses`);
  const addresses: Address[] = [];
  for (const a of o.addresses) {
    if (typeof a !== 'string') throw new ManifestError(`address ${JSON.stringify(a)} is not text`);
    let parsed: Address;
    try {
      parsed = parseAddress(a);
    } catch (e) {
      if (e instanceof AddressError) throw new ManifestError(`address ${JSON.stringify(a)}: ${e.message}`);
      throw e;
    }
    const problem = vmAddressProblem(parsed);
    if (problem !== null) throw new ManifestError(`address ${a} is ${problem}, never a container's own address`);
    addresses.push(parsed);
  }
  const count = (v: unknown, what: string): number => {
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw new ManifestError(`${what} ${JSON.stringify(v)} is not a count`);
    return v;
  };
  if (typeof o.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(o.sha256)) throw new ManifestError('sha256 is not 64 hex digits');
  const packedAt = typeof o.packedAt === 'string' ? Date.parse(o.packedAt) : NaN;
  if (!Number.isFinite(packedAt)) throw new ManifestError(`packedAt ${JSON.stringify(o.packedAt)} is not a time`);
  return {
    format: MANIFEST_FORMAT,
    container: o.container,
    addresses,
    entries: count(o.entries, 'entries'),
    bytes: count(o.bytes, 'bytes'),
    sha256: o.sha256,
    host: typeof o.host === 'string' ? o.host.slice(0, 255) : '',
    packedAt,
  };
}
