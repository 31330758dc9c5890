import { JournalRecord } from '../session-journal';
import { portToken } from './port-token';

/** What the journal holds: the records that read back, and why the others did not. */
export interface JournalContents {
  records: JournalRecord[];
  /** One line per unreadable record (its file and the reason); such a record is removed by forget(). */
  problems: Array<{ vm: string; reason: string }>;
}

/**
 * Where the daemon writes down what an incoming session must undo if the
 * daemon dies (session-journal.ts); under the run dir (adapters/registry).
 * A write is durable and atomic when it resolves: a crash right after
 * leaves that record, a crash during it the one before.
 */
export interface JournalStore {
  /** Write (or replace) the VM's record. */
  write(record: JournalRecord): Promise<void>;
  /** Remove the VM's record; a missing one is no error. */
  forget(vm: string): Promise<void>;
  /** Every record left, e.g. by a daemon that crashed. */
  load(): Promise<JournalContents>;
}
export const JournalStore = portToken<JournalStore>('JournalStore');
