import { JournalContents, JournalStore } from '../../../../plugin/ports/journal-store';
import { HostVmsPort } from '../../../../plugin/ports/host-vms-port';
import { JournalRecord } from '../../../../plugin/session-journal';

/** The run dir's session journal in memory: what a crashed engine left, for the next one. */
export class FakeJournal implements JournalStore {
  readonly records = new Map<string, JournalRecord>();
  /** Every write and forget, in order ("write importing VM", "forget VM"). */
  readonly trace: string[] = [];

  async write(r: JournalRecord): Promise<void> {
    this.records.set(r.vm.uuid, { ...r });
    this.trace.push(`write ${r.phase} ${r.vm.uuid}`);
  }

  async forget(vm: string): Promise<void> {
    this.records.delete(vm);
    this.trace.push(`forget ${vm}`);
  }

  async load(): Promise<JournalContents> {
    return { records: [...this.records.values()], problems: [] };
  }
}

/** The hypervisor's view: the VMs listed run here. */
export class FakeHostVms implements HostVmsPort {
  readonly runningHere = new Set<string>();

  async running(uuid: string): Promise<boolean | undefined> {
    return this.runningHere.has(uuid);
  }
}
