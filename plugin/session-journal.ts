// The session journal: what an incoming session must undo if the daemon dies
// before the session ends. One record per VM, written before the VM's drop
// goes in and removed once the session is over (rolled back, or migrated
// here). A daemon that starts and finds records left behind reconciles them
// (crash-recovery.ts). The file is JSON:
//
//   {"format":1,"session":"8c38d20eeee9f812","phase":"importing","since":1764745555123,
//    "vm":{"uuid":"...","addresses":["192.0.2.10"],"zone":null,"mark":""}}
//
// `phase` says what the kernel holds of the session: `importing` (a drop and
// possibly part of the VM's entries: both go) or `ready` (the VM's complete
// state, the drop lifted: the entries stay, the VM may run here on them).

import { CtMarkError } from './ct-mark';
import { VmSpec, VmSpecError } from './vm';
import { vmFromRecord, vmRecord } from './vm-registry';

export const JOURNAL_FORMAT = 1;

export type JournalPhase = 'importing' | 'ready';

export interface JournalRecord {
  session: string;
  phase: JournalPhase;
  /** ms since the epoch the session started. */
  since: number;
  vm: VmSpec;
}

/** A journal record that cannot be read; the message says why. */
export class JournalError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'JournalError';
  }
}

export function encodeJournalRecord(r: JournalRecord): string {
  return `${JSON.stringify({ format: JOURNAL_FORMAT, session: r.session, phase: r.phase, since: r.since, vm: vmRecord(r.vm) })}\n`;
}

export function decodeJournalRecord(text: string): JournalRecord {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new JournalError('not JSON');
  }
  const top = parsed as { format?: unknown; session?: unknown; phase?: unknown; since?: unknown; vm?: unknown } | null;
  if (!top || typeof top !== 'object' || top.format !== JOURNAL_FORMAT) throw new JournalError(`not journal format ${JOURNAL_FORMAT}`);
  if (typeof top.session !== 'string' || !/^[0-9a-f]{1,64}$/.test(top.session)) throw new JournalError('no session id');
  if (top.phase !== 'importing' && top.phase !== 'ready') throw new JournalError(`phase ${JSON.stringify(top.phase)} is neither importing nor ready`);
  if (typeof top.since !== 'number' || !Number.isFinite(top.since)) throw new JournalError('no start time');
  try {
    return { session: top.session, phase: top.phase, since: top.since, vm: vmFromRecord(top.vm) };
  } catch (e) {
    if (e instanceof VmSpecError || e instanceof CtMarkError) throw new JournalError(`vm: ${e.message}`);
    throw e;
  }
}
