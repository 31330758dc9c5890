// Crash recovery: what a daemon does at start about the sessions a previous
// run left behind (it crashed, was killed, or the host went down). At start
// no session is live, so nothing may keep a VM blocked: every drop in the
// kernel is lifted, journal or not. The journal (session-journal.ts) says
// which entries a dead session may have half-imported, with the VM's zone
// and mark: those go, unless the hypervisor runs that VM here now.

import { ConnectionTable } from './connection-table';
import { BlockedVm, BlockerPort } from './ports/blocker-port';
import { ConntrackPort } from './ports/conntrack-port';
import { HostVmsPort } from './ports/host-vms-port';
import { JournalStore } from './ports/journal-store';
import { Log } from './ports/log-port';
import { vmAddressTexts, vmFilter } from './vm';

export interface RecoveryPorts {
  journal: JournalStore;
  blocker: BlockerPort;
  conntrack: ConntrackPort;
  hostVms: HostVmsPort;
  log: Log;
}

/** What recovery did; empty lists when the last run ended cleanly. */
export interface RecoveryReport {
  /** VMs whose drop was lifted. */
  lifted: string[];
  /** Entries of dead sessions removed from the kernel. */
  removed: number;
  /** VMs whose half-imported entries stayed, because the VM runs here. */
  kept: string[];
  /** ms from the start of recovery until every drop was lifted. */
  liftedMs: number;
}

export async function recoverAfterCrash(p: RecoveryPorts, tableCapacity: number): Promise<RecoveryReport> {
  const t0 = Date.now();
  const report: RecoveryReport = { lifted: [], removed: 0, kept: [], liftedMs: 0 };
  const journal = await p.journal.load().catch((e: Error) => {
    p.log.error(`session journal not read: ${e.message}; drops are still lifted, half-imported entries stay`);
    return { records: [], problems: [] };
  });
  for (const bad of journal.problems) {
    p.log.warn(`session journal: ${bad.reason}; record removed (the VM's drop is lifted, its entries cannot be told apart)`, { vm: bad.vm });
    await p.journal.forget(bad.vm).catch(() => undefined);
  }
  let blocked: BlockedVm[] = [];
  try {
    blocked = await p.blocker.blocked();
  } catch (e) {
    p.log.error(`could not read the drops in the kernel: ${(e as Error).message}`);
  }
  for (const b of blocked) {
    try {
      await p.blocker.unblock(b.vm);
      report.lifted.push(b.vm);
      p.log.warn('recovered: lifted a drop no live session holds (left by a previous run)', { vm: b.vm });
    } catch (e) {
      p.log.error(`recovery: could not lift the drop: ${(e as Error).message}`, { vm: b.vm });
    }
  }
  // The drops first, the entries after: nothing keeps a VM blocked while entries are removed.
  await p.blocker.settle?.().catch(() => undefined);
  report.liftedMs = Date.now() - t0;
  for (const r of journal.records) {
    const vm = r.vm;
    if (r.phase === 'importing') {
      const runs = await p.hostVms.running(vm.uuid).catch(() => undefined);
      if (runs === true) {
        report.kept.push(vm.uuid);
        p.log.warn('recovered: the VM runs here, so the entries its interrupted session imported stay', { vm: vm.uuid, session: r.session });
      } else {
        try {
          const table = ConnectionTable.create({ capacity: tableCapacity, extCapacity: tableCapacity });
          await p.conntrack.dump(vmFilter(vm), table);
          const w = await p.conntrack.remove({ table });
          report.removed += w.deleted;
          p.log.warn('recovered: removed the entries an interrupted incoming session had imported', {
            vm: vm.uuid,
            session: r.session,
            addresses: vmAddressTexts(vm).join(','),
            deleted: w.deleted,
          });
        } catch (e) {
          p.log.error(`recovery: could not remove the VM's half-imported entries: ${(e as Error).message}`, { vm: vm.uuid, session: r.session });
          continue;
        }
      }
    } else {
      p.log.info('recovered: the session had its complete state in; the entries stay', { vm: vm.uuid, session: r.session });
    }
    await p.journal.forget(vm.uuid).catch((e: Error) => p.log.error(`session journal: ${e.message}`, { vm: vm.uuid }));
  }
  await p.blocker.settle?.().catch(() => undefined);
  return report;
}
