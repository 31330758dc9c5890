// The container lab: a container whose network namespace moves from host A
// to host B the way CRIU moves a container, with busy TCP flows through
// strict, NATing host firewalls, and ctmigrate's CRIU action script run by
// a stand-in CRIU process (criu-driver.ts) at each step.
//
//            client  (lo 203.0.113.100/32; to-a .2/30, to-b .6/30)
//             /     routes the published address 198.51.100.80 to A, later B
//   A  client 203.0.113.1/30                B  client 203.0.113.5/30
//      ctr    192.0.2.1/24                     ctr    192.0.2.1/24
//             \                                   /
//            container (eth-a 192.0.2.10/24 up, eth-b 192.0.2.10/24 down)
//
// Both hosts: forward chain `policy drop`, established/related accepted, a
// new TCP flow only with a bare SYN, nf_conntrack_tcp_loose=0; the
// container's port 7000 is published as 198.51.100.80:8080 (DNAT) and its
// egress leaves as 198.51.100.80 (SNAT). A flow that reaches B mid-stream
// without B's conntrack knowing it, NAT binding included, is dropped.
//
// What CRIU does to the tasks the lab does by hand: the container's
// processes are stopped (SIGSTOP) for the dump and continued after the
// restore; CRIU's own network lock (drop everything but loopback inside the
// container's namespace) goes in after network-lock and comes out after
// network-unlock. The sockets survive because the namespace itself moves.

import { join } from 'node:path';
import { mkdir, readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { FlowReport, Flows } from './flows';
import { Lab, LabProcess, NetNs, runOk } from './netns';
import { ForwardingReport, watchForwarding } from './forwarding-probe';
export type { ForwardingReport } from './forwarding-probe';
import { startCtmigrated, startSystemBus, writePskFile } from './daemon-host';
import { buildTwoHosts } from './two-hosts';

export const CT = {
  container: '192.0.2.10',
  gateway: '192.0.2.1',
  published: '198.51.100.80',
  publishedPort: 8080,
  port: 7000,
  client: '203.0.113.100',
  clientA: '203.0.113.2',
  clientB: '203.0.113.6',
  hostAClient: '203.0.113.1',
  hostBClient: '203.0.113.5',
  /** The hosts' peer link, for the labs with daemons. */
  peerA: '203.0.113.9',
  peerB: '203.0.113.10',
  peerPort: 7471,
  /** The client's echo server the container's egress flows reach. */
  egressPort: 7001,
} as const;

/** The CRIU action script as installed from a checkout (dist/test/integration/lab -> packaging/criu). */
export const CRIU_ACTION = join(__dirname, '..', '..', '..', '..', 'packaging', 'criu', 'criu-action');
const CRIU_DRIVER = join(__dirname, 'criu-driver.js');

const FIREWALL = `
table inet lab_firewall {
  chain forward {
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    tcp flags & (fin|syn|rst|ack) == syn ct state new accept
    meta l4proto { icmp, ipv6-icmp } accept
  }
  chain prerouting_nat {
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr ${CT.published} tcp dport ${CT.publishedPort} dnat ip to ${CT.container}:${CT.port}
  }
  chain postrouting_nat {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "client" ip saddr ${CT.container} snat ip to ${CT.published}
  }
}
`;

/** CRIU's network lock inside the container's namespace: nothing in or out but loopback. */
const CRIU_LOCK = `
table inet lab_criu_lock {
  chain input { type filter hook input priority -350; policy drop; iif lo accept; }
  chain output { type filter hook output priority -350; policy drop; oif lo accept; }
}
`;

/** What one checkpoint and restore of the container did. */
export interface ContainerOutcome {
  published: FlowReport;
  egress: FlowReport;
  /** Freeze on A to thaw on B (the container's own downtime). */
  frozenMs: number;
  /** What the stand-in CRIU logged of the script, per run. */
  dumpLog: string[];
  restoreLog: string[];
  /** The restore back on A after a failed one (thenRestoreOnA). */
  backLog: string[];
  /** failBy init-dies: B's drop was gone while the stand-in CRIU still ran. */
  liftedWhileCriuRuns: boolean;
  /** Exit status of each step the script ran. */
  codes: Record<string, number>;
  manifest: { container: string; addresses: string[]; entries: number } | null;
  forwarding: ForwardingReport;
  entriesA: string[];
  entriesB: string[];
  tablesA: string[];
  tablesB: string[];
}


export interface CtHost {
  readonly name: 'A' | 'B';
  readonly ns: NetNs;
  /** Its address on the peer link (labs with daemons). */
  readonly peer: string;
  /** DBUS_SYSTEM_BUS_ADDRESS of its private system bus, '' without daemons. */
  bus: string;
  daemon: LabProcess | null;
}

/** One CRIU run (a dump or a restore) on a host: the stand-in CRIU process. */
export class CriuRun {
  private constructor(readonly proc: LabProcess) {}

  static async start(lab: Lab, h: CtHost, imageDir: string, script = CRIU_ACTION, env: Record<string, string> = {}): Promise<CriuRun> {
    const inherited = Object.entries({ ...(h.bus ? { DBUS_SYSTEM_BUS_ADDRESS: h.bus } : {}), ...env }).map(([k, v]) => `${k}=${v}`);
    const p = lab.spawn(h.ns, process.execPath, [CRIU_DRIVER, script, imageDir, ...inherited]);
    await p.waitFor(/^ready$/m, 10_000);
    return new CriuRun(p);
  }

  /** Run the script for one step; resolves with its exit status. */
  async step(action: string, initPid?: number): Promise<number> {
    this.proc.send(`run ${action}${initPid ? ` ${initPid}` : ''}`);
    const m = await this.proc.waitFor(new RegExp(`^ran ${action} (\\d+)$`, 'm'), 60_000);
    return Number(m[1]);
  }

  /** The script's lines (what CRIU would log). */
  get log(): string[] {
    return this.proc.stdout
      .split('\n')
      .filter((l) => l.startsWith('log '))
      .map((l) => l.slice(4));
  }

  /** CRIU ends after its last step. */
  async end(): Promise<void> {
    this.proc.send('exit');
    await this.proc.exited;
  }

  /** CRIU dies mid-way (a failed restore: CRIU runs no script for it). */
  async die(): Promise<void> {
    await this.proc.stop(500);
  }
}

export class ContainerLab {
  /** The container's init task (CRTOOLS_INIT_PID). */
  private init: LabProcess | null = null;
  /** The container's processes the dump freezes. */
  private tasks: LabProcess[] = [];

  private constructor(
    readonly lab: Lab,
    readonly a: CtHost,
    readonly b: CtHost,
    readonly client: NetNs,
    readonly ctr: NetNs,
    readonly dir: string,
  ) {}

  /** The lab; with `daemons`, each host also runs ctmigrated on a private bus, B naming A as its peer. */
  static async build(o: { daemons?: boolean } = {}): Promise<ContainerLab> {
    const lab = new Lab();
    try {
      const dir = await lab.tempDir('ctr');
      const { a: nsA, b: nsB, client, guest: ctr } = await buildTwoHosts(lab, { guestLabel: 'ctr', guestLink: 'ctr', firewall: FIREWALL, clientRoute: `${CT.published}/32` });
      const a: CtHost = { name: 'A', ns: nsA, peer: CT.peerA, bus: '', daemon: null };
      const b: CtHost = { name: 'B', ns: nsB, peer: CT.peerB, bus: '', daemon: null };
      if (o.daemons) {
        await lab.link(nsA, nsB, { ifname: 'peer', addrs: [`${CT.peerA}/30`] }, { ifname: 'peer', addrs: [`${CT.peerB}/30`] });
        const psk = await writePskFile(dir);
        for (const h of [a, b]) {
          const hdir = await lab.tempDir(`ct${h.name.toLowerCase()}`);
          h.bus = await startSystemBus(lab, h.ns, hdir);
          h.daemon = await startCtmigrated(lab, h.ns, {
            bus: h.bus,
            listen: `${h.peer}:${CT.peerPort}`,
            pskFile: psk,
            runDir: join(hdir, 'run'),
            peers: h.name === 'B' ? [`${CT.peerA}:${CT.peerPort}`] : [`${CT.peerB}:${CT.peerPort}`],
          });
        }
      }
      return new ContainerLab(lab, a, b, client, ctr, dir);
    } catch (e) {
      await lab.cleanup().catch(() => undefined);
      throw e;
    }
  }

  async close(): Promise<void> {
    await this.lab.cleanup();
  }

  /** Put the container back on A, unlocked and running, with no state of earlier runs (the lab is shared between cases). */
  async reset(): Promise<void> {
    for (const t of this.tasks) await t.stop(500);
    this.tasks = [];
    await this.init?.stop(500);
    this.init = null;
    await this.ctr.exec('nft', ['delete', 'table', 'inet', 'lab_criu_lock']);
    await this.placeOn(this.a);
    for (const h of [this.a, this.b]) {
      await h.ns.exec('conntrack', ['-F']);
      await h.ns.exec('nft', ['delete', 'table', 'inet', 'ctmigrate_containers']);
    }
  }

  /** The container's init task (a process in its namespace). */
  async initPid(): Promise<number> {
    if (!this.init) {
      this.init = this.lab.spawn(this.ctr, 'sleep', ['infinity']);
      await sleep(50);
    }
    return this.init.pid as number;
  }

  /** A fresh image directory (what `criu dump -D` writes and `criu restore -D` reads). */
  async imageDir(name: string): Promise<string> {
    const d = join(this.dir, name);
    await mkdir(d, { recursive: true });
    return d;
  }

  /** `count` flows from the client to the published port, and `count` from the container out (SNAT). */
  async startFlows(count: number, breakMs = 5000): Promise<{ published: Flows; egress: Flows }> {
    const published = await Flows.start(this.lab, this.ctr, this.client, {
      source: CT.client,
      server: CT.container,
      port: CT.port,
      connect: { host: CT.published, port: CT.publishedPort },
      count,
      breakMs,
    });
    const egress = await Flows.start(this.lab, this.client, this.ctr, { source: CT.container, server: CT.client, port: CT.egressPort, count, breakMs });
    this.tasks = [published.server, egress.client];
    return { published, egress };
  }

  /** A TCP connection attempt from the client to the published port, given up after `ms`. */
  async knock(ms: number): Promise<void> {
    await this.client.exec('timeout', [String(ms / 1000), 'bash', '-c', `exec 3<>/dev/tcp/${CT.published}/${CT.publishedPort}`], { timeoutMs: ms + 2_000 });
  }

  /** CRIU freezes the container's tasks before network-lock. */
  async freeze(): Promise<void> {
    for (const t of this.tasks) if (t.pid) process.kill(t.pid, 'SIGSTOP');
  }

  async thaw(): Promise<void> {
    for (const t of this.tasks) if (t.pid) process.kill(t.pid, 'SIGCONT');
  }

  /** CRIU's own network lock in the container's namespace (after the network-lock script; on restore it holds until after network-unlock). */
  async lockNetwork(): Promise<void> {
    await this.ctr.nft(CRIU_LOCK);
  }

  async unlockNetwork(): Promise<void> {
    await this.ctr.execOk('nft', ['delete', 'table', 'inet', 'lab_criu_lock']);
  }

  /** The container's namespace is on this host now: its link there up, the other down, the client's route to its published address through it. */
  async placeOn(h: CtHost): Promise<void> {
    const [up, down, via] = h.name === 'A' ? ['eth-a', 'eth-b', CT.hostAClient] : ['eth-b', 'eth-a', CT.hostBClient];
    await Promise.all([
      runOk('ip', ['-n', this.ctr.name, '-batch', '-'], { input: `link set ${down} down\nlink set ${up} up\nroute replace default via ${CT.gateway} dev ${up} onlink\n` }),
      runOk('ip', ['-n', this.client.name, 'route', 'replace', `${CT.published}/32`, 'via', via, 'src', CT.client]),
    ]);
  }

  /** `conntrack -L` lines of a host that involve the container or its published address (timeouts and ids cut). */
  async entries(h: CtHost): Promise<string[]> {
    const r = await h.ns.execOk('conntrack', ['-L'], { timeoutMs: 30_000 });
    return r.stdout
      .split('\n')
      .filter((l) => l.includes(`=${CT.container} `) || l.includes(`=${CT.published} `))
      .map((l) => l.replace(/^(\S+\s+\d+\s+)\d+\s+/, '$1').replace(/\s+(mark|use|id)=\d+/g, ''))
      .sort();
  }

  /** Tables of a host's ruleset. */
  async tables(h: CtHost): Promise<string[]> {
    const r = await h.ns.execOk('nft', ['list', 'tables']);
    return r.stdout.split('\n').filter((l) => l.trim() !== '');
  }

  async manifest(dir: string): Promise<{ container: string; addresses: string[]; entries: number }> {
    return JSON.parse(await readFile(join(dir, 'ctmigrate.json'), 'utf8')) as { container: string; addresses: string[]; entries: number };
  }

  /** Watch what a host forwards for the container while its drop is in place (forwarding-probe.ts). */
  watchForwarding(h: CtHost): Promise<{ stop(): Promise<ForwardingReport> }> {
    return watchForwarding(h.ns, CT.container, 'table inet ctmigrate_containers');
  }

  /**
   * One container migration A -> B as CRIU drives it, with busy flows both
   * ways: the dump on A (pre-dump, network-lock, post-dump), then the
   * restore on B (pre-restore, setup-namespaces with the link moved,
   * post-setup-namespaces, post-restore, network-unlock, pre-resume,
   * post-resume). `failAfter` ends the restore there, CRIU dying.
   */
  async migrate(o: { flows: number; run: string; failAfter?: string; failBy?: 'criu-exits' | 'init-dies'; thenRestoreOnA?: boolean; withoutCtmigrate?: boolean; dumpEnv?: Record<string, string>; restoreEnv?: Record<string, string>; streamed?: boolean; breakMs?: number; restoreMs?: number; progress?: (line: string) => void }): Promise<ContainerOutcome> {
    const say = o.progress ?? ((): void => undefined);
    const pid = await this.initPid();
    const flows = await this.startFlows(o.flows, o.breakMs);
    say(`${o.flows} flows to the published port ${CT.published}:${CT.publishedPort} (DNAT) and ${o.flows} from the container out (SNAT), through A`);
    await sleep(300);
    await Promise.all([flows.published.mark(), flows.egress.mark()]);
    const dir = await this.imageDir(o.run);
    const codes: Record<string, number> = {};
    const stepOk = async (run: CriuRun, action: string, initPid?: number): Promise<void> => {
      codes[action] = await run.step(action, initPid);
      if (codes[action] !== 0) throw new Error(`criu-action ${action} exited ${codes[action]}: ${run.log.join(' | ')}`);
    };

    const script = o.withoutCtmigrate ? '/bin/true' : CRIU_ACTION;
    const dump = await CriuRun.start(this.lab, this.a, dir, script, o.dumpEnv);
    await stepOk(dump, 'pre-dump');
    const frozenAt = Date.now();
    await this.freeze();
    await stepOk(dump, 'network-lock', pid);
    await this.lockNetwork();
    await stepOk(dump, 'post-dump', pid);
    await dump.end();
    const manifest = await this.manifest(dir).catch(() => null);
    say(`A: checkpoint taken; ${manifest?.entries ?? 0} host entries packed into ${dir}`);

    const watch = await this.watchForwarding(this.b);
    // Images streamed to B (criu-image-streamer, a page server): B's directory has CRIU's images, none of ours.
    const restoreDir = o.streamed ? await this.imageDir(`${o.run}-streamed`) : dir;
    const restore = await CriuRun.start(this.lab, this.b, restoreDir, script, o.restoreEnv);
    let frozenMs = -1;
    let backLog: string[] = [];
    let liftedWhileCriuRuns = false;
    try {
      await stepOk(restore, 'pre-restore');
      await this.placeOn(this.b);
      await stepOk(restore, 'setup-namespaces', pid);
      await stepOk(restore, 'post-setup-namespaces', pid);
      // CRIU restores the tasks' memory here. Meanwhile a new client knocks
      // on the published port through B: without the drop B would forward
      // its SYN to the container (whose own lock would then drop it).
      await Promise.all([sleep(o.restoreMs ?? 1_000), this.knock(Math.min(800, o.restoreMs ?? 1_000))]);
      if (o.failAfter === 'post-setup-namespaces') {
        if (o.failBy === 'init-dies') {
          // A CRIU that lives on (runc's, serving RPC) kills the restored tree when the restore fails.
          await this.init?.stop(500);
          this.init = null;
          say('B: the restore failed after post-setup-namespaces (the restored init was killed, CRIU lives on)');
          // Only the watcher that follows the init can lift the drop now.
          const until = Date.now() + 5_000;
          while ((await this.tables(this.b)).some((t) => t.includes('ctmigrate_containers')) && Date.now() < until) await sleep(100);
          liftedWhileCriuRuns = restore.proc.running && !(await this.tables(this.b)).some((t) => t.includes('ctmigrate_containers'));
        } else {
          await restore.die();
          say('B: the restore failed after post-setup-namespaces (CRIU exited)');
        }
        if (o.thenRestoreOnA) {
          // The operator restores the same checkpoint where it came from.
          const back = await CriuRun.start(this.lab, this.a, dir, script);
          await stepOk(back, 'pre-restore');
          await this.placeOn(this.a);
          for (const step of ['setup-namespaces', 'post-setup-namespaces', 'post-restore', 'network-unlock']) await stepOk(back, step, pid);
          await this.unlockNetwork();
          await this.thaw();
          frozenMs = Date.now() - frozenAt;
          for (const step of ['pre-resume', 'post-resume']) await stepOk(back, step, pid);
          await back.end();
          backLog = back.log;
          say(`A: the checkpoint restored back on A; the container was frozen for ${frozenMs} ms`);
        } else {
          // The flow agents answer the lab's questions; the flows themselves stay cut (the lock is still in).
          await this.thaw();
        }
      } else {
        await stepOk(restore, 'post-restore', pid);
        await stepOk(restore, 'network-unlock', pid);
        await this.unlockNetwork();
        await this.thaw();
        frozenMs = Date.now() - frozenAt;
        await stepOk(restore, 'pre-resume', pid);
        await stepOk(restore, 'post-resume', pid);
        await restore.end();
        say(`B: restored; the container was frozen for ${frozenMs} ms`);
      }
    } finally {
      if (restore.proc.running) await restore.die();
    }
    // A flow cut off needs the break time to count as broken.
    await sleep(o.withoutCtmigrate ? (o.breakMs ?? 5000) + 1_000 : o.failAfter && !o.thenRestoreOnA ? 1_500 : 2_000);
    const forwarding = await watch.stop();
    const [published, egress] = await Promise.all([flows.published.report(), flows.egress.report()]);
    const out: ContainerOutcome = {
      published,
      egress,
      frozenMs,
      dumpLog: dump.log,
      restoreLog: restore.log,
      backLog,
      liftedWhileCriuRuns,
      codes,
      manifest,
      forwarding,
      entriesA: await this.entries(this.a),
      entriesB: await this.entries(this.b),
      tablesA: await this.tables(this.a),
      tablesB: await this.tables(this.b),
    };
    await flows.published.stop();
    await flows.egress.stop();
    return out;
  }
}
