/** The daemon's well-known name on the system bus. */
export const BUS_NAME = 'org.ctmigrate1';
export const MANAGER_PATH = '/org/ctmigrate1';
export const MANAGER_INTERFACE = 'org.ctmigrate1.Manager';
export const SESSION_PATH_PREFIX = '/org/ctmigrate1/session/';
export const SESSION_INTERFACE = 'org.ctmigrate1.Session';

/** The engine tried and failed; the message is the engine's one line. */
export const ERROR_FAILED = 'org.ctmigrate1.Error.Failed';
/** The call's arguments cannot be used. */
export const ERROR_INVALID_ARGS = 'org.ctmigrate1.Error.InvalidArgs';
/** The VM has no session on this host. */
export const ERROR_NO_SUCH_SESSION = 'org.ctmigrate1.Error.NoSuchSession';
/** The VM already has a session here that the call would collide with. */
export const ERROR_BUSY = 'org.ctmigrate1.Error.Busy';

/** QEMU's dbus-vmstate contract (docs/interop/dbus-vmstate.rst). */
export const VMSTATE_BUS_NAME = 'org.qemu.VMState1';
export const VMSTATE_PATH = '/org/qemu/VMState1';
export const VMSTATE_INTERFACE = 'org.qemu.VMState1';
/** Our helper's Id among a VM's dbus-vmstate helpers (QEMU's id-list). */
export const VMSTATE_HELPER_ID = 'ctmigrate';

/**
 * Object path of a session. The engine's ids are opaque, so every byte
 * outside [A-Za-z0-9] becomes `_xx` (hex), as systemd does for unit paths:
 * the result is a valid path element and distinct ids never collide.
 */
export function sessionObjectPath(id: string): string {
  if (id === '') return `${SESSION_PATH_PREFIX}_`;
  let out = '';
  for (const byte of Buffer.from(id, 'utf8')) {
    const c = String.fromCharCode(byte);
    out += /[A-Za-z0-9]/.test(c) ? c : `_${byte.toString(16).padStart(2, '0')}`;
  }
  return SESSION_PATH_PREFIX + out;
}
