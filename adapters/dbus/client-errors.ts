import * as dbus from 'dbus-next';
import { ManagerClientError } from '../../plugin/ports/manager-client';
import { ERROR_BUSY, ERROR_FAILED, ERROR_INVALID_ARGS, ERROR_NO_SUCH_SESSION } from './names';

/**
 * What a refused or failed call means to ctmigratectl's user, in one line.
 * `call` names the method ("org.ctmigrate1.Manager.Register").
 */
export function clientError(e: unknown, call: string, busAddress: string): ManagerClientError {
  if (e instanceof ManagerClientError) return e;
  if (!(e instanceof dbus.DBusError)) return new ManagerClientError('failed', `${call} failed: ${e instanceof Error ? e.message : String(e)}`);
  const text = (e.text ?? '').split('\n', 1)[0];
  switch (e.type) {
    case 'org.freedesktop.DBus.Error.ServiceUnknown':
    case 'org.freedesktop.DBus.Error.NameHasNoOwner':
      return new ManagerClientError('unavailable', `ctmigrated is not running (no owner of org.ctmigrate1 on the system bus at ${busAddress})`);
    case 'org.freedesktop.DBus.Error.AccessDenied':
      return new ManagerClientError('access-denied', `access denied: the D-Bus policy lets only root call ${call} (run as root)`);
    case 'org.freedesktop.DBus.Error.NoReply':
    case 'org.freedesktop.DBus.Error.Timeout':
      return new ManagerClientError('timeout', `ctmigrated did not answer ${call}: ${text}`);
    case ERROR_INVALID_ARGS:
    case 'org.freedesktop.DBus.Error.InvalidArgs':
      return new ManagerClientError('invalid-args', text);
    case ERROR_FAILED:
    case ERROR_NO_SUCH_SESSION:
    case ERROR_BUSY:
      return new ManagerClientError('failed', text);
    default:
      if (e.type.startsWith('org.freedesktop.DBus.Error.Spawn')) {
        return new ManagerClientError('unavailable', `ctmigrated is not running and could not be started by the system bus at ${busAddress}: ${text}`);
      }
      return new ManagerClientError('failed', `${call} failed: ${e.type}: ${text}`);
  }
}
