import * as dbus from 'dbus-next';
import { InvalidArgsError } from './call-arguments';
import { NoSessionError, SessionBusyError } from '../../plugin/service-errors';
import { VmSpecError } from '../../plugin/vm';
import { ERROR_BUSY, ERROR_FAILED, ERROR_INVALID_ARGS, ERROR_NO_SUCH_SESSION } from './names';

function oneLine(text: string): string {
  const first = text.split('\n', 1)[0].trim();
  return first === '' ? 'the daemon failed without saying why' : first;
}

/**
 * What a caller sees of an exception. Anything that is not a DBusError makes
 * dbus-next reply with its own error name and a stack trace, so every
 * method's failure goes through here.
 */
export function toDbusError(e: unknown): dbus.DBusError {
  if (e instanceof dbus.DBusError) return e;
  if (e instanceof InvalidArgsError || e instanceof VmSpecError) return new dbus.DBusError(ERROR_INVALID_ARGS, oneLine(e.message));
  if (e instanceof NoSessionError) return new dbus.DBusError(ERROR_NO_SUCH_SESSION, oneLine(e.message));
  if (e instanceof SessionBusyError) return new dbus.DBusError(ERROR_BUSY, oneLine(e.message));
  return new dbus.DBusError(ERROR_FAILED, oneLine(e instanceof Error ? e.message : String(e)));
}

/** Run a method body; any failure leaves as a D-Bus error. */
export async function asDbusCall<T>(body: () => Promise<T> | T): Promise<T> {
  try {
    return await body();
  } catch (e) {
    throw toDbusError(e);
  }
}
