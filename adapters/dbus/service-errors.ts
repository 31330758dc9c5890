import * as dbus from 'dbus-next';
import { InvalidArgsError } from './call-arguments';
import { ERROR_FAILED, ERROR_INVALID_ARGS, ERROR_NO_SUCH_SESSION } from './names';

/** The VM has no session (or registration) here; becomes org.ctmigrate1.Error.NoSuchSession. */
export class NoSuchSessionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NoSuchSessionError';
  }
}

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
  if (e instanceof InvalidArgsError || (e instanceof Error && e.name === 'VmSpecError')) return new dbus.DBusError(ERROR_INVALID_ARGS, oneLine(e.message));
  if (e instanceof NoSuchSessionError) return new dbus.DBusError(ERROR_NO_SUCH_SESSION, oneLine(e.message));
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
