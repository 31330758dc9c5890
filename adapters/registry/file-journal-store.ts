import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { JournalContents, JournalStore } from '../../plugin/ports/journal-store';
import { decodeJournalRecord, encodeJournalRecord, JournalError, JournalRecord } from '../../plugin/session-journal';

/** The journal's folder inside the run dir. */
export const JOURNAL_DIR = 'journal';

const UUID_FILE = /^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\.json$/;

/**
 * JournalStore as `<run-dir>/journal/<uuid>.json` (folder 0700, files 0600).
 * A write goes to a temporary file, is fsync'd, and renamed over the old
 * record, then the folder is fsync'd: once write() resolves, the record
 * survives a crash of the daemon or of the host. Writes and removals run
 * one after the other in call order, so a late write never resurrects a
 * record that was forgotten after it was asked for.
 */
export class FileJournalStore implements JournalStore {
  readonly dir: string;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(runDir: string) {
    this.dir = join(runDir, JOURNAL_DIR);
  }

  write(record: JournalRecord): Promise<void> {
    return this.serial(() => this.writeNow(record));
  }

  forget(vm: string): Promise<void> {
    return this.serial(() => this.forgetNow(vm));
  }

  private serial(work: () => Promise<void>): Promise<void> {
    const next = this.queue.then(work, work);
    this.queue = next.catch(() => undefined);
    return next;
  }

  private async writeNow(record: JournalRecord): Promise<void> {
    const path = this.path(record.vm.uuid);
    const tmp = `${path}.${randomBytes(4).toString('hex')}.tmp`;
    try {
      await mkdir(this.dir, { recursive: true, mode: 0o700 });
      const f = await open(tmp, 'w', 0o600);
      try {
        await f.writeFile(encodeJournalRecord(record));
        await f.sync();
      } finally {
        await f.close();
      }
      await rename(tmp, path);
      await this.syncDir();
    } catch (e) {
      await rm(tmp, { force: true });
      throw new JournalError(`cannot write ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
  }

  private async forgetNow(vm: string): Promise<void> {
    try {
      await rm(this.path(vm), { force: true });
    } catch (e) {
      throw new JournalError(`cannot remove ${this.path(vm)}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
  }

  async load(): Promise<JournalContents> {
    const out: JournalContents = { records: [], problems: [] };
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return out;
      throw new JournalError(`cannot read ${this.dir}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    for (const name of names.sort()) {
      // A temporary file is a write that never finished: the record before it (if any) stands.
      if (name.endsWith('.tmp')) {
        await rm(join(this.dir, name), { force: true });
        continue;
      }
      const m = UUID_FILE.exec(name);
      if (!m) continue;
      const vm = m[1] as string;
      try {
        const r = decodeJournalRecord(await readFile(join(this.dir, name), 'utf8'));
        if (r.vm.uuid !== vm) throw new JournalError(`names VM ${r.vm.uuid}`);
        out.records.push(r);
      } catch (e) {
        out.problems.push({ vm, reason: `${join(this.dir, name)}: ${(e as Error).message}` });
      }
    }
    return out;
  }

  private path(vm: string): string {
    return join(this.dir, `${vm}.json`);
  }

  private async syncDir(): Promise<void> {
    const d = await open(this.dir, 'r');
    try {
      await d.sync();
    } finally {
      await d.close();
    }
  }
}
