import * as dbus from 'dbus-next';
import { BusConnection, connectBus } from '../../../adapters/dbus/bus-connection';

/** A received signal, unwrapped for assertions. */
export interface SeenSignal {
  path: string;
  interface: string;
  member: string;
  body: unknown[];
}

/** Plain D-Bus calls and a signal log, to check the service as any client sees it. */
export class RawClient {
  readonly signals: SeenSignal[] = [];

  private constructor(readonly connection: BusConnection) {
    connection.bus.on('message', (msg: dbus.Message) => {
      if (msg.type === dbus.MessageType.SIGNAL && msg.sender !== 'org.freedesktop.DBus') {
        this.signals.push({ path: msg.path, interface: msg.interface, member: msg.member, body: msg.body });
      }
    });
  }

  static async connect(address: string): Promise<RawClient> {
    const c = new RawClient(await connectBus(address));
    await c.call('org.freedesktop.DBus', '/org/freedesktop/DBus', 'org.freedesktop.DBus', 'AddMatch', 's', ["type='signal',sender='org.ctmigrate1'"]);
    return c;
  }

  async call(destination: string, path: string, iface: string, member: string, signature = '', body: unknown[] = []): Promise<unknown[]> {
    const reply = await this.connection.bus.call(new dbus.Message({ destination, path, interface: iface, member, signature, body }));
    return reply?.body ?? [];
  }

  manager(member: string, signature = '', body: unknown[] = []): Promise<unknown[]> {
    return this.call('org.ctmigrate1', '/org/ctmigrate1', 'org.ctmigrate1.Manager', member, signature, body);
  }

  /** The error a call fails with (fails the test if it succeeds). */
  async managerError(member: string, signature = '', body: unknown[] = []): Promise<dbus.DBusError> {
    try {
      await this.manager(member, signature, body);
    } catch (e) {
      if (e instanceof dbus.DBusError) return e;
      throw e;
    }
    throw new Error(`${member} succeeded`);
  }

  async getAll(path: string, iface: string): Promise<Record<string, unknown>> {
    const [props] = await this.call('org.ctmigrate1', path, 'org.freedesktop.DBus.Properties', 'GetAll', 's', [iface]);
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(props as Record<string, dbus.Variant>)) out[k] = v.value;
    return out;
  }

  /** Wait until a signal matching `pred` was seen; returns it. */
  async waitFor(pred: (s: SeenSignal) => boolean, timeoutMs = 3000): Promise<SeenSignal> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.signals.find(pred);
      if (found) return found;
      if (Date.now() > deadline) throw new Error(`no such signal within ${timeoutMs} ms; saw ${JSON.stringify(this.signals.map((s) => s.member))}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /** Let in-flight signals arrive. */
  async settle(ms = 150): Promise<void> {
    await new Promise((r) => setTimeout(r, ms));
  }

  close(): void {
    this.connection.close();
  }
}

/** PropertiesChanged signals of one object's interface, as name → value maps. */
export function propertiesChanged(signals: SeenSignal[], path: string, iface: string): Record<string, unknown>[] {
  return signals
    .filter((s) => s.member === 'PropertiesChanged' && s.path === path && s.body[0] === iface)
    .map((s) => Object.fromEntries(Object.entries(s.body[1] as Record<string, dbus.Variant>).map(([k, v]) => [k, v.value])));
}
