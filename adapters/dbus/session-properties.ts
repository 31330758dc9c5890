import { SessionInfo, SessionRole, SessionState } from '../../plugin/migration-service';

type Key = keyof SessionInfo;

/** One property of org.ctmigrate1.Session: D-Bus name, signature, SessionInfo field. */
export interface SessionProperty {
  name: string;
  signature: 's' | 't' | 'b';
  key: Key;
}

/** The Session interface's properties, in introspection order. */
export const SESSION_PROPERTIES: readonly SessionProperty[] = [
  { name: 'Id', signature: 's', key: 'id' },
  { name: 'Role', signature: 's', key: 'role' },
  { name: 'Vm', signature: 's', key: 'vm' },
  { name: 'State', signature: 's', key: 'state' },
  { name: 'Peer', signature: 's', key: 'peer' },
  { name: 'Sent', signature: 't', key: 'sent' },
  { name: 'Received', signature: 't', key: 'received' },
  { name: 'Committed', signature: 't', key: 'committed' },
  { name: 'Refused', signature: 't', key: 'refused' },
  { name: 'Bytes', signature: 't', key: 'bytes' },
  { name: 'Blocked', signature: 'b', key: 'blocked' },
  { name: 'ReadyWhen', signature: 's', key: 'readyWhen' },
  { name: 'Version', signature: 't', key: 'version' },
  { name: 'CreatedAt', signature: 't', key: 'createdAt' },
  { name: 'UpdatedAt', signature: 't', key: 'updatedAt' },
  { name: 'CutoverAt', signature: 't', key: 'cutoverAt' },
  { name: 'ReadyAt', signature: 't', key: 'readyAt' },
  { name: 'ResumedAt', signature: 't', key: 'resumedAt' },
  { name: 'Error', signature: 's', key: 'error' },
  { name: 'Path', signature: 's', key: 'path' },
  { name: 'Route', signature: 's', key: 'route' },
];

export type WireValue = string | number | boolean;

/**
 * The value as it goes on the wire. A uint64 that is negative, fractional or
 * not a number would make dbus-next throw while emitting, so it is clamped.
 */
export function wireValue(info: SessionInfo, p: SessionProperty): WireValue {
  const v = info[p.key];
  if (p.signature === 't') {
    const n = typeof v === 'number' && Number.isFinite(v) ? Math.trunc(v) : 0;
    return n < 0 ? 0 : n;
  }
  if (p.signature === 'b') return v === true;
  return String(v);
}

/** The properties whose wire values differ between two snapshots of a session. */
export function changedProperties(before: SessionInfo, after: SessionInfo): Record<string, WireValue> {
  const out: Record<string, WireValue> = {};
  for (const p of SESSION_PROPERTIES) {
    const a = wireValue(before, p);
    const b = wireValue(after, p);
    if (a !== b) out[p.name] = b;
  }
  return out;
}

const ROLES: readonly string[] = ['source', 'destination'] satisfies SessionRole[];
const STATES: readonly string[] = ['preparing', 'precopy', 'streaming', 'cutover', 'ready', 'migrated', 'failed'] satisfies SessionState[];

/** A property value that does not fit the Session interface (a daemon of another version?). */
export class SessionPropertyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SessionPropertyError';
  }
}

/**
 * Apply received properties (name → unwrapped variant value) onto a
 * SessionInfo. Unknown names are ignored, so a newer daemon may add some.
 */
export function applyWireProperties(target: SessionInfo, values: Record<string, unknown>): SessionInfo {
  const out: SessionInfo = { ...target };
  const writable = out as unknown as Record<Key, WireValue>;
  for (const p of SESSION_PROPERTIES) {
    if (!(p.name in values)) continue;
    const v = values[p.name];
    if (p.signature === 't') {
      if (typeof v !== 'bigint' && typeof v !== 'number') throw new SessionPropertyError(`session property ${p.name} is not a number`);
      writable[p.key] = Number(v);
    } else if (p.signature === 'b') {
      if (typeof v !== 'boolean') throw new SessionPropertyError(`session property ${p.name} is not a boolean`);
      writable[p.key] = v;
    } else {
      if (typeof v !== 'string') throw new SessionPropertyError(`session property ${p.name} is not a string`);
      writable[p.key] = v;
    }
  }
  if (!ROLES.includes(out.role)) throw new SessionPropertyError(`session role ${JSON.stringify(out.role)} is unknown`);
  if (!STATES.includes(out.state)) throw new SessionPropertyError(`session state ${JSON.stringify(out.state)} is unknown`);
  return out;
}

/** A SessionInfo with every field at its zero value, to fill from the wire. */
export function emptySessionInfo(): SessionInfo {
  return {
    id: '', role: 'source', vm: '', state: 'preparing', peer: '', sent: 0, received: 0, committed: 0, refused: 0,
    bytes: 0, blocked: false, readyWhen: '', version: 0, createdAt: 0, updatedAt: 0, cutoverAt: 0, readyAt: 0, resumedAt: 0, error: '', path: '', route: '',
  };
}
