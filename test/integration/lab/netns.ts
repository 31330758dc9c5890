// Network namespaces, veth links and processes for tests against the real
// kernel. Everything a Lab creates is recorded and removed by cleanup(); a
// process-level safety net removes whatever a crashed or interrupted run left.

import { ChildProcess, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** What a finished command left behind. */
export interface ExecResult {
  readonly stdout: string;
  readonly stderr: string;
  /** Exit status; 128 + signal number when a signal ended it. */
  readonly code: number;
}

export interface ExecOptions {
  /** Written to the command's stdin, which is then closed. */
  readonly input?: string | Buffer;
  /** The command is killed (SIGKILL) and the call rejects after this long. */
  readonly timeoutMs?: number;
}

/** A command exited non-zero where success was required. */
export class CommandError extends Error {
  constructor(
    readonly argv: readonly string[],
    readonly result: ExecResult,
  ) {
    super(
      `command failed (exit ${result.code}): ${argv.join(' ')}\n${result.stderr.trim() || result.stdout.trim()}`,
    );
    this.name = 'CommandError';
  }
}

const SIGNAL_NUMBERS: Readonly<Record<string, number>> = {
  SIGHUP: 1, SIGINT: 2, SIGKILL: 9, SIGTERM: 15, SIGABRT: 6, SIGSEGV: 11, SIGPIPE: 13,
};

function exitCode(code: number | null, signal: NodeJS.Signals | null): number {
  if (code !== null) return code;
  return 128 + (signal === null ? 0 : (SIGNAL_NUMBERS[signal] ?? 0));
}

const DEFAULT_TIMEOUT_MS = 30_000;

/** Runs a command to completion (async, no shell) and collects its output. */
export function run(cmd: string, args: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`command timed out after ${opts.timeoutMs ?? DEFAULT_TIMEOUT_MS} ms: ${cmd} ${args.join(' ')}`));
    }, opts.timeoutMs ?? DEFAULT_TIMEOUT_MS);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
        code: exitCode(code, signal),
      });
    });
    // A command that exits before reading its stdin would otherwise crash us with EPIPE.
    child.stdin.on('error', () => undefined);
    child.stdin.end(opts.input ?? '');
  });
}

/** Like run(), but rejects with CommandError unless the command exits 0. */
export async function runOk(cmd: string, args: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
  const result = await run(cmd, args, opts);
  if (result.code !== 0) throw new CommandError([cmd, ...args], result);
  return result;
}

/** A long-running child (server, daemon, client holding a flow open). */
export class LabProcess {
  private stdoutText = '';
  private stderrText = '';
  private readonly waiters: Array<() => void> = [];
  /** Settles when the process has exited, whatever the reason. */
  readonly exited: Promise<ExecResult>;
  private done = false;

  constructor(
    readonly argv: readonly string[],
    private readonly child: ChildProcess,
  ) {
    child.stdout?.on('data', (b: Buffer) => this.append('out', b));
    child.stderr?.on('data', (b: Buffer) => this.append('err', b));
    this.exited = new Promise((resolve) => {
      const finish = (code: number): void => {
        this.done = true;
        this.notify();
        resolve({ stdout: this.stdoutText, stderr: this.stderrText, code });
      };
      child.on('error', (e) => {
        this.stderrText += String(e);
        finish(127);
      });
      child.on('close', (code, signal) => finish(exitCode(code, signal)));
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get stdout(): string {
    return this.stdoutText;
  }

  get stderr(): string {
    return this.stderrText;
  }

  get running(): boolean {
    return !this.done;
  }

  /** Writes a line to the process's stdin (agents take commands this way). */
  send(line: string): void {
    this.child.stdin?.write(line.endsWith('\n') ? line : `${line}\n`);
  }

  /**
   * Resolves with the first match of `pattern` in stdout+stderr; rejects when
   * the process exits first or the time runs out (with what it printed).
   */
  async waitFor(pattern: RegExp, timeoutMs = 10_000): Promise<RegExpMatchArray> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = (this.stdoutText + this.stderrText).match(pattern);
      if (m) return m;
      if (this.done) throw new Error(`${this.describe()} exited before printing ${pattern}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${this.describe()} did not print ${pattern} within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** SIGTERM, then SIGKILL after graceMs; resolves once it has exited. */
  async stop(graceMs = 2_000): Promise<ExecResult> {
    if (this.done) return this.exited;
    this.child.kill('SIGTERM');
    const killer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(killer);
    }
  }

  /** Synchronous last resort for the exit handler. */
  killNow(): void {
    if (!this.done && this.child.pid !== undefined) {
      try {
        process.kill(this.child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }

  private describe(): string {
    return `process ${this.argv.join(' ')} (stdout: ${this.stdoutText.trim().slice(-400)}; stderr: ${this.stderrText.trim().slice(-400)})`;
  }

  private append(stream: 'out' | 'err', b: Buffer): void {
    if (stream === 'out') this.stdoutText += b.toString('utf8');
    else this.stderrText += b.toString('utf8');
    this.notify();
  }

  private notify(): void {
    for (const w of this.waiters.splice(0)) w();
  }
}

/** One address on one interface, e.g. "192.0.2.1/24" or "2001:db8:1::1/64". */
export type CidrAddress = string;

/**
 * A network namespace the run created. Its name is unique to this process
 * (ctm-<pid>-<random>-<label>), so a crashed earlier run never collides.
 */
export class NetNs {
  private constructor(
    readonly name: string,
    readonly label: string,
    /**
     * A directory laid over /etc (read-only overlayfs, inside the command's
     * own mount namespace) for commands that read /etc/xtables/connlabel.conf.
     */
    readonly etcOverlay: string | undefined,
  ) {}

  /** Creates the namespace and brings its loopback up. Prefer Lab.netns(). */
  static async create(label: string, etcOverlay?: string): Promise<NetNs> {
    if (!/^[a-z0-9-]{1,20}$/.test(label)) throw new Error(`bad namespace label "${label}": use [a-z0-9-], at most 20`);
    const name = `ctm-${process.pid}-${randomBytes(3).toString('hex')}-${label}`;
    await runOk('ip', ['netns', 'add', name]);
    const ns = new NetNs(name, label, etcOverlay);
    await ns.execOk('ip', ['link', 'set', 'lo', 'up']);
    return ns;
  }

  /** Runs `ip netns exec NAME cmd args...`. */
  exec(cmd: string, args: readonly string[] = [], opts: ExecOptions = {}): Promise<ExecResult> {
    return run('ip', ['netns', 'exec', this.name, cmd, ...args], opts);
  }

  /** exec() that rejects with CommandError on a non-zero exit. */
  execOk(cmd: string, args: readonly string[] = [], opts: ExecOptions = {}): Promise<ExecResult> {
    return runOk('ip', ['netns', 'exec', this.name, cmd, ...args], opts);
  }

  /**
   * Runs a command with the lab's /etc overlay mounted. `ip netns exec`
   * already gives each command a private (slave) mount namespace, so the
   * mount never reaches the host and vanishes with the command.
   */
  execWithEtc(cmd: string, args: readonly string[] = [], opts: ExecOptions = {}): Promise<ExecResult> {
    if (this.etcOverlay === undefined) return this.exec(cmd, args, opts);
    const script = `mount -t overlay ctm-etc -o "lowerdir=$1:/etc" /etc && shift && exec "$@"`;
    return this.exec('sh', ['-c', script, 'sh', this.etcOverlay, cmd, ...args], opts);
  }

  /** Sets sysctls inside the namespace, e.g. { 'net.ipv4.ip_forward': '1' }. */
  async sysctl(values: Readonly<Record<string, string>>): Promise<void> {
    const args = Object.entries(values).map(([k, v]) => `${k}=${v}`);
    await this.execOk('sysctl', ['-q', '-w', ...args]);
  }

  /** Forwarding on for IPv4 and IPv6 (a router namespace). */
  enableForwarding(): Promise<void> {
    return this.sysctl({ 'net.ipv4.ip_forward': '1', 'net.ipv6.conf.all.forwarding': '1' });
  }

  /** `ip route add DEST via GW` (IPv6 when the gateway is). */
  async addRoute(dest: string, via: string): Promise<void> {
    const family = via.includes(':') ? ['-6'] : ['-4'];
    await this.execOk('ip', [...family, 'route', 'add', dest, 'via', via]);
  }

  /** Loads an nftables ruleset (text) into this namespace, atomically. */
  async nft(ruleset: string): Promise<void> {
    await this.execOk('nft', ['-f', '-'], { input: ruleset });
  }

  /**
   * Makes the kernel track packets here: conntrack hooks are only registered
   * in a namespace once a rule uses conntrack. Entries created over netlink
   * (conntrack -I/-R, conntrackd) exist without this.
   */
  enableTracking(): Promise<void> {
    return this.nft(`table inet ctm_lab_track {
  chain prerouting {
    type filter hook prerouting priority filter; policy accept;
    ct state invalid counter
  }
}
`);
  }

  /**
   * Makes the kernel attach the connlabel extension to new entries here. It
   * does so only in a namespace where some rule uses `ct label`; without it
   * labels given to conntrack -I are silently dropped.
   */
  enableLabels(): Promise<void> {
    return this.nft(`table inet ctm_lab_labels {
  chain prerouting {
    type filter hook prerouting priority filter; policy accept;
    ct label 127 counter
  }
}
`);
  }

  /** PIDs of every process still living in this namespace. */
  async pids(): Promise<number[]> {
    const r = await run('ip', ['netns', 'pids', this.name]);
    return r.stdout.split(/\s+/).filter((s) => s !== '').map(Number);
  }

  /**
   * Kills what still runs inside (all started by this run: the namespace is
   * ours) and deletes the namespace. `ip netns del` alone would leave the
   * namespace alive for as long as a process holds it.
   */
  async destroy(): Promise<void> {
    for (const pid of await this.pids()) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // raced with its exit
      }
    }
    await run('ip', ['netns', 'del', this.name]);
  }

  /** Synchronous destroy() for the exit handler. */
  destroySync(): void {
    const r = spawnSync('ip', ['netns', 'pids', this.name], { encoding: 'utf8' });
    for (const pid of (r.stdout ?? '').split(/\s+/).filter((s) => s !== '')) {
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        // gone
      }
    }
    spawnSync('ip', ['netns', 'del', this.name]);
  }
}

/** One end of a veth pair. */
export interface LinkEnd {
  readonly ns: NetNs;
  /** Interface name inside ns (at most 15 characters). */
  readonly ifname: string;
  readonly addrs: readonly CidrAddress[];
}

export interface LinkEndSpec {
  /** Defaults to "v<n>-<peer label>" cut to 15 characters. */
  readonly ifname?: string;
  readonly addrs?: readonly CidrAddress[];
}

/** Connection-label names written to the lab's connlabel.conf: bit N is "lN". */
export function labelName(bit: number): string {
  return `l${bit}`;
}

/**
 * Deletes namespaces left by lab runs that died without cleaning up (SIGKILL,
 * power loss): names ctm-<pid>-<hex>-<label> whose pid no longer runs. The
 * processes still inside them (e.g. a conntrackd) are killed first.
 */
export async function reapStaleNamespaces(): Promise<string[]> {
  const r = await run('ip', ['netns', 'list']);
  const reaped: string[] = [];
  for (const line of r.stdout.split('\n')) {
    const m = /^(ctm-(\d+)-[0-9a-f]{6}-[a-z0-9-]+)/.exec(line);
    if (!m) continue;
    const [name, pid] = [m[1] as string, Number(m[2])];
    if (pid === process.pid || isAlive(pid)) continue;
    const pids = await run('ip', ['netns', 'pids', name]);
    for (const p of pids.stdout.split(/\s+/).filter((s) => s !== '')) {
      try {
        process.kill(Number(p), 'SIGKILL');
      } catch {
        // gone
      }
    }
    await run('ip', ['netns', 'del', name]);
    reaped.push(name);
  }
  return reaped;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

const liveLabs = new Set<Lab>();
let safetyNetInstalled = false;

function installSafetyNet(): void {
  if (safetyNetInstalled) return;
  safetyNetInstalled = true;
  process.on('exit', () => {
    for (const lab of liveLabs) lab.cleanupSync();
  });
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      for (const lab of liveLabs) lab.cleanupSync();
      process.exit(128 + (SIGNAL_NUMBERS[sig] ?? 0));
    });
  }
}

/**
 * Owns everything a test builds: namespaces, processes, temp folders. Call
 * cleanup() in an after hook; if the process dies first, an exit/signal
 * handler removes the same things synchronously.
 */
export class Lab {
  private readonly namespaces: NetNs[] = [];
  private readonly processes: LabProcess[] = [];
  private readonly dirs: string[] = [];
  private etcOverlayDir: Promise<string> | undefined;
  private linkCount = 0;

  constructor() {
    installSafetyNet();
    liveLabs.add(this);
  }

  /** A fresh namespace, loopback up, removed by cleanup(). */
  async netns(label: string): Promise<NetNs> {
    const etc = await this.etcOverlay();
    const ns = await NetNs.create(label, etc);
    this.namespaces.push(ns);
    return ns;
  }

  /** A fresh folder under the system temp dir, removed by cleanup(). */
  async tempDir(label: string): Promise<string> {
    const dir = await mkdtemp(join(tmpdir(), `ctm-${process.pid}-${label}-`));
    this.dirs.push(dir);
    return dir;
  }

  /**
   * Starts a long-running command, inside `ns` when given, and tracks it.
   * stdin stays open (agents read commands from it).
   */
  spawn(ns: NetNs | undefined, cmd: string, args: readonly string[] = []): LabProcess {
    const argv = ns === undefined ? [cmd, ...args] : ['ip', 'netns', 'exec', ns.name, cmd, ...args];
    const [file, ...rest] = argv;
    // `ip netns exec` execs the command, so the pid we hold is the command's own.
    const child = spawn(file as string, rest, { stdio: ['pipe', 'pipe', 'pipe'] });
    const p = new LabProcess(argv, child);
    this.processes.push(p);
    return p;
  }

  /**
   * A veth pair between two namespaces, both ends up, addresses assigned
   * (IPv6 with nodad so they are usable at once). The ends are created
   * directly inside their namespaces, so names need only be unique there.
   */
  async link(a: NetNs, b: NetNs, specA: LinkEndSpec = {}, specB: LinkEndSpec = {}): Promise<[LinkEnd, LinkEnd]> {
    this.linkCount += 1;
    const n = this.linkCount;
    const nameA = specA.ifname ?? `v${n}-${b.label}`.slice(0, 15);
    const nameB = specB.ifname ?? `v${n}-${a.label}`.slice(0, 15);
    await runOk('ip', ['link', 'add', nameA, 'netns', a.name, 'type', 'veth', 'peer', 'name', nameB, 'netns', b.name]);
    const ends: [LinkEnd, LinkEnd] = [
      { ns: a, ifname: nameA, addrs: specA.addrs ?? [] },
      { ns: b, ifname: nameB, addrs: specB.addrs ?? [] },
    ];
    for (const end of ends) {
      for (const addr of end.addrs) {
        const extra = addr.includes(':') ? ['nodad'] : [];
        await end.ns.execOk('ip', ['addr', 'add', addr, 'dev', end.ifname, ...extra]);
      }
      await end.ns.execOk('ip', ['link', 'set', end.ifname, 'up']);
    }
    return ends;
  }

  /** Stops every process, deletes every namespace and temp folder. Idempotent. */
  async cleanup(): Promise<void> {
    const errors: string[] = [];
    for (const p of this.processes.splice(0).reverse()) {
      await p.stop(1_000).catch((e: unknown) => errors.push(String(e)));
    }
    for (const ns of this.namespaces.splice(0).reverse()) {
      await ns.destroy().catch((e: unknown) => errors.push(String(e)));
    }
    for (const dir of this.dirs.splice(0)) {
      await rm(dir, { recursive: true, force: true }).catch((e: unknown) => errors.push(String(e)));
    }
    this.etcOverlayDir = undefined;
    liveLabs.delete(this);
    if (errors.length > 0) throw new Error(`lab cleanup incomplete: ${errors.join('; ')}`);
  }

  /** cleanup() without awaiting anything, for exit and signal handlers. */
  cleanupSync(): void {
    for (const p of this.processes.splice(0)) p.killNow();
    for (const ns of this.namespaces.splice(0)) ns.destroySync();
    for (const dir of this.dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
    liveLabs.delete(this);
  }

  /**
   * A folder holding xtables/connlabel.conf that names all 128 label bits
   * (bit N is "lN"): the conntrack CLI reads label names only from
   * /etc/xtables/connlabel.conf, which Debian does not ship, and the host's
   * /etc is not ours to change.
   */
  private etcOverlay(): Promise<string> {
    this.etcOverlayDir ??= (async () => {
      const dir = await this.tempDir('etc');
      await mkdir(join(dir, 'xtables'));
      const lines = Array.from({ length: 128 }, (_, bit) => `${bit} ${labelName(bit)}`);
      await writeFile(join(dir, 'xtables', 'connlabel.conf'), `${lines.join('\n')}\n`);
      return dir;
    })();
    return this.etcOverlayDir;
  }
}
