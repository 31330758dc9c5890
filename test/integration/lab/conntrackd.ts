// conntrackd (FTFW over unicast UDP) between two namespaces joined by a
// dedicated veth: the baseline ctmigrate is measured against. A's daemon
// replicates A's table into B's external cache; `conntrackd -c` commits that
// cache to B's kernel table.
//
// Each daemon gets its own config, lock file, UNIX socket and log in a lab
// temp folder, so several pairs (and a host conntrackd) can run side by side.

import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ExecResult, Lab, LabProcess, NetNs } from './netns';

export interface ConntrackdPairOptions {
  /** Sync link addresses (A, B); a /30 of a documentation range by default. */
  readonly addrA?: string;
  readonly addrB?: string;
  readonly port?: number;
  /** Most entries a daemon caches; its docs say: twice the expected table. */
  readonly hashLimit?: number;
}

/** Entry counts of one daemon's caches, from `conntrackd -s cache`. */
export interface CacheCounts {
  readonly internal: number;
  readonly external: number;
}

/** One daemon: its namespace, files and process. */
export class ConntrackdNode {
  constructor(
    readonly ns: NetNs,
    readonly dir: string,
    readonly name: 'a' | 'b',
    readonly proc: LabProcess,
  ) {}

  get configPath(): string {
    return join(this.dir, `${this.name}.conf`);
  }

  get logPath(): string {
    return join(this.dir, `${this.name}.log`);
  }

  /**
   * Runs `conntrackd -C CONF ARGS` (client mode, over the UNIX socket) in the
   * daemon's namespace: the config names the sync interface, and the client
   * warns when it cannot see it.
   */
  client(args: readonly string[], timeoutMs = 120_000): Promise<ExecResult> {
    return this.ns.execOk('conntrackd', ['-C', this.configPath, ...args], { timeoutMs });
  }

  async cacheCounts(): Promise<CacheCounts> {
    const out = (await this.client(['-s', 'cache'])).stdout;
    const grab = (which: string): number => {
      const m = new RegExp(`cache:${which}\\s+active objects:\\s+(\\d+)`).exec(out);
      if (!m) throw new Error(`no ${which} cache in conntrackd -s cache output: ${out}`);
      return Number(m[1]);
    };
    return { internal: grab('internal'), external: grab('external') };
  }

  async log(): Promise<string> {
    return readFile(this.logPath, 'utf8').catch(() => '');
  }
}

export interface CommitResult {
  /** Wall time of `conntrackd -c ct` (the client returns when the commit is done). */
  readonly ms: number;
  /** From the daemon's log: "Committed N new entries". */
  readonly committed: number;
  /** From the daemon's log: "commit has taken X seconds". */
  readonly daemonMs: number;
}

function config(me: string, peer: string, iface: string, dir: string, name: string, opts: ConntrackdPairOptions): string {
  // No Protocol/State filter: everything is replicated (the packaged example
  // config accepts only TCP/SCTP/DCCP). Only the sync link itself is ignored.
  return `Sync {
  Mode FTFW {
    ResendQueueSize 262144
  }
  UDP {
    IPv4_address ${me}
    IPv4_Destination_Address ${peer}
    Port ${opts.port ?? 3780}
    Interface ${iface}
    SndSocketBuffer 24985600
    RcvSocketBuffer 24985600
    Checksum on
  }
}
General {
  Systemd off
  HashSize 262144
  HashLimit ${opts.hashLimit ?? 2_500_000}
  LogFile ${join(dir, `${name}.log`)}
  Syslog off
  LockFile ${join(dir, `${name}.lock`)}
  UNIX {
    Path ${join(dir, `${name}.sock`)}
  }
  NetlinkBufferSize 33554432
  NetlinkBufferSizeMaxGrowth 268435456
  Filter From Userspace {
    Address Ignore {
      IPv4_address ${me}
      IPv4_address ${peer}
    }
  }
}
`;
}

export class ConntrackdPair {
  private constructor(
    readonly a: ConntrackdNode,
    readonly b: ConntrackdNode,
  ) {}

  /**
   * Links A and B with a veth, writes both configs and starts both daemons
   * in the foreground (console mode) as lab processes.
   */
  static async start(lab: Lab, nsA: NetNs, nsB: NetNs, opts: ConntrackdPairOptions = {}): Promise<ConntrackdPair> {
    const addrA = opts.addrA ?? '203.0.113.249';
    const addrB = opts.addrB ?? '203.0.113.250';
    const [endA, endB] = await lab.link(nsA, nsB, { ifname: 'sync0', addrs: [`${addrA}/30`] }, { ifname: 'sync0', addrs: [`${addrB}/30`] });
    const dir = await lab.tempDir('conntrackd');
    await writeFile(join(dir, 'a.conf'), config(addrA, addrB, endA.ifname, dir, 'a', opts));
    await writeFile(join(dir, 'b.conf'), config(addrB, addrA, endB.ifname, dir, 'b', opts));
    const nodes = await Promise.all(
      (['a', 'b'] as const).map(async (name) => {
        const ns = name === 'a' ? nsA : nsB;
        const proc = lab.spawn(ns, 'conntrackd', ['-C', join(dir, `${name}.conf`)]);
        const node = new ConntrackdNode(ns, dir, name, proc);
        await waitUntil(async () => (await node.log()).includes('initialization completed'), 10_000, () =>
          `conntrackd ${name} did not start: ${proc.stdout}${proc.stderr}`,
        );
        return node;
      }),
    );
    return new ConntrackdPair(nodes[0] as ConntrackdNode, nodes[1] as ConntrackdNode);
  }

  /**
   * Waits until B's external cache holds at least n entries; resolves with
   * the time it took.
   */
  async waitReplicated(n: number, timeoutMs = 60_000): Promise<number> {
    const t0 = Date.now();
    let last = 0;
    await waitUntil(
      async () => {
        last = (await this.b.cacheCounts()).external;
        return last >= n;
      },
      timeoutMs,
      () => `B's external cache reached ${last} of ${n} entries`,
    );
    return Date.now() - t0;
  }

  /** Asks A to send its whole internal cache (for entries made before the daemons started). */
  async bulkSend(): Promise<void> {
    await this.a.client(['-B']);
  }

  /** `conntrackd -c ct` on B: external cache into B's kernel table. */
  async commit(): Promise<CommitResult> {
    const before = (await this.b.log()).length;
    const t0 = process.hrtime.bigint();
    await this.b.client(['-c', 'ct']);
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    let text = '';
    await waitUntil(
      async () => {
        text = (await this.b.log()).slice(before);
        return /commit has taken/.test(text);
      },
      10_000,
      () => `no commit report in B's log: ${text}`,
    );
    const committed = Number(/Committed (\d+) new entries/.exec(text)?.[1] ?? NaN);
    const daemonMs = Number(/commit has taken ([\d.]+) seconds/.exec(text)?.[1] ?? NaN) * 1000;
    return { ms, committed, daemonMs };
  }
}

async function waitUntil(test: () => Promise<boolean>, timeoutMs: number, why: () => string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await test()) return;
    if (Date.now() > deadline) throw new Error(why());
    await new Promise((r) => setTimeout(r, 100));
  }
}
