// libvirt's lifecycle events through its own client: one long-running
// `virsh event --loop --event lifecycle` for every domain on the host, so no
// extra daemon (libvirt-dbus) is needed. Lines look like
//   event 'lifecycle' for domain 'NAME': Suspended Migrated
// and name the domain, not its UUID: each subscription resolves its UUID to
// the name first. On the source, "Suspended Migrated" is printed when QEMU
// pauses the VM for the last copy, before the destination resumes it.

import { ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { DomainEventsPort } from '../../plugin/ports/domain-events-port';
import { Log } from '../../plugin/ports/log-port';
import { Virsh } from './virsh';

const LINE = /^event 'lifecycle' for domain '(.*)': (\S+) (\S+)\s*$/;

/**
 * virsh registers its callback after connecting and says nothing until an
 * event comes: a watcher still running this long after its start has done so
 * (one that cannot connect exits at once).
 */
const SETTLE_MS = 300;
/** Pause before a watcher that died (libvirtd restarted) is started again. */
const RESTART_MS = 1000;

function tool(name: string): string | undefined {
  return [`/usr/bin/${name}`, `/bin/${name}`].find((p) => existsSync(p));
}

/**
 * The watcher's command line. virsh writes to a pipe in blocks: stdbuf makes
 * it write each event's line at once. A daemon that dies without stopping
 * it (kill -9) would leave it running until its next event: setpriv asks the
 * kernel to end it with its parent (util-linux, like stdbuf's coreutils,
 * is on every Debian host; without them the watcher runs plain).
 */
export function watcherCommand(uri: string): string[] {
  let argv = ['virsh', '-c', uri, 'event', '--loop', '--event', 'lifecycle'];
  const buf = tool('stdbuf');
  if (buf) argv = [buf, '-oL', ...argv];
  const priv = tool('setpriv');
  if (priv) argv = [priv, '--pdeathsig', 'TERM', '--', ...argv];
  return argv;
}

export class LibvirtDomainEvents implements DomainEventsPort {
  private child: ChildProcess | null = null;
  private following: Promise<void> | null = null;
  private readonly byName = new Map<string, Set<() => void>>();
  private restart: NodeJS.Timeout | null = null;
  private closed = false;

  constructor(
    private readonly uri: string,
    private readonly virsh: Virsh,
    private readonly log?: Log,
  ) {}

  async onMigrationPause(uuid: string, paused: () => void): Promise<() => void> {
    if (this.closed) throw new Error('domain events are closed');
    const name = await this.virsh.domainName(uuid, 3000);
    let set = this.byName.get(name);
    if (!set) this.byName.set(name, (set = new Set()));
    const listener = (): void => paused();
    // Listening before the watcher settles: an event in its first moments counts too.
    set.add(listener);
    const stop = (): void => {
      set.delete(listener);
      if (set.size === 0 && this.byName.get(name) === set) this.byName.delete(name);
    };
    try {
      await this.follow();
    } catch (e) {
      stop();
      throw e;
    }
    return stop;
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.restart) clearTimeout(this.restart);
    this.byName.clear();
    this.child?.kill('SIGTERM');
    this.child = null;
  }

  /** The watcher, started once and kept: resolves once it listens, rejects when it cannot. */
  private follow(): Promise<void> {
    if (this.following) return this.following;
    const [file, ...args] = watcherCommand(this.uri);
    const child = spawn(file as string, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    let stderr = '';
    child.stderr?.on('data', (b: Buffer) => {
      if (stderr.length < 4096) stderr += b.toString('utf8');
    });
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => this.onLine(line));
    const following = new Promise<void>((resolve, reject) => {
      const settled = setTimeout(resolve, SETTLE_MS);
      const gone = (why: string): void => {
        clearTimeout(settled);
        if (this.child === child) this.child = null;
        if (this.following === following) this.following = null;
        reject(new Error(why));
        if (this.closed || this.byName.size === 0) return;
        this.log?.warn(`libvirt's event stream ended (${why}); following it again in ${RESTART_MS} ms`);
        this.restart = setTimeout(() => {
          this.restart = null;
          if (!this.closed) this.follow().catch(() => undefined);
        }, RESTART_MS);
      };
      child.on('error', (e: NodeJS.ErrnoException) => gone(e.code === 'ENOENT' ? 'virsh not found (install libvirt-clients)' : `cannot run virsh: ${e.message}`));
      child.on('exit', (code, signal) => gone(`virsh event ${signal ? `killed by ${signal}` : `exited ${code}`}${stderr.trim() ? `: ${stderr.trim().split('\n')[0]}` : ''}`));
    });
    following.catch(() => undefined);
    this.following = following;
    return following;
  }

  private onLine(line: string): void {
    const m = LINE.exec(line);
    if (!m || m[2] !== 'Suspended' || m[3] !== 'Migrated') return;
    for (const l of this.byName.get(m[1] as string) ?? []) l();
  }
}
