/**
 * The ctmigrate snapshot format, version 1: one binary layout for snapshot
 * files, peer-channel frames and dbus-vmstate blobs.
 *
 * All integers are little-endian. Addresses are raw network-order bytes.
 * Offsets below are relative to the start of the item they describe.
 *
 * HEADER (32 bytes)
 *    0  8  magic        89 43 54 4D 53 4E 41 50  ("\x89CTMSNAP"; 0x89 never
 *                       starts a text file, so loaders tell binary from JSON
 *                       lines by the first byte)
 *    8  2  version      format version, 1
 *   10  2  flags        none defined in version 1: must be 0
 *   12  1  kind         1 = snapshot (live entries with version <= to),
 *                       2 = delta (live entries and tombstones, from < version <= to)
 *   13  3  reserved     0
 *   16  6  from         table version range the stream covers: u32 low, u16 high (48-bit)
 *   22  6  to           u32 low, u16 high; from <= to
 *   28  4  count        entries that follow, or 0xFFFFFFFF when the writer did
 *                       not know (a streaming encoder); the trailer is authoritative
 *
 * ENTRIES, each starting with a tag byte:
 *   0x01 LIVE       an entry without extension
 *   0x02 LIVE_EXT   an entry with extension parts
 *   0x03 TOMBSTONE  a destroyed entry (delta only): key and version
 *   0xFF END        no more entries; the trailer follows
 *
 *   LIVE / LIVE_EXT (1 + 12 + 4*A + 36 bytes, A = 4 for IPv4, 16 for IPv6):
 *     0   1  tag
 *     1  12  head: record bytes R_VERSION_LO..R_PAD (version lo u32, version
 *            hi u16, flags u8 without Live/Tombstone, family u8 (2|10),
 *            l4proto u8, proto state u8, zone dir u8 (bits 0-1), pad u8 = 0)
 *    13  4A  orig src, orig dst, reply src, reply dst (A bytes each)
 *     .  36  record bytes R_ORIG_SPORT..R_ID+4 (4 ports, status, timeout,
 *            mark, zone, wscale orig/reply, proto A, proto B, id)
 *   LIVE_EXT continues with:
 *     .   2  present: ExtFlag bits (0 < present < 1024)
 *     .   *  each present part, in bit order:
 *              Labels 16, Helper 16 (NUL-terminated printable name, NUL
 *              padded), SeqAdjOrig 12, SeqAdjReply 12, Synproxy 12,
 *              Master 38 (family u8, l4proto u8, src 16, dst 16, sport u16,
 *              dport u16), Counters 32, Timestamp 16, Use 4, Secmark 4
 *
 *   TOMBSTONE (1 + 12 + 2 + 2*A + 4 bytes):
 *     0   1  tag
 *     1  12  head, as above
 *    13   2  zone
 *    15  2A  orig src, orig dst
 *     .   4  orig sport, orig dport
 *
 * TRAILER (after the END tag, 8 bytes):
 *     0   4  count: entries written (must equal the header's unless that is 0xFFFFFFFF)
 *     4   4  CRC-32 (IEEE 802.3, as zlib computes it) of every byte before this field
 *
 * Nothing may follow the trailer. The table-owned words of a record (R_SEQ,
 * R_EXT, R_NEXT) never travel; the version of each entry does, for
 * diagnosis and range checks, though a receiving table stamps its own.
 */

import { EXT_PARTS, extWireBytes } from './flow';

export const MAGIC = Uint8Array.of(0x89, 0x43, 0x54, 0x4d, 0x53, 0x4e, 0x41, 0x50);
/** The one format version this build writes and reads. */
export const FORMAT_VERSION = 1;

export const HEADER_BYTES = 32;
export const H_MAGIC = 0;
export const H_VERSION = 8;
export const H_FLAGS = 10;
export const H_KIND = 12;
export const H_FROM = 16;
export const H_TO = 22;
export const H_COUNT = 28;

/** Header count meaning "not known when the header was written". */
export const COUNT_UNKNOWN = 0xffffffff;

/** What a stream holds. */
export const enum SnapshotKind {
  /** Live entries with version <= to: a pre-copy snapshot. */
  Snapshot = 1,
  /** Live entries and tombstones with from < version <= to: what changed. */
  Delta = 2,
}

export const enum EntryTag {
  Live = 0x01,
  LiveExt = 0x02,
  Tombstone = 0x03,
  End = 0xff,
}

/** Bytes of the head copied from record offset 4 (R_VERSION_LO .. R_PAD). */
export const HEAD_BYTES = 12;
/** Offsets inside the head (relative to head start). */
export const HD_FLAGS = 6;
export const HD_FAMILY = 7;
export const HD_ZONE_DIR = 10;
export const HD_PAD = 11;
/** Bytes of the tail copied from record offset R_ORIG_SPORT (80) to R_ID + 4 (116). */
export const TAIL_BYTES = 36;

/** Trailer bytes after the END tag. */
export const TRAILER_BYTES = 8;

/** Record flag bits a snapshot may carry (HasProtoInfo .. HasId). */
export const ENTRY_FLAGS = 4 | 8 | 16 | 32 | 64;
/** Every ExtFlag bit version 1 knows (0x3ff). */
export const EXT_KNOWN = EXT_PARTS.reduce((bits, part) => bits | part.flag, 0);

/** Encoded size of each extension part, indexed by bit number: 16, 16, 12, 12, 12, 38, 32, 16, 4, 4. */
export const EXT_PART_BYTES: readonly number[] = EXT_PARTS.map(extWireBytes);

/** Largest possible entry (IPv6 with every extension part: 162 bytes of them). */
export const MAX_ENTRY_BYTES = 1 + HEAD_BYTES + 64 + TAIL_BYTES + 2 + EXT_PART_BYTES.reduce((a, b) => a + b, 0);

/** Byte length of a LIVE entry without its extension parts. */
export function liveBaseBytes(family: number): number {
  return 1 + HEAD_BYTES + (family === 2 ? 16 : 64) + TAIL_BYTES;
}

/** Byte length of a TOMBSTONE entry. */
export function tombstoneBytes(family: number): number {
  return 1 + HEAD_BYTES + 2 + (family === 2 ? 8 : 32) + 4;
}

/** Bytes of the extension parts `present` names (without the 2-byte present field). */
export function extPartsBytes(present: number): number {
  let n = 0;
  for (let i = 0; i < EXT_PART_BYTES.length; i++) if (present & (1 << i)) n += EXT_PART_BYTES[i];
  return n;
}

/**
 * Why 16 helper-name bytes at `off` are not a valid name, or null when they
 * are: 1..15 printable ASCII characters, a NUL, NULs to the end.
 */
export function helperNameProblem(b: Uint8Array, off: number): string | null {
  let i = 0;
  while (i < 16 && b[off + i] !== 0) {
    const c = b[off + i];
    if (c < 0x21 || c > 0x7e) return `helper name has a non-printable byte 0x${c.toString(16).padStart(2, '0')}`;
    i++;
  }
  if (i === 0) return 'helper name is empty';
  if (i === 16) return 'helper name is not NUL-terminated';
  for (let j = i + 1; j < 16; j++) if (b[off + j] !== 0) return 'helper name has bytes after its NUL';
  return null;
}

export function kindName(kind: SnapshotKind): 'snapshot' | 'delta' {
  return kind === SnapshotKind.Delta ? 'delta' : 'snapshot';
}
