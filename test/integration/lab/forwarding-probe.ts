// What a host forwards for one address while ctmigrate's drop for it is in:
// a chain after every other forward chain counts the address's packets that
// got through; each sample is one `nft list ruleset` (one generation of the
// ruleset, so the drop and the count are seen together). The drop is in
// force while its table's sets still hold an element (the VM's quick lift
// empties the sets at once and removes the table a moment later). A drop
// only ever goes once it is lifted, so a sample that still shows it proves
// nothing was forwarded up to then unless its count is above 0.

import { setTimeout as sleep } from 'node:timers/promises';
import { NetNs } from './netns';

export interface ForwardingReport {
  samples: number;
  /** Samples that still showed the drop. */
  blockedSamples: number;
  /** The most packets forwarded in a sample that still showed the drop (0: none got through). */
  forwardedWhileBlocked: number;
  /** The most packets the drop had counted by then (above 0: the traffic was reaching the host). */
  droppedWhileBlocked: number;
  /** Packets forwarded in all, at the end. */
  forwarded: number;
}

/** Start sampling `ns`; `dropTable` is ctmigrate's table to look for ("table inet ctmigrate"). */
export async function watchForwarding(ns: NetNs, address: string, dropTable: string): Promise<{ stop(): Promise<ForwardingReport> }> {
  await ns.nft(`
table inet lab_probe {
  chain forward {
    type filter hook forward priority 300; policy accept;
    ip saddr ${address} counter
    ip daddr ${address} counter
  }
}
`);
  const report: ForwardingReport = { samples: 0, blockedSamples: 0, forwardedWhileBlocked: 0, droppedWhileBlocked: 0, forwarded: 0 };
  const packets = (t: string | undefined): number => {
    let n = 0;
    for (const m of (t ?? '').matchAll(/counter packets (\d+)/g)) n += Number(m[1]);
    return n;
  };
  const sample = async (): Promise<void> => {
    const r = await ns.execOk('nft', ['list', 'ruleset']);
    const tables = new Map(r.stdout.split(/^(?=table )/m).map((t) => [t.slice(0, t.indexOf('{')).trim(), t] as const));
    const n = packets(tables.get('table inet lab_probe'));
    report.samples++;
    report.forwarded = n;
    const drop = tables.get(dropTable);
    if (drop !== undefined && /elements = \{/.test(drop)) {
      report.blockedSamples++;
      report.forwardedWhileBlocked = Math.max(report.forwardedWhileBlocked, n);
      report.droppedWhileBlocked = Math.max(report.droppedWhileBlocked, packets(drop));
    }
  };
  let running = true;
  const loop = (async () => {
    while (running) {
      await sample();
      await sleep(10);
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
      await sample();
      await ns.execOk('nft', ['delete', 'table', 'inet', 'lab_probe']);
      return report;
    },
  };
}
