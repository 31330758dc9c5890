import * as dbus from 'dbus-next';
import { SessionInfo } from '../../plugin/migration-service';
import { SESSION_INTERFACE } from './names';
import { asDbusCall } from './service-errors';
import { changedProperties, SESSION_PROPERTIES, SessionProperty, wireValue } from './session-properties';

/**
 * `org.ctmigrate1.Session`: one migration session's SessionInfo as
 * read-only properties. Reads always see the latest info; PropertiesChanged
 * goes out only when publish() is called (the owner rate-limits it).
 */
export class SessionObject extends dbus.interface.Interface {
  /** What subscribers were last told. */
  private published: SessionInfo;

  constructor(
    private current: SessionInfo,
    private readonly abort: (vm: string) => Promise<void>,
  ) {
    super(SESSION_INTERFACE);
    this.published = current;
  }

  get info(): SessionInfo {
    return this.current;
  }

  update(info: SessionInfo): void {
    this.current = info;
  }

  /** Emit PropertiesChanged with exactly what changed since the last publish. Returns whether it emitted. */
  publish(): boolean {
    const changed = changedProperties(this.published, this.current);
    this.published = this.current;
    if (Object.keys(changed).length === 0) return false;
    dbus.interface.Interface.emitPropertiesChanged(this, changed, []);
    return true;
  }

  /** Whether publish() would emit. */
  get dirty(): boolean {
    return Object.keys(changedProperties(this.published, this.current)).length > 0;
  }

  Abort(): Promise<void> {
    return asDbusCall(() => this.abort(this.current.vm));
  }
}

// dbus-next reads a property as iface[name]: one getter per table row.
for (const p of SESSION_PROPERTIES) {
  Object.defineProperty(SessionObject.prototype, p.name, {
    get(this: SessionObject) {
      return wireValue(this.info, p satisfies SessionProperty);
    },
  });
}

SessionObject.configureMembers({
  properties: Object.fromEntries(SESSION_PROPERTIES.map((p) => [p.name, { signature: p.signature, access: 'read' as const }])),
  methods: { Abort: {} },
});
