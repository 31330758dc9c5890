import { EventEmitter } from 'node:events';
import * as dbus from 'dbus-next';

/** Where the system bus is: `DBUS_SYSTEM_BUS_ADDRESS` when set, as dbus-next and libdbus do. */
export function systemBusAddress(): string {
  return process.env.DBUS_SYSTEM_BUS_ADDRESS || 'unix:path=/var/run/dbus/system_bus_socket';
}

/** The bus could not be reached (socket absent, refused, handshake failed or too slow). */
export class BusUnreachableError extends Error {
  constructor(
    readonly address: string,
    reason: string,
  ) {
    super(`cannot connect to the D-Bus bus at ${address}: ${reason}`);
    this.name = 'BusUnreachableError';
  }
}

/** A connected MessageBus that says when the connection goes away. */
export interface BusConnection {
  readonly bus: dbus.MessageBus;
  readonly address: string;
  /** Our unique name on the bus (":1.42"). */
  readonly uniqueName: string;
  /** Called once if the connection is lost (not after close()). */
  onLost(listener: (error: Error) => void): void;
  close(): void;
}

/** The part of dbus-next's private connection we need: it alone sees the stream end. */
interface RawConnection extends EventEmitter {
  stream: { end(): void; destroy(): void };
}

/**
 * Connect and finish the Hello handshake. dbus-next reports neither a
 * refused socket nor a closed one through its promises (calls would hang),
 * so this waits on its events with a deadline and turns a later end of the
 * stream into one onLost notification.
 */
export async function connectBus(address: string, timeoutMs = 5000): Promise<BusConnection> {
  let bus: dbus.MessageBus;
  try {
    bus = dbus.sessionBus({ busAddress: address });
  } catch (e) {
    throw new BusUnreachableError(address, e instanceof Error ? e.message : String(e));
  }
  const raw = (bus as unknown as { _connection: RawConnection })._connection;
  const lostListeners: ((error: Error) => void)[] = [];
  let closing = false;
  let lost = false;
  const loseWith = (error: Error): void => {
    if (closing || lost) return;
    lost = true;
    for (const l of lostListeners) l(error);
  };
  // A MessageBus without an 'error' listener would throw on the first network error.
  bus.on('error', (err: unknown) => loseWith(err instanceof Error ? err : new Error(String(err))));
  raw.on('end', () => loseWith(new Error(`the bus at ${address} closed the connection`)));

  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => finish(new BusUnreachableError(address, `no handshake within ${timeoutMs} ms`)), timeoutMs);
    const onConnect = (): void => finish();
    const onLost = (err: Error): void => finish(new BusUnreachableError(address, err.message));
    function finish(err?: Error): void {
      clearTimeout(timer);
      bus.removeListener('connect', onConnect);
      lostListeners.splice(lostListeners.indexOf(onLost), 1);
      if (err) {
        closing = true;
        raw.stream.destroy();
        reject(err);
      } else resolve();
    }
    bus.once('connect', onConnect);
    lostListeners.push(onLost);
  });

  const uniqueName = (bus as unknown as { name: string }).name;
  return {
    bus,
    address,
    uniqueName,
    onLost(listener) {
      lostListeners.push(listener);
    },
    close() {
      if (closing) return;
      closing = true;
      bus.disconnect();
    },
  };
}
