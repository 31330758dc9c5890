import { CUTOVER_PATHS, CutoverPath } from './cutover-path';
import { formatBytes } from './byte-size';
import { AF_INET } from './flow';
import { formatAddress, parseAddress } from './address';

/**
 * The peer protocol: what two ctmigrate daemons say to each other, and its
 * binary form. Pure: no sockets, no clocks. The transport (TLS, framing,
 * limits, backpressure) lives in adapters/peer.
 *
 * Wire form of one frame (all integers big-endian):
 *
 *   u32 payload length | u8 kind | payload
 *
 * The length counts the payload only, so a reader can refuse an oversized
 * frame from its first five bytes, before it allocates anything. Payload
 * fields: versions are u64 (refused above 2^53 so they stay exact numbers),
 * strings are u16 length + UTF-8, a VM UUID is its 16 bytes, an address is
 * u8 family (4|6) + 4|16 bytes, and a message's opaque bytes (snapshot codec
 * output) fill the rest of the payload, so they decode without a copy.
 *
 * One connection carries one session: Hello both ways, then Start (or
 * Resume) from the destination, Offer from the source, Snapshot chunks (not
 * after a resume), Changes in version order, Final, Close. A "who has VM X?"
 * query (WhoHas / HasVm) may be the only exchange of a connection, and so
 * may a container's packed state (ContainerState / ContainerHeld, see
 * criu-action.ts).
 */

/** The protocol this build speaks; Hello carries it and a peer with another one is refused. */
export const PROTOCOL_VERSION = 1;

/** Bytes before a frame's payload: u32 length + u8 kind. */
export const FRAME_HEADER_BYTES = 5;

/** Default largest payload a receiver accepts: big enough for 1 MiB snapshot chunks with room to spare. */
export const DEFAULT_MAX_FRAME_BYTES = 4 << 20;

/** Smallest limit a peer may announce: every control message fits in it. */
export const MIN_MAX_FRAME_BYTES = 4096;

/** Largest version the protocol carries (exact in a JavaScript number). */
export const MAX_VERSION = Number.MAX_SAFE_INTEGER;

/** Longest digest a Final carries (SHA-512). */
export const MAX_DIGEST_BYTES = 64;

/** Most addresses one session may name; a VM with more is a configuration mistake. */
export const MAX_SESSION_ADDRESSES = 255;

/** Frame kinds on the wire. Numbers are forever: add, never renumber. */
export enum MessageKind {
  Hello = 1,
  Start = 2,
  Offer = 3,
  SnapshotChunk = 4,
  Changes = 5,
  Final = 6,
  Ack = 7,
  Resume = 8,
  Error = 9,
  Close = 10,
  WhoHas = 11,
  HasVm = 12,
  ContainerState = 13,
  ContainerHeld = 14,
}

/** Why a peer dialled (or that it is the listening side). */
export enum PeerRole {
  /** The accepting daemon, before a Start or Resume gives it a role. */
  Listener = 0,
  /** Pulls a VM's state: the host the VM migrates to. */
  Destination = 1,
  /** Streams a VM's state: the host the VM runs on. */
  Source = 2,
  /** Only asks "who has VM X?". */
  Query = 3,
}

/** What an Error message reports. */
export enum PeerErrorCode {
  /** The other side broke the protocol (order, format). */
  Protocol = 1,
  /** Another protocol version. */
  Version = 2,
  /** Policy: the request is not allowed (foreign addresses, unknown VM). */
  Refused = 3,
  /** No such session (Resume of a session the source forgot). */
  UnknownSession = 4,
  /** The source no longer has what a resume needs (tombstones pruned). */
  CannotResume = 5,
  /** This host does not run the VM. */
  NotSource = 6,
  /** A size or count limit. */
  Limit = 7,
  /** Something failed on this side; the text says what. */
  Internal = 8,
}

/** Why a session's connection ends. */
export enum CloseReason {
  /** Everything was delivered; nothing more will come. */
  Done = 0,
  /** The migration succeeded. */
  Migrated = 1,
  /** The migration failed; both sides roll back. */
  Failed = 2,
  /** Cancelled by an operator or libvirt. */
  Cancelled = 3,
}

/** Conntrack mark selection of a session: entries with (mark & mask) == value. */
export interface MarkMatch {
  value: number;
  mask: number;
}

/** Which connections a session carries: the VM and the addresses, zone and mark that are its own. */
export interface SessionScope {
  sessionId: string;
  /** libvirt domain UUID, lower-case with dashes. */
  vm: string;
  /** The VM's IPv4/IPv6 addresses, canonical text form. */
  addresses: string[];
  zone?: number;
  mark?: MarkMatch;
}

/** First frame both ways: who is talking and what it can take. */
export interface HelloMessage {
  kind: MessageKind.Hello;
  protocol: number;
  role: PeerRole;
  /** Largest payload the sender accepts; the other side must not send more. */
  maxFrameBytes: number;
  /** The sender's host id (free text, for logs and status). */
  hostId: string;
}

/** Destination → source: start streaming this VM's state to me. */
export interface StartMessage extends SessionScope {
  kind: MessageKind.Start;
}

/** Source → destination: accepted; this is what will come. */
export interface OfferMessage extends SessionScope {
  kind: MessageKind.Offer;
  /** Version of the snapshot (fresh session) or the first version after a resume point. */
  snapshotVersion: number;
  /** Entries the snapshot holds when known: readiness "fraction" counts against it. */
  announcedEntries: number | null;
  /** Set when this answers a Resume: no snapshot follows, changes start after this version. */
  resumeFrom: number | null;
  /** How the source will hand over the residual delta (absent: not said). */
  cutoverPath?: CutoverPath;
}

/** One piece of the snapshot stream (snapshot codec bytes), in order from seq 0. */
export interface SnapshotChunkMessage {
  kind: MessageKind.SnapshotChunk;
  seq: number;
  /** Set on the chunk that ends the snapshot stream. */
  last: boolean;
  /**
   * Set on an empty chunk after a switchover during the snapshot: every
   * established TCP entry the snapshot still had came before it (the
   * changes since the snapshot came first; see snapshot-shipment.ts).
   */
  established?: boolean;
  bytes: Uint8Array;
}

/** A delta (snapshot codec bytes) covering versions (from, to]. */
export interface ChangesMessage {
  kind: MessageKind.Changes;
  from: number;
  to: number;
  bytes: Uint8Array;
}

/** The residual delta at cut-over: versions (from, to], `to` is the final version. */
export interface FinalMessage {
  kind: MessageKind.Final;
  from: number;
  to: number;
  /** Digest of the session's state at the final version (what the vmstate reference carries). */
  digest: Uint8Array;
  bytes: Uint8Array;
}

/** Receiver → sender: progress, for the sender's window and for a later resume. */
export interface AckMessage {
  kind: MessageKind.Ack;
  /** Payload bytes of data frames the receiver has taken so far on this connection. */
  bytes: number;
  /** Highest version the receiver has taken. */
  received: number;
  /** Highest version the receiver has committed (to its table or the kernel). */
  committed: number;
}

/** Destination → source after a reconnect: continue after `lastVersion`. */
export interface ResumeMessage {
  kind: MessageKind.Resume;
  sessionId: string;
  vm: string;
  lastVersion: number;
}

/** Either side: the request or the session failed; the text says why, for an operator. */
export interface ErrorMessage {
  kind: MessageKind.Error;
  code: PeerErrorCode;
  text: string;
}

/** Either side: the session ends. */
export interface CloseMessage {
  kind: MessageKind.Close;
  reason: CloseReason;
  text: string;
}

/** "Do you run VM X?" — how a destination finds the source among its peers. */
export interface WhoHasMessage {
  kind: MessageKind.WhoHas;
  queryId: number;
  vm: string;
}

/** The answer to WhoHas. */
export interface HasVmMessage {
  kind: MessageKind.HasVm;
  queryId: number;
  vm: string;
  has: boolean;
}

/** Longest container id and manifest text a ContainerState carries (the manifest's own limit, in a u16 length). */
export const MAX_CONTAINER_ID_BYTES = 64;
export const MAX_CONTAINER_MANIFEST_BYTES = 65535;

/**
 * Source → destination, at CRIU's network-lock when the destination is
 * known: a container's packed state (ctmigrate.json and ctmigrate.ctm), to
 * hold for the container's restore there.
 */
export interface ContainerStateMessage {
  kind: MessageKind.ContainerState;
  container: string;
  /** ctmigrate.json's text. */
  manifest: string;
  /** ctmigrate.ctm's bytes (snapshot codec). */
  bytes: Uint8Array;
}

/** The answer to ContainerState: the destination holds it (a refusal is an Error). */
export interface ContainerHeldMessage {
  kind: MessageKind.ContainerHeld;
  container: string;
}

/** Everything a peer may send. */
export type PeerMessage =
  | HelloMessage
  | StartMessage
  | OfferMessage
  | SnapshotChunkMessage
  | ChangesMessage
  | FinalMessage
  | AckMessage
  | ResumeMessage
  | ErrorMessage
  | CloseMessage
  | WhoHasMessage
  | HasVmMessage
  | ContainerStateMessage
  | ContainerHeldMessage;

/** Messages that carry session data and count against the sender's window. */
export type DataMessage = SnapshotChunkMessage | ChangesMessage | FinalMessage;

/** Whether a message carries session data (snapshot, changes, final delta). */
export function isDataMessage(m: PeerMessage): m is DataMessage {
  return m.kind === MessageKind.SnapshotChunk || m.kind === MessageKind.Changes || m.kind === MessageKind.Final;
}

/** Name of a frame kind for messages ("Changes", "kind 200"). */
export function messageKindName(kind: number): string {
  const n = (MessageKind as Record<number, string | undefined>)[kind];
  return n ?? `kind ${kind}`;
}

/** What was wrong with received bytes. */
export type PeerProblem =
  /** The frame is bigger than the receiver's limit. */
  | 'oversize'
  /** A frame kind this build does not know. */
  | 'kind'
  /** The payload ended before the message did. */
  | 'truncated'
  /** Bytes after the message's last field. */
  | 'trailing'
  /** A field holds a value the protocol does not allow. */
  | 'malformed'
  /** A valid message at the wrong moment (data before Offer, versions out of order). */
  | 'order'
  /** Another protocol version. */
  | 'version';

/**
 * Bytes from a peer are not acceptable. The message is a predicate ("sent a
 * frame of 9 MiB (limit 4 MiB)") so the transport can prefix the peer's
 * address; nothing of the frame has been acted upon.
 */
export class PeerProtocolError extends Error {
  constructor(
    readonly problem: PeerProblem,
    message: string,
    /** Kind of the frame at fault, when known. */
    readonly frameKind = -1,
  ) {
    super(message);
    this.name = 'PeerProtocolError';
  }
}

/** The error for a frame header announcing more than `limit` bytes. */
export function oversizeError(payloadBytes: number, limit: number, kind: number): PeerProtocolError {
  return new PeerProtocolError(
    'oversize',
    `sent a frame of ${formatBytes(payloadBytes)} (limit ${formatBytes(limit)})`,
    kind,
  );
}

// ---------------------------------------------------------------------------
// Encoding

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const utf8 = new TextEncoder();
const utf8Strict = new TextDecoder('utf-8', { fatal: true });

/** Growable big-endian writer for the fixed fields of one message. */
class FieldWriter {
  private buf = Buffer.allocUnsafe(256);
  pos = FRAME_HEADER_BYTES;

  private room(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + n));
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }
  u8(v: number): void {
    this.room(1);
    this.buf[this.pos++] = v;
  }
  u16(v: number): void {
    this.room(2);
    this.buf.writeUInt16BE(v, this.pos);
    this.pos += 2;
  }
  u32(v: number): void {
    this.room(4);
    this.buf.writeUInt32BE(v >>> 0, this.pos);
    this.pos += 4;
  }
  version(field: string, v: number): void {
    if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`${field} ${v} is not a version (0..2^53-1)`);
    this.u32(Math.floor(v / 0x1_0000_0000));
    this.u32(v % 0x1_0000_0000);
  }
  str(field: string, s: string, max = 0xffff): void {
    const b = utf8.encode(s);
    if (b.length > max) throw new RangeError(`${field} is ${b.length} bytes (limit ${max})`);
    this.u16(b.length);
    this.raw(b);
  }
  raw(b: Uint8Array): void {
    this.room(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }
  uuid(field: string, s: string): void {
    if (!UUID_RE.test(s)) throw new RangeError(`${field} ${JSON.stringify(s)} is not a UUID`);
    this.raw(Buffer.from(s.replace(/-/g, ''), 'hex'));
  }
  address(s: string): void {
    const a = parseAddress(s);
    this.u8(a.family === AF_INET ? 4 : 6);
    this.raw(a.bytes);
  }
  /** Header for a payload of the fields written plus `tail` opaque bytes. */
  finish(kind: MessageKind, tail: number): Buffer {
    const payload = this.pos - FRAME_HEADER_BYTES + tail;
    this.buf.writeUInt32BE(payload, 0);
    this.buf[4] = kind;
    return this.buf.subarray(0, this.pos);
  }
}

function checkU32(field: string, v: number): void {
  if (!Number.isInteger(v) || v < 0 || v > 0xffff_ffff) throw new RangeError(`${field} ${v} is out of range (u32)`);
}

function writeScope(w: FieldWriter, s: SessionScope): void {
  w.str('session id', s.sessionId, 255);
  w.uuid('VM UUID', s.vm);
  if (s.addresses.length > MAX_SESSION_ADDRESSES)
    throw new RangeError(`a session names ${s.addresses.length} addresses (limit ${MAX_SESSION_ADDRESSES})`);
  w.u8(s.addresses.length);
  for (const a of s.addresses) w.address(a);
  w.u8((s.zone !== undefined ? 1 : 0) | (s.mark !== undefined ? 2 : 0));
  if (s.zone !== undefined) {
    if (!Number.isInteger(s.zone) || s.zone < 0 || s.zone > 0xffff) throw new RangeError(`zone ${s.zone} is out of range (0..65535)`);
    w.u16(s.zone);
  }
  if (s.mark !== undefined) {
    checkU32('mark value', s.mark.value);
    checkU32('mark mask', s.mark.mask);
    w.u32(s.mark.value);
    w.u32(s.mark.mask);
  }
}

/**
 * Encode one message as frame parts: the header with every fixed field, then
 * (for data messages) the caller's opaque bytes untouched, so a 1 MiB chunk
 * is never copied. Write the parts in order. Throws RangeError for a message
 * that cannot be represented (bad UUID, version out of range) or whose
 * payload exceeds `maxFrameBytes` (the receiver's announced limit).
 */
export function encodeFrame(m: PeerMessage, maxFrameBytes = DEFAULT_MAX_FRAME_BYTES): Uint8Array[] {
  const w = new FieldWriter();
  let tail: Uint8Array | null = null;
  switch (m.kind) {
    case MessageKind.Hello:
      w.u16(m.protocol);
      w.u8(m.role);
      checkU32('max frame bytes', m.maxFrameBytes);
      w.u32(m.maxFrameBytes);
      w.str('host id', m.hostId, 255);
      break;
    case MessageKind.Start:
      writeScope(w, m);
      break;
    case MessageKind.Offer:
      writeScope(w, m);
      w.version('snapshot version', m.snapshotVersion);
      if (m.announcedEntries !== null) checkU32('announced entries', m.announcedEntries);
      w.u8((m.announcedEntries !== null ? 1 : 0) | (m.resumeFrom !== null ? 2 : 0) | (m.cutoverPath !== undefined ? 4 : 0));
      if (m.announcedEntries !== null) w.u32(m.announcedEntries);
      if (m.resumeFrom !== null) w.version('resume point', m.resumeFrom);
      if (m.cutoverPath !== undefined) {
        const path = CUTOVER_PATHS.indexOf(m.cutoverPath);
        if (path < 0) throw new RangeError(`cut-over path ${JSON.stringify(m.cutoverPath)} is unknown`);
        w.u8(path);
      }
      break;
    case MessageKind.SnapshotChunk:
      checkU32('chunk number', m.seq);
      w.u32(m.seq);
      w.u8((m.last ? 1 : 0) | (m.established ? 2 : 0));
      tail = m.bytes;
      break;
    case MessageKind.Changes:
      checkRange(m.from, m.to);
      w.version('from', m.from);
      w.version('to', m.to);
      tail = m.bytes;
      break;
    case MessageKind.Final:
      checkRange(m.from, m.to);
      w.version('from', m.from);
      w.version('to', m.to);
      if (m.digest.length > MAX_DIGEST_BYTES) throw new RangeError(`digest is ${m.digest.length} bytes (limit ${MAX_DIGEST_BYTES})`);
      w.u8(m.digest.length);
      w.raw(m.digest);
      tail = m.bytes;
      break;
    case MessageKind.Ack:
      w.version('acked bytes', m.bytes);
      w.version('received version', m.received);
      w.version('committed version', m.committed);
      break;
    case MessageKind.Resume:
      w.str('session id', m.sessionId, 255);
      w.uuid('VM UUID', m.vm);
      w.version('last version', m.lastVersion);
      break;
    case MessageKind.Error:
      w.u16(m.code);
      w.str('error text', m.text, 4096);
      break;
    case MessageKind.Close:
      w.u8(m.reason);
      w.str('close text', m.text, 4096);
      break;
    case MessageKind.WhoHas:
      checkU32('query id', m.queryId);
      w.u32(m.queryId);
      w.uuid('VM UUID', m.vm);
      break;
    case MessageKind.HasVm:
      checkU32('query id', m.queryId);
      w.u32(m.queryId);
      w.uuid('VM UUID', m.vm);
      w.u8(m.has ? 1 : 0);
      break;
    case MessageKind.ContainerState:
      w.str('container id', m.container, MAX_CONTAINER_ID_BYTES);
      w.str('manifest', m.manifest, MAX_CONTAINER_MANIFEST_BYTES);
      tail = m.bytes;
      break;
    case MessageKind.ContainerHeld:
      w.str('container id', m.container, MAX_CONTAINER_ID_BYTES);
      break;
    default:
      throw new RangeError(`cannot encode ${messageKindName((m as { kind: number }).kind)}`);
  }
  const tailBytes = tail?.length ?? 0;
  const head = w.finish(m.kind, tailBytes);
  const payload = head.length - FRAME_HEADER_BYTES + tailBytes;
  if (payload > maxFrameBytes)
    throw new RangeError(`${messageKindName(m.kind)} frame of ${formatBytes(payload)} exceeds the peer's limit of ${formatBytes(maxFrameBytes)}; send smaller chunks`);
  return tail && tail.length ? [head, tail] : [head];
}

/** encodeFrame as one buffer (tests, small messages). */
export function encodeFrameBytes(m: PeerMessage, maxFrameBytes = DEFAULT_MAX_FRAME_BYTES): Buffer {
  return Buffer.concat(encodeFrame(m, maxFrameBytes));
}

function checkRange(from: number, to: number): void {
  if (from > to) throw new RangeError(`version range is backwards: from ${from} > to ${to}`);
}

// ---------------------------------------------------------------------------
// Decoding

/** Bounds-checked reader over one payload; every failure is a PeerProtocolError. */
class FieldReader {
  private pos = 0;
  constructor(
    private readonly p: Uint8Array,
    private readonly kind: MessageKind,
  ) {}

  private need(n: number, what: string): void {
    if (this.pos + n > this.p.length)
      throw new PeerProtocolError(
        'truncated',
        `sent a truncated ${messageKindName(this.kind)} frame (${what} at byte ${this.pos} needs ${n} bytes, ${this.p.length - this.pos} left)`,
        this.kind,
      );
  }
  bad(what: string): PeerProtocolError {
    return new PeerProtocolError('malformed', `sent a ${messageKindName(this.kind)} frame with ${what}`, this.kind);
  }
  u8(what: string): number {
    this.need(1, what);
    return this.p[this.pos++];
  }
  u16(what: string): number {
    this.need(2, what);
    const v = (this.p[this.pos] << 8) | this.p[this.pos + 1];
    this.pos += 2;
    return v;
  }
  u32(what: string): number {
    this.need(4, what);
    const p = this.p;
    const i = this.pos;
    this.pos += 4;
    return p[i] * 0x100_0000 + ((p[i + 1] << 16) | (p[i + 2] << 8) | p[i + 3]);
  }
  version(what: string): number {
    const hi = this.u32(what);
    const lo = this.u32(what);
    if (hi > 0x1f_ffff) throw this.bad(`${what} beyond 2^53`);
    return hi * 0x1_0000_0000 + lo;
  }
  bytes(n: number, what: string): Uint8Array {
    this.need(n, what);
    const b = this.p.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }
  str(what: string): string {
    const n = this.u16(`${what} length`);
    const b = this.bytes(n, what);
    try {
      return utf8Strict.decode(b);
    } catch {
      throw this.bad(`${what} that is not UTF-8`);
    }
  }
  uuid(what: string): string {
    const h = Buffer.from(this.bytes(16, what)).toString('hex');
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }
  address(): string {
    const f = this.u8('address family');
    if (f !== 4 && f !== 6) throw this.bad(`address family ${f}`);
    const len = f === 4 ? 4 : 16;
    return formatAddress(this.bytes(len, 'address'), 0, len);
  }
  flag(what: string): boolean {
    const v = this.u8(what);
    if (v > 1) throw this.bad(`${what} ${v}`);
    return v === 1;
  }
  /** The opaque remainder of the payload (no copy). */
  rest(): Uint8Array {
    const b = this.p.subarray(this.pos);
    this.pos = this.p.length;
    return b;
  }
  end(): void {
    if (this.pos !== this.p.length)
      throw new PeerProtocolError('trailing', `sent a ${messageKindName(this.kind)} frame with ${this.p.length - this.pos} trailing bytes`, this.kind);
  }
}

function readScope(r: FieldReader): SessionScope {
  const sessionId = r.str('session id');
  if (sessionId === '') throw r.bad('an empty session id');
  const vm = r.uuid('VM UUID');
  const n = r.u8('address count');
  const addresses: string[] = [];
  for (let i = 0; i < n; i++) addresses.push(r.address());
  const flags = r.u8('scope flags');
  if (flags > 3) throw r.bad(`scope flags 0x${flags.toString(16)}`);
  const s: SessionScope = { sessionId, vm, addresses };
  if (flags & 1) s.zone = r.u16('zone');
  if (flags & 2) s.mark = { value: r.u32('mark value'), mask: r.u32('mark mask') };
  return s;
}

function readEnum<T extends number>(r: FieldReader, e: Record<number, string | undefined>, what: string, v: number): T {
  if (e[v] === undefined) throw r.bad(`unknown ${what} ${v}`);
  return v as T;
}

/**
 * Decode one frame's payload. Data messages' `bytes` are views into
 * `payload` (no copy): keep the payload alive as long as them. Every
 * problem is a PeerProtocolError; nothing else is thrown for any input.
 */
export function decodePayload(kind: number, payload: Uint8Array): PeerMessage {
  if ((MessageKind as Record<number, string | undefined>)[kind] === undefined)
    throw new PeerProtocolError('kind', `sent a frame of unknown kind ${kind}`, kind);
  const k = kind as MessageKind;
  const r = new FieldReader(payload, k);
  let m: PeerMessage;
  switch (k) {
    case MessageKind.Hello: {
      const protocol = r.u16('protocol version');
      const role = readEnum<PeerRole>(r, PeerRole, 'role', r.u8('role'));
      const maxFrameBytes = r.u32('max frame bytes');
      if (maxFrameBytes < MIN_MAX_FRAME_BYTES) throw r.bad(`a frame limit of ${maxFrameBytes} bytes (minimum ${MIN_MAX_FRAME_BYTES})`);
      m = { kind: k, protocol, role, maxFrameBytes, hostId: r.str('host id') };
      break;
    }
    case MessageKind.Start:
      m = { kind: k, ...readScope(r) };
      break;
    case MessageKind.Offer: {
      const scope = readScope(r);
      const snapshotVersion = r.version('snapshot version');
      const flags = r.u8('offer flags');
      if (flags > 7) throw r.bad(`offer flags 0x${flags.toString(16)}`);
      const announcedEntries = flags & 1 ? r.u32('announced entries') : null;
      const resumeFrom = flags & 2 ? r.version('resume point') : null;
      const offer: OfferMessage = { kind: k, ...scope, snapshotVersion, announcedEntries, resumeFrom };
      if (flags & 4) {
        const path = r.u8('cut-over path');
        const name = CUTOVER_PATHS[path];
        if (name === undefined) throw r.bad(`cut-over path ${path}`);
        offer.cutoverPath = name;
      }
      m = offer;
      break;
    }
    case MessageKind.SnapshotChunk: {
      const seq = r.u32('chunk number');
      const flags = r.u8('chunk flags');
      if (flags > 3) throw r.bad(`chunk flags ${flags}`);
      const chunk: SnapshotChunkMessage = { kind: k, seq, last: (flags & 1) !== 0, bytes: r.rest() };
      if (flags & 2) {
        if (chunk.bytes.length > 0 || chunk.last) throw r.bad('an established-entries mark on a chunk that carries entries or ends the snapshot');
        chunk.established = true;
      }
      m = chunk;
      break;
    }
    case MessageKind.Changes: {
      const from = r.version('from version');
      const to = r.version('to version');
      if (from > to) throw r.bad(`a backwards range (${from}, ${to}]`);
      m = { kind: k, from, to, bytes: r.rest() };
      break;
    }
    case MessageKind.Final: {
      const from = r.version('from version');
      const to = r.version('to version');
      if (from > to) throw r.bad(`a backwards range (${from}, ${to}]`);
      const dl = r.u8('digest length');
      if (dl > MAX_DIGEST_BYTES) throw r.bad(`a ${dl}-byte digest (limit ${MAX_DIGEST_BYTES})`);
      const digest = r.bytes(dl, 'digest');
      m = { kind: k, from, to, digest, bytes: r.rest() };
      break;
    }
    case MessageKind.Ack:
      m = { kind: k, bytes: r.version('acked bytes'), received: r.version('received version'), committed: r.version('committed version') };
      break;
    case MessageKind.Resume: {
      const sessionId = r.str('session id');
      if (sessionId === '') throw r.bad('an empty session id');
      m = { kind: k, sessionId, vm: r.uuid('VM UUID'), lastVersion: r.version('last version') };
      break;
    }
    case MessageKind.Error: {
      const code = readEnum<PeerErrorCode>(r, PeerErrorCode, 'error code', r.u16('error code'));
      m = { kind: k, code, text: r.str('error text') };
      break;
    }
    case MessageKind.Close: {
      const reason = readEnum<CloseReason>(r, CloseReason, 'close reason', r.u8('close reason'));
      m = { kind: k, reason, text: r.str('close text') };
      break;
    }
    case MessageKind.WhoHas:
      m = { kind: k, queryId: r.u32('query id'), vm: r.uuid('VM UUID') };
      break;
    case MessageKind.HasVm:
      m = { kind: k, queryId: r.u32('query id'), vm: r.uuid('VM UUID'), has: r.flag('answer') };
      break;
    case MessageKind.ContainerState: {
      const container = r.str('container id');
      if (container === '' || Buffer.byteLength(container) > MAX_CONTAINER_ID_BYTES) throw r.bad(`a container id of ${Buffer.byteLength(container)} bytes (1 to ${MAX_CONTAINER_ID_BYTES})`);
      m = { kind: k, container, manifest: r.str('manifest'), bytes: r.rest() };
      break;
    }
    case MessageKind.ContainerHeld: {
      const container = r.str('container id');
      if (container === '' || Buffer.byteLength(container) > MAX_CONTAINER_ID_BYTES) throw r.bad(`a container id of ${Buffer.byteLength(container)} bytes (1 to ${MAX_CONTAINER_ID_BYTES})`);
      m = { kind: k, container };
      break;
    }
  }
  r.end();
  return m;
}

/**
 * Decode a whole frame (header + payload) held in one buffer: tests and
 * tools. Streams use a frame reader that checks the limit from the header.
 */
export function decodeFrame(frame: Uint8Array, maxFrameBytes = DEFAULT_MAX_FRAME_BYTES): PeerMessage {
  if (frame.length < FRAME_HEADER_BYTES)
    throw new PeerProtocolError('truncated', `sent a truncated frame header (${frame.length} of ${FRAME_HEADER_BYTES} bytes)`);
  const len = frame[0] * 0x100_0000 + ((frame[1] << 16) | (frame[2] << 8) | frame[3]);
  const kind = frame[4];
  if (len > maxFrameBytes) throw oversizeError(len, maxFrameBytes, kind);
  if (frame.length < FRAME_HEADER_BYTES + len)
    throw new PeerProtocolError('truncated', `sent a truncated ${messageKindName(kind)} frame (${frame.length - FRAME_HEADER_BYTES} of ${len} payload bytes)`, kind);
  if (frame.length > FRAME_HEADER_BYTES + len)
    throw new PeerProtocolError('trailing', `sent ${frame.length - FRAME_HEADER_BYTES - len} bytes after a ${messageKindName(kind)} frame`, kind);
  return decodePayload(kind, frame.subarray(FRAME_HEADER_BYTES));
}

/**
 * Whether a source can resume a session for a destination that holds
 * everything up to `lastVersion`. The source must still have every change
 * after it, tombstones included; `prunedUpTo` is the newest version whose
 * tombstones it may already have dropped. Returns the operator's reason
 * when it cannot, null when it can.
 */
export function resumeProblem(lastVersion: number, prunedUpTo: number, current: number): string | null {
  if (lastVersion > current)
    return `cannot resume: the destination claims version ${lastVersion} but the source is only at ${current}`;
  if (lastVersion < prunedUpTo)
    return `cannot resume: the source no longer has tombstones up to version ${prunedUpTo} and the destination has only up to ${lastVersion}; start a new session`;
  return null;
}
