// Which libvirt hook call means what to ctmigrate. libvirt runs
// `qemu.d/ctmigrate GUEST OPERATION SUB-OPERATION EXTRA` with the domain XML
// on stdin (ENVIRONMENT.md, "libvirt hooks"):
//
//   destination: migrate begin -, prepare begin -, start begin -, started begin -
//                (no hook when the VM resumes there)
//   source:      nothing when a migration starts; after success
//                stopped end -, release end -  (libvirt 9.0 passes "-", not
//                "migrated"); nothing at all after a failed migration
//   any host:    reconnect begin - when libvirt restarts (failing kills the VM)
//
// So EXTRA cannot tell success from failure; the daemon's session for the VM
// (role and state) does, and teardownSteps() decides from it.

import { SessionInfo } from '../../plugin/migration-service';

/** What the hook does for one call, before looking at any session. */
export type HookAction =
  /** prepare/start/started/attach begin: this host runs (or is about to run) the VM. */
  | 'register'
  /** migrate begin (destination): prepare the incoming session, print the XML with our dbus-vmstate object. */
  | 'migrate-in'
  /** reconnect begin: libvirt restarted and found the VM running; re-register, never fail. */
  | 'reconnect'
  /** stopped end: the VM's QEMU is gone from this host. */
  | 'stopped'
  /** release end: libvirt released the VM's resources here. */
  | 'release'
  /** restore begin and everything else: nothing to do, XML unchanged. */
  | 'none';

export interface HookInvocation {
  guest: string;
  operation: string;
  subOperation: string;
  extra: string;
}

/** libvirt's four arguments; missing ones read as "-" so a hand-run hook does nothing harmful. */
export function hookInvocation(argv: readonly string[]): HookInvocation {
  return { guest: argv[0] ?? '-', operation: argv[1] ?? '-', subOperation: argv[2] ?? '-', extra: argv[3] ?? '-' };
}

export function hookAction(inv: HookInvocation): HookAction {
  const key = `${inv.operation} ${inv.subOperation}`;
  switch (key) {
    case 'prepare begin':
    case 'start begin':
    case 'started begin':
    case 'attach begin':
      return 'register';
    case 'migrate begin':
      return 'migrate-in';
    case 'reconnect begin':
      return 'reconnect';
    case 'stopped end':
      return 'stopped';
    case 'release end':
      return 'release';
    default:
      return 'none';
  }
}

/** Whether libvirt reads the hook's stdout as a replacement domain XML for this call. */
export function printsXml(inv: HookInvocation): boolean {
  return inv.subOperation === 'begin' && (inv.operation === 'migrate' || inv.operation === 'restore');
}

/** One daemon call of a teardown, in order. */
export type TeardownStep =
  /** Source, fallback path: ship the residual delta now (a no-op when dbus-vmstate already did). */
  | 'cutover'
  /** Close the session as migrated: source deletes its entries; a ready destination just closes. */
  | 'finish-migrated'
  /** Close the session as failed: a destination removes what it imported and lifts the drop. */
  | 'finish-failed'
  /** The VM no longer runs here: stop tracking it, stop its vmstate helper. */
  | 'unregister';

function open(s: SessionInfo): boolean {
  return s.state !== 'failed' && s.state !== 'migrated';
}

/**
 * What `stopped end` and `release end` do, given the VM's latest session on
 * this host (undefined: none).
 *
 * - Source session still open:
 *   - stopped: cut over. The source's QEMU is gone, so the VM stopped for
 *     good; without dbus-vmstate this is when the residual delta ships
 *     (the destination stays blocked until it lands). Keep the
 *     registration until release.
 *   - release: finish migrated, unless EXTRA is "failed". libvirt 9.0
 *     passes "-" after a successful migration; a source is released only
 *     once its QEMU is gone, and after a failed migration the source keeps
 *     running and gets no hook at all. Then unregister.
 * - Destination session before ready (QEMU on the destination stopped
 *   before the VM ever ran here: the migration failed or was cancelled):
 *   finish failed — roll back, lift the drop — then unregister. Done at
 *   stopped already, so the drop goes as early as possible; release finds
 *   nothing left to roll back.
 * - Destination session ready (the VM ran here and has now stopped): close
 *   it as migrated, then unregister; its entries are the kernel's to expire.
 * - No open session: unregister (stopped does it too, so a plain shutdown
 *   leaves nothing behind even if release never comes).
 */
export function teardownSteps(event: 'stopped' | 'release', extra: string, session: SessionInfo | undefined): TeardownStep[] {
  if (session && open(session)) {
    if (session.role === 'source') {
      if (event === 'stopped') return ['cutover'];
      return [extra === 'failed' ? 'finish-failed' : 'finish-migrated', 'unregister'];
    }
    if (session.state === 'ready') return ['finish-migrated', 'unregister'];
    return ['finish-failed', 'unregister'];
  }
  return ['unregister'];
}
