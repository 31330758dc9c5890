// The migration lab: two hypervisor hosts with strict firewalls, a client
// network reachable from both, and a VM whose network moves from A to B
// when its QEMU migrates. Each host runs its own system bus and ctmigrated.
//
//            client  (lo 203.0.113.100/32; to-a .2/30, to-b .6/30)
//             /                                   \
//   A  client 203.0.113.1/30                B  client 203.0.113.5/30
//      peer   198.51.100.1/24 ------------------- peer 198.51.100.2/24
//      vm     192.0.2.1/24                        vm   192.0.2.1/24
//             \                                   /
//            vm  (eth-a 192.0.2.10/24 up, eth-b 192.0.2.10/24 down)
//
// Both hosts: forward chain `policy drop`, established/related accepted, a
// new TCP flow only with a bare SYN, nf_conntrack_tcp_loose=0. A flow that
// arrives at B mid-stream without B knowing it is dropped.
//
// Everything lives in namespaces and folders this run creates; Lab.cleanup()
// (and its exit handler) removes them on every exit path.

import { join } from 'node:path';
import { Flows, FlowReport } from './flows';
import { ExecResult, Lab, LabProcess, NetNs, runOk } from './netns';
import { ForwardingReport, watchForwarding } from './forwarding-probe';
export type { ForwardingReport } from './forwarding-probe';
import { startCtmigrated, startSystemBus, writePskFile } from './daemon-host';
import { buildTwoHosts } from './two-hosts';
import { MigrationStatus, QemuVm } from './qemu';

export const ADDR = {
  vm: '192.0.2.10',
  vmGateway: '192.0.2.1',
  peerA: '198.51.100.1',
  peerB: '198.51.100.2',
  client: '203.0.113.100',
  clientA: '203.0.113.2',
  clientB: '203.0.113.6',
  hostAClient: '203.0.113.1',
  hostBClient: '203.0.113.5',
} as const;

export const PEER_PORT = 7471;
/** Where B's QEMU waits for the migration stream. */
export const MIGRATION_PORT = 4444;
/** The VM's echo service the flows use. */
export const FLOW_PORT = 7000;
export const VM_UUID = '5f0c3a2e-7b1d-4c8e-9a6f-2d4b8e1c0a93';

/** dist/adapters/cli/*.js, seen from dist/test/integration/lab/. */
export const CTMIGRATECTL = join(__dirname, '..', '..', '..', 'adapters', 'cli', 'ctmigratectl.js');
export { CTMIGRATED } from './daemon-host';
/** The hostile-peer probes (hostile-peer.ts), compiled next to this file. */
export const HOSTILE_PEER = join(__dirname, 'hostile-peer.js');

const FIREWALL = `
table inet lab_firewall {
  chain forward {
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    tcp flags & (fin|syn|rst|ack) == syn ct state new accept
    meta l4proto { icmp, ipv6-icmp } accept
  }
}
`;


/** A session as `ctmigratectl status --json` prints it (the fields the lab reads). */
export interface StatusSession {
  id: string;
  role: 'source' | 'destination';
  vm: string;
  state: string;
  sent: number;
  received: number;
  committed: number;
  refused: number;
  bytes: number;
  blocked: boolean;
  error: string;
  /** vmstate, vmstate-hot, event or hook. */
  path: string;
  /** direct, or via ADDR:PORT. */
  route: string;
  readyAt: number;
  /** When QEMU's Load() answered on a destination (0: never). */
  resumedAt: number;
}

export interface StatusJson {
  version: string;
  sessions: StatusSession[];
  vms: Array<{ uuid: string; addresses: string[] }>;
}

/** One hypervisor host. */
export interface Host {
  readonly name: 'A' | 'B';
  readonly ns: NetNs;
  /** Its address on the peer link. */
  readonly peer: string;
  readonly dir: string;
  /** DBUS_SYSTEM_BUS_ADDRESS of its private system bus. */
  bus: string;
  daemon: LabProcess | null;
}

export interface LabOptions {
  /** Start ctmigrated on both hosts (default true). */
  daemons?: boolean;
  /** Extra ctmigrated flags for both hosts. */
  daemonArgs?: readonly string[];
}

/** How a VM migration carries (or does not carry) its connection state. */
export type MigrationMode =
  /** QEMU's dbus-vmstate: Save() on A ships the residual delta, Load() on B waits for it. */
  | 'vmstate'
  /** No dbus-vmstate: `ctmigratectl cutover` on A at STOP, as libvirt's stopped hook would. */
  | 'fallback'
  /** No ctmigrate at all (no prepare-incoming): what users see today. */
  | 'control';

export interface MigrationOptions {
  mode: MigrationMode;
  /** Busy flows through the VM (default 200). */
  flows?: number;
  /** Flows closed and opened during pre-copy (default 0). */
  churn?: number;
  /** No echo for this long = broken (default 5000 ms). */
  breakMs?: number;
  /** QMP migrate right after prepare-incoming, without waiting for the pre-copy (a switchover during it). */
  early?: boolean;
  /** Called at QEMU's STOP on A (to read what B must end with); A is finished only once the promise it returns settles. */
  atStop?: () => Promise<unknown> | void;
  progress?: (line: string) => void;
}

export interface MigrationOutcome {
  mode: MigrationMode;
  /** The flows after the migration settled (stalls counted from just before QMP migrate). */
  flows: FlowReport;
  /** RESUME on B minus STOP on A, QEMU's timestamps (same host clock). */
  blackoutMs: number;
  /** QEMU's own downtime figure. */
  qemu: MigrationStatus;
  /** RESUME on B to the VM's network being on B. */
  moveMs: number;
  /** STOP on A to `ctmigratectl cutover` returning (fallback only). */
  cutoverMs: number | null;
  source: StatusSession | null;
  destination: StatusSession | null;
  /** The VM's conntrack entries on each host after finish. */
  entriesA: number;
  entriesB: number;
}


export class MigrationLab {
  private vmOnB = false;

  private constructor(
    readonly lab: Lab,
    readonly a: Host,
    readonly b: Host,
    readonly client: NetNs,
    readonly vm: NetNs,
    readonly dir: string,
    readonly pskFile: string,
    private readonly options: LabOptions,
  ) {}

  /** Build the namespaces, links, routes, firewalls, buses and daemons. */
  static async build(options: LabOptions = {}): Promise<MigrationLab> {
    const lab = new Lab();
    try {
      const dir = await lab.tempDir('mig');
      const { a: nsA, b: nsB, client, guest: vm } = await buildTwoHosts(lab, { guestLabel: 'vm', guestLink: 'vm', firewall: FIREWALL, clientRoute: '192.0.2.0/24' });
      await lab.link(nsA, nsB, { ifname: 'peer', addrs: [`${ADDR.peerA}/24`] }, { ifname: 'peer', addrs: [`${ADDR.peerB}/24`] });
      const pskFile = await writePskFile(dir);
      const host = async (name: 'A' | 'B', ns: NetNs, peer: string): Promise<Host> => {
        const hdir = await lab.tempDir(`h${name.toLowerCase()}`);
        return { name, ns, peer, dir: hdir, bus: '', daemon: null };
      };
      const m = new MigrationLab(lab, await host('A', nsA, ADDR.peerA), await host('B', nsB, ADDR.peerB), client, vm, dir, pskFile, options);
      await Promise.all([m.startBus(m.a), m.startBus(m.b)]);
      if (options.daemons ?? true) await Promise.all([m.startDaemon(m.a), m.startDaemon(m.b)]);
      return m;
    } catch (e) {
      await lab.cleanup().catch(() => undefined);
      throw e;
    }
  }

  /** Remove everything the lab made. */
  async close(): Promise<void> {
    await this.lab.cleanup();
  }

  private async startBus(h: Host): Promise<void> {
    h.bus = await startSystemBus(this.lab, h.ns, h.dir);
  }

  /** Start ctmigrated on a host (A listens; B also knows A as its peer). */
  async startDaemon(h: Host, extra: readonly string[] = []): Promise<LabProcess> {
    const p = await startCtmigrated(this.lab, h.ns, {
      bus: h.bus,
      listen: `${h.peer}:${PEER_PORT}`,
      pskFile: this.pskFile,
      runDir: join(h.dir, 'run'),
      peers: h.name === 'B' ? [`${ADDR.peerA}:${PEER_PORT}`] : [],
      extra: [...(this.options.daemonArgs ?? []), ...extra],
    });
    h.daemon = p;
    return p;
  }

  /** `ctmigratectl ARGS` on a host, against its daemon. */
  ctl(h: Host, args: readonly string[], timeoutMs = 60_000): Promise<ExecResult> {
    return h.ns.exec('env', [`DBUS_SYSTEM_BUS_ADDRESS=${h.bus}`, process.execPath, CTMIGRATECTL, ...args], { timeoutMs });
  }

  async ctlOk(h: Host, args: readonly string[], timeoutMs = 60_000): Promise<ExecResult> {
    const r = await this.ctl(h, args, timeoutMs);
    if (r.code !== 0) throw new Error(`ctmigratectl ${args.join(' ')} on ${h.name} exited ${r.code}: ${(r.stderr || r.stdout).trim()}`);
    return r;
  }

  async status(h: Host): Promise<StatusJson> {
    const r = await this.ctlOk(h, ['status', '--json']);
    return JSON.parse(r.stdout) as StatusJson;
  }

  /** The VM's session on a host, if any. */
  async session(h: Host, vm = VM_UUID): Promise<StatusSession | null> {
    return (await this.status(h)).sessions.find((s) => s.vm === vm) ?? null;
  }

  /** Poll the VM's session on a host until `ok` holds. */
  async waitSession(h: Host, ok: (s: StatusSession) => boolean, what: string, timeoutMs = 20_000, vm = VM_UUID): Promise<StatusSession> {
    const deadline = Date.now() + timeoutMs;
    let last: StatusSession | null = null;
    for (;;) {
      last = await this.session(h, vm);
      if (last && ok(last)) return last;
      if (Date.now() > deadline) throw new Error(`${h.name}: the VM's session did not reach "${what}" in ${timeoutMs} ms (last: ${JSON.stringify(last)})`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** `register` on a host; returns QEMU's -object value it printed. */
  async register(h: Host, vm = VM_UUID, address: string = ADDR.vm): Promise<string> {
    const r = await this.ctlOk(h, ['register', '--vm', vm, '--address', address]);
    const m = /dbus-vmstate: (\S+)/.exec(r.stdout);
    if (!m) throw new Error(`register printed no dbus-vmstate object: ${r.stdout}`);
    return m[1] as string;
  }

  async prepareIncoming(extra: readonly string[] = []): Promise<ExecResult> {
    return this.ctlOk(this.b, ['prepare-incoming', '--vm', VM_UUID, '--address', ADDR.vm, ...extra]);
  }

  /**
   * `conntrack -L` lines of a host that involve `address`, with the parts
   * that change by themselves (timeouts, ids) cut off.
   */
  async conntrack(h: Host, address: string = ADDR.vm): Promise<string[]> {
    const r = await h.ns.execOk('conntrack', ['-L'], { timeoutMs: 30_000 });
    return r.stdout
      .split('\n')
      .filter((l) => l.includes(`=${address} `))
      .map((l) => l.replace(/^(\S+\s+\d+\s+)\d+\s+/, '$1').replace(/\s+(mark|use|id)=\d+/g, ''))
      .sort();
  }

  /** `nft list tables` of a host. */
  async nftTables(h: Host): Promise<string[]> {
    const r = await h.ns.execOk('nft', ['list', 'tables']);
    return r.stdout.split('\n').filter((l) => l.trim() !== '');
  }

  /** Watch what a host forwards for the VM while its drop is in place (forwarding-probe.ts). */
  watchForwarding(h: Host): Promise<{ stop(): Promise<ForwardingReport> }> {
    return watchForwarding(h.ns, ADDR.vm, 'table inet ctmigrate');
  }

  /** Packets the ctmigrate drop rules have counted on a host (0 when the table is absent). */
  async dropCounter(h: Host): Promise<number> {
    const r = await h.ns.exec('nft', ['list', 'table', 'inet', 'ctmigrate']);
    if (r.code !== 0) return 0;
    let n = 0;
    for (const m of r.stdout.matchAll(/counter packets (\d+)/g)) n += Number(m[1]);
    return n;
  }

  /**
   * Move the VM's network to B in one quick step: its link to A goes down,
   * its link to B comes up, and the client reaches it through B.
   */
  async moveVmToB(): Promise<void> {
    await Promise.all([
      runOk('ip', ['-n', this.vm.name, '-batch', '-'], {
        input: `link set eth-a down\nlink set eth-b up\nroute replace default via ${ADDR.vmGateway} dev eth-b onlink\n`,
      }),
      runOk('ip', ['-n', this.client.name, 'route', 'replace', '192.0.2.0/24', 'via', ADDR.hostBClient, 'src', ADDR.client]),
    ]);
    this.vmOnB = true;
  }

  /** Run a hostile-peer probe inside a host and return its "result" JSON. */
  async hostile(from: Host, args: readonly string[], timeoutMs = 30_000): Promise<Record<string, unknown>> {
    const r = await from.ns.exec(process.execPath, [HOSTILE_PEER, ...args], { timeoutMs });
    const m = /^result (\{.*\})$/m.exec(r.stdout);
    if (!m) throw new Error(`hostile-peer ${args[0]} printed no result (exit ${r.code}): ${r.stdout}${r.stderr}`);
    return JSON.parse(m[1] as string) as Record<string, unknown>;
  }

  get vmIsOnB(): boolean {
    return this.vmOnB;
  }

  async startFlows(count: number, breakMs = 5000): Promise<Flows> {
    return Flows.start(this.lab, this.vm, this.client, { source: ADDR.client, server: ADDR.vm, port: FLOW_PORT, count, breakMs });
  }

  /** QEMU on A (running) or B (waiting for the incoming migration). */
  startQemu(h: Host, vmstateObject?: string): Promise<QemuVm> {
    return QemuVm.start(this.lab, h.ns, {
      dir: this.dir,
      name: h.name.toLowerCase(),
      vmstateObject,
      incoming: h.name === 'B' ? `tcp:${ADDR.peerB}:${MIGRATION_PORT}` : undefined,
    });
  }

  /**
   * One whole migration of the VM from A to B with busy flows, as libvirt
   * would drive it, and what the flows and QEMU saw.
   */
  async migrate(o: MigrationOptions): Promise<MigrationOutcome> {
    const say = o.progress ?? ((): void => undefined);
    const k = o.flows ?? 200;
    const useCtm = o.mode !== 'control';
    let objA: string | undefined;
    let objB: string | undefined;
    if (useCtm) {
      // Before the flows exist: the daemon follows the VM's entries from their first packet.
      const a = await this.register(this.a);
      if (o.mode === 'vmstate') {
        objA = a;
        objB = await this.register(this.b);
      }
    }
    const [qa, qb] = await Promise.all([this.startQemu(this.a, objA), this.startQemu(this.b, objB)]);
    say(`QEMU running on A, waiting on B (${o.mode === 'vmstate' ? 'with' : 'without'} dbus-vmstate)`);
    const flows = await this.startFlows(k, o.breakMs);
    say(`${k} TCP flows busy between the client and the VM (through A)`);
    if (useCtm) {
      await this.prepareIncoming();
      if (o.early) say('B: prepare-incoming: VM blocked on B; migrating at once, during the pre-copy');
      else {
        const s = await this.waitSession(this.b, (x) => x.state === 'streaming' || x.state === 'ready', 'streaming');
        say(`B: prepare-incoming: VM blocked on B, pre-copy of ${s.received} entries done, streaming changes`);
      }
    }
    if (o.churn && !o.early) {
      await flows.churn(o.churn);
      say(`${o.churn} flows closed and ${o.churn} opened during pre-copy`);
      await new Promise((r) => setTimeout(r, 300));
    }
    await flows.mark();

    let moved: Promise<number> | null = null;
    qb.qmp.onEvent((e) => {
      if (e.event !== 'RESUME' || moved) return;
      moved = this.moveVmToB().then(() => Date.now() - e.seenMs);
    });
    let cutover: Promise<number> | null = null;
    let stopWork: Promise<unknown> | null = null;
    if (o.atStop) {
      const atStop = o.atStop;
      qa.qmp.onEvent((e) => {
        // The work it starts (a listing of A) ends before A's finish deletes anything.
        if (e.event === 'STOP' && !stopWork) stopWork = Promise.resolve(atStop());
      });
    }
    if (o.mode === 'fallback') {
      qa.qmp.onEvent((e) => {
        if (e.event !== 'STOP' || cutover) return;
        cutover = this.ctlOk(this.a, ['cutover', '--vm', VM_UUID]).then(() => Date.now() - e.seenMs);
      });
    }
    say('QMP migrate on A');
    await qa.migrate(`tcp:${ADDR.peerB}:${MIGRATION_PORT}`);
    const qemu = await qa.waitMigration();
    if (qemu.status !== 'completed') throw new Error(`QEMU migration ${qemu.status}`);
    const stop = await qa.qmp.waitEvent('STOP');
    const resume = await qb.qmp.waitEvent('RESUME');
    const moveMs = await (moved as unknown as Promise<number>);
    const cutoverMs = cutover ? await (cutover as Promise<number>) : null;
    const blackoutMs = resume.qemuMs - stop.qemuMs;
    say(`VM resumed on B; its network moved to B ${moveMs} ms later; blackout ${blackoutMs.toFixed(1)} ms`);

    let source: StatusSession | null = null;
    let destination: StatusSession | null = null;
    if (useCtm) {
      // A switchover during the pre-copy: the VM runs on B while the import ends.
      if (o.early) await this.waitSession(this.b, (x) => x.state === 'ready' && !x.blocked, 'ready on B', 60_000);
      if (stopWork) await (stopWork as Promise<unknown>).catch(() => undefined);
      await this.ctlOk(this.a, ['finish', '--vm', VM_UUID, '--result', 'migrated']);
      await this.ctlOk(this.b, ['finish', '--vm', VM_UUID, '--result', 'migrated']);
      source = await this.session(this.a);
      destination = await this.session(this.b);
    }
    // Let retransmissions settle; a dropped flow needs the break time to count as broken.
    await new Promise((r) => setTimeout(r, useCtm ? 2_000 : (o.breakMs ?? 5000) + 1_000));
    const report = await flows.report();
    const why = Object.entries(report.reasons).map(([r, n]) => `${n}× ${r}`).join(', ');
    say(`flows: ${report.kept} of ${report.flows} kept${report.kept ? `, longest stall ${report.maxStallMs} ms` : ''}${why ? `; broken: ${why}` : ''}`);
    const [entriesA, entriesB] = [(await this.conntrack(this.a)).length, (await this.conntrack(this.b)).length];
    await flows.stop();
    await Promise.all([qa.quit(), qb.quit()]);
    return { mode: o.mode, flows: report, blackoutMs, qemu, moveMs, cutoverMs, source, destination, entriesA, entriesB };
  }
}
