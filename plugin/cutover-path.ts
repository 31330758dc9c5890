// How a source hands its residual delta over when the VM stops, chosen per
// session before QEMU's migration starts (the destination's `migrate begin`
// hook opens the session; libvirt's Perform phase comes after it):
//
//   vmstate      the running QEMU already has our dbus-vmstate object (its
//                XML carried it): QEMU calls Save() at its pause.
//   vmstate-hot  it had none; the object was added to the running QEMU
//                (QMP object-add through libvirt) for this migration, and is
//                taken out again when the migration fails.
//   event        no object could be added: the source cuts over the moment
//                libvirt reports the VM suspended for migration.
//   hook         no events either: the `stopped` hook cuts over, after the
//                destination has already resumed the VM (the last resort).

import { Log } from './ports/log-port';
import { DomainEventsPort } from './ports/domain-events-port';
import { VmstateObjectPort } from './ports/vmstate-object-port';

export type CutoverPath = 'vmstate' | 'vmstate-hot' | 'event' | 'hook';

/** Every path, in wire order (the peer protocol carries the index). */
export const CUTOVER_PATHS: readonly CutoverPath[] = ['vmstate', 'vmstate-hot', 'event', 'hook'];

/** What a session set up for its cut-over, and how to take it down. */
export interface CutoverArrangement {
  readonly path: CutoverPath;
  /**
   * The session is over. `migrated`: the VM's QEMU here is gone, nothing is
   * left in it; otherwise it keeps running and must be as it was.
   */
  release(migrated: boolean): Promise<void>;
}

export interface CutoverOptions {
  /** Add the object to a QEMU that lacks it (config hot-attach; default on). */
  hotAttach: boolean;
  /** Longest each hypervisor call may take: the destination's prepare waits on it. */
  timeoutMs: number;
}

export interface CutoverDeps {
  objects: VmstateObjectPort;
  events: DomainEventsPort;
  log: Log;
}

const message = (e: unknown): string => (e instanceof Error ? e.message : String(e));

/**
 * Choose the best path for one outgoing session of VM `uuid` whose helper
 * QEMU reaches with `objectArgs` ('' when no helper runs), and set it up.
 * `paused` is called on the event path when the VM stops for the last copy.
 * Never throws: a path that cannot be had falls through to the next.
 */
export async function arrangeCutover(
  deps: CutoverDeps,
  uuid: string,
  objectArgs: string,
  paused: () => void,
  options: CutoverOptions,
): Promise<CutoverArrangement> {
  const fields = { vm: uuid };
  const noop = async (): Promise<void> => undefined;
  let why = '';
  if (objectArgs === '') why = 'no dbus-vmstate helper runs for the VM';
  else {
    try {
      if (await deps.objects.present(uuid, objectArgs, options.timeoutMs)) {
        deps.log.info('cut-over path vmstate: the running QEMU has the dbus-vmstate object', fields);
        return { path: 'vmstate', release: noop };
      }
      if (!options.hotAttach) why = 'hot attach is off (hot-attach = no)';
      else {
        await deps.objects.add(uuid, objectArgs, options.timeoutMs);
        deps.log.info('cut-over path vmstate-hot: dbus-vmstate object added to the running QEMU', fields);
        return {
          path: 'vmstate-hot',
          release: async (migrated) => {
            if (migrated) return;
            try {
              await deps.objects.remove(uuid, objectArgs, options.timeoutMs);
              deps.log.info('dbus-vmstate object taken out of the running QEMU again', fields);
            } catch (e) {
              deps.log.warn(`the dbus-vmstate object added for the migration could not be taken out again: ${message(e)}`, fields);
            }
          },
        };
      }
    } catch (e) {
      why = `the dbus-vmstate object could not be added: ${message(e)}`;
    }
  }
  try {
    const stop = await deps.events.onMigrationPause(uuid, paused);
    deps.log.warn(`cut-over path event: ${why}; the residual delta ships when libvirt reports the VM suspended for migration`, fields);
    return {
      path: 'event',
      release: async () => stop(),
    };
  } catch (e) {
    deps.log.warn(`cut-over path hook: ${why}, and libvirt's domain events cannot be followed (${message(e)}); the residual delta ships at the stopped hook, after the destination resumed the VM`, fields);
    return { path: 'hook', release: noop };
  }
}
