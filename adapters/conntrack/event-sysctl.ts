import { readFileSync, writeFileSync } from 'node:fs';

const PATH = '/proc/sys/net/netfilter/nf_conntrack_events';

/** What ensureConntrackEvents() found and did. */
export interface EventSetting {
  before: string;
  after: string;
  changed: boolean;
}

/**
 * Make the kernel attach the event extension to every new conntrack entry
 * of this network namespace (net.netfilter.nf_conntrack_events = 1).
 *
 * Why: the default (2, "auto") attaches it only while some socket listens
 * for events. An entry created while nobody listened never reports an
 * update or its destroy, so a feed started later would keep it alive in its
 * table and a migration would carry a dead entry, or miss a state change.
 * The daemon sets 1 at start, before the VMs' entries exist.
 */
export function ensureConntrackEvents(path = PATH): EventSetting {
  let before: string;
  try {
    before = readFileSync(path, 'utf8').trim();
  } catch (e) {
    throw new Error(`cannot read ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message} (is nf_conntrack loaded?)`);
  }
  if (before === '1') return { before, after: before, changed: false };
  try {
    writeFileSync(path, '1\n');
  } catch (e) {
    throw new Error(`cannot enable conntrack events (${path} is ${before}): ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  return { before, after: '1', changed: true };
}

/** The current setting, or null when it cannot be read. */
export function conntrackEventsSetting(path = PATH): string | null {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return null;
  }
}
