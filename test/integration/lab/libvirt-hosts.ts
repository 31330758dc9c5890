// Two libvirtd "hosts" on one machine, for real libvirt live migrations
// (recipe: ../shared/design/ENVIRONMENT.md, "A real libvirt live migration
// between two hosts on this machine").
//
// Each host is a network namespace the Lab made, and inside it a process
// started as `ip netns exec NS unshare --mount --uts bash supervisor.sh`,
// which owns the host's private mount and UTS namespaces:
//   - hostname H (libvirt refuses a migration between equal host names);
//   - a tmpfs on /run (so /run/libvirt, /run/dbus, /run/lock are the host's
//     own), with the host's folder bind-mounted on /run/dbus: the socket
//     /run/dbus/system_bus_socket is the host's private system bus, found at
//     the standard path by the libvirt hook (which libvirt runs with a
//     minimal environment) and reachable from outside through the folder;
//   - an overlay on /var whose upper layer lives on that tmpfs, so
//     /var/lib/libvirt, /var/cache/libvirt exist for this host only and
//     nothing is ever created in the machine's real /var; the host's folder
//     is bind-mounted on /var/log/libvirt (logs readable from outside);
//   - a copy of /etc/hosts naming the host (libvirt resolves its own name;
//     without it every lookup waits for an unreachable DNS server);
//   - a folder of its own bind-mounted on /etc/libvirt (fresh, not a copy
//     of the machine's, whose domains, networks and hooks must stay out):
//     libvirtd.conf (TCP without auth on the host's address, a host UUID of
//     its own, logs to /var/log/libvirt/libvirtd.log), qemu.conf (user and
//     group root, no security driver) and hooks/qemu.d/ holding symlinks to
//     the hooks under test. The real /etc/libvirt is never written;
//   - when the machine lacks the group `kvm` or the user and group
//     `libvirt-qemu` (the QEMU driver refuses to start without them; Debian
//     creates them only in libvirt-daemon-system), copies of /etc/passwd and
//     /etc/group with them added are bind-mounted over the real files for
//     this host's processes only. Idempotent: entries already present are
//     used as they are; the machine's files are never changed;
//   - the host's system bus (dbus-daemon), its ctmigrated, virtlogd and
//     libvirtd (separate pid files under the private /run/libvirt).
// Everything lives in the namespaces: when the Lab kills what runs in the
// network namespace and deletes it, the mount namespace and every mount in
// it go too. On SIGTERM the supervisor stops QEMU, libvirtd, virtlogd,
// ctmigrated and the bus itself first.

import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { chmod, mkdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { Flows } from './flows';
import { CTMIGRATECTL, CTMIGRATED } from './migration-lab';
import { ExecOptions, ExecResult, Lab, LabProcess, NetNs } from './netns';
import { setTimeout as sleep } from 'node:timers/promises';
import { writePskFile } from './daemon-host';

/** The repo's hook, seen from dist/test/integration/lab/. */
export const REPO_ROOT = resolve(__dirname, '..', '..', '..', '..');
export const REPO_HOOK = join(REPO_ROOT, 'packaging', 'libvirt', 'qemu.d', 'ctmigrate');

/** Debian packages the libvirt lab needs (`apt-get install --no-install-recommends`). */
export const LIBVIRT_LAB_PACKAGES = ['libvirt-daemon', 'libvirt-daemon-driver-qemu', 'libvirt-clients', 'qemu-system-x86'] as const;

const PROGRAMS: ReadonlyArray<[string, string]> = [
  ['libvirtd', 'libvirt-daemon'],
  ['virtlogd', 'libvirt-daemon'],
  ['virsh', 'libvirt-clients'],
  ['qemu-system-x86_64', 'qemu-system-x86'],
  ['dbus-daemon', 'dbus-daemon'],
  ['unshare', 'util-linux'],
  ['stdbuf', 'coreutils'],
  ['nft', 'nftables'],
];

function which(program: string): string | undefined {
  for (const dir of (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(':').concat(['/usr/sbin', '/sbin'])) {
    const p = join(dir, program);
    if (existsSync(p)) return p;
  }
  return undefined;
}

/**
 * Why the libvirt lab cannot run here ('' when it can): not root, or a
 * program or the QEMU driver missing (with the package that brings it).
 */
export function libvirtLabUnavailable(): string {
  if (process.getuid?.() !== 0) return 'needs root (network, mount and UTS namespaces)';
  const missing = PROGRAMS.filter(([p]) => which(p) === undefined).map(([p, pkg]) => `${p} (${pkg})`);
  const driverDirs = ['/usr/lib/x86_64-linux-gnu/libvirt/connection-driver', '/usr/lib64/libvirt/connection-driver', '/usr/lib/libvirt/connection-driver'];
  if (!driverDirs.some((d) => existsSync(join(d, 'libvirt_driver_qemu.so')))) missing.push('the libvirt QEMU driver (libvirt-daemon-driver-qemu)');
  if (!existsSync('/etc/libvirt')) missing.push('/etc/libvirt (libvirt-clients)');
  if (missing.length) return `missing ${missing.join(', ')}: apt-get install --no-install-recommends ${LIBVIRT_LAB_PACKAGES.join(' ')}`;
  return '';
}

/** Path of qemu-system-x86_64, for the domain's <emulator>. */
export function qemuEmulator(): string {
  return which('qemu-system-x86_64') ?? '/usr/bin/qemu-system-x86_64';
}

/** The libvirt version libvirtd reports (e.g. "9.0.0"), for logs. */
export function libvirtVersion(): string {
  try {
    return execFileSync('libvirtd', ['--version'], { encoding: 'utf8' }).trim().split(/\s+/).pop() ?? '?';
  } catch {
    return '?';
  }
}

/** Ids used for the entries added to the host's private passwd/group copies when missing. */
const KVM_GID = 64990;
const LIBVIRT_QEMU_ID = 64991;

/**
 * Copies of /etc/passwd and /etc/group with the group `kvm` and the user and
 * group `libvirt-qemu` added when the machine lacks them; null when nothing
 * is missing (then the real files are used). Entries are only ever added,
 * and only to the copies.
 */
async function identityCopies(dir: string): Promise<{ passwd: string; group: string } | null> {
  const passwd = await readFile('/etc/passwd', 'utf8');
  const group = await readFile('/etc/group', 'utf8');
  const has = (text: string, name: string): boolean => text.split('\n').some((l) => l.startsWith(`${name}:`));
  const addGroups: string[] = [];
  const addUsers: string[] = [];
  if (!has(group, 'kvm')) addGroups.push(`kvm:x:${KVM_GID}:`);
  if (!has(group, 'libvirt-qemu')) addGroups.push(`libvirt-qemu:x:${LIBVIRT_QEMU_ID}:`);
  if (!has(passwd, 'libvirt-qemu')) addUsers.push(`libvirt-qemu:x:${LIBVIRT_QEMU_ID}:${LIBVIRT_QEMU_ID}:Libvirt Qemu (ctmigrate lab):/nonexistent:/usr/sbin/nologin`);
  if (addGroups.length === 0 && addUsers.length === 0) return null;
  const withLines = (text: string, lines: string[]): string => `${text.endsWith('\n') || text === '' ? text : `${text}\n`}${lines.map((l) => `${l}\n`).join('')}`;
  const files = { passwd: join(dir, 'passwd'), group: join(dir, 'group') };
  await writeFile(files.passwd, withLines(passwd, addUsers), { mode: 0o644 });
  await writeFile(files.group, withLines(group, addGroups), { mode: 0o644 });
  return files;
}

export interface LibvirtHostSpec {
  /** Host name (also the UTS hostname); distinct per host. [a-z0-9-]. */
  readonly name: string;
  /** The host's network namespace (made by the same Lab). */
  readonly ns: NetNs;
  /** IPv4 address of the host in ns: libvirtd and ctmigrated listen here. */
  readonly address: string;
  /** Executables linked (by their base name) into the host's /etc/libvirt/hooks/qemu.d/. */
  readonly hooks?: readonly string[];
  /**
   * Start the host's ctmigrated with these flags (besides --config /dev/null,
   * --listen ADDR:7471 and --run-dir, which the host sets); omit for none.
   */
  readonly ctmigrated?: readonly string[];
  /** ctmigrated's peer port. */
  readonly ctmigratePort?: number;
}

/** One `virsh event --event lifecycle --loop` line. */
export interface LifecycleEvent {
  readonly domain: string;
  /** e.g. "Resumed", "Started", "Stopped". */
  readonly event: string;
  /** e.g. "Migrated", "Failed", "Booted". */
  readonly detail: string;
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** `virsh event --event lifecycle --loop` on one host (stdbuf -oL: each line as it happens). */
export class LifecycleWatch {
  constructor(readonly proc: LabProcess) {}

  /** Every event printed so far. */
  events(): LifecycleEvent[] {
    const out: LifecycleEvent[] = [];
    for (const m of this.proc.stdout.matchAll(/event 'lifecycle' for domain '([^']+)': (\S+) (\S+)/g)) {
      out.push({ domain: m[1] as string, event: m[2] as string, detail: m[3] as string });
    }
    return out;
  }

  /**
   * Resolves, the moment virsh prints it (or at once if it already has), with
   * Date.now() when the harness saw the event `event detail` of `domain`.
   */
  async waitFor(domain: string, event: string, detail: string, timeoutMs = 60_000): Promise<number> {
    await this.proc.waitFor(new RegExp(`event 'lifecycle' for domain '${escapeRegExp(domain)}': ${event} ${detail}`), timeoutMs);
    return Date.now();
  }

  describe(): string {
    return this.events().map((e) => `${e.domain} ${e.event} ${e.detail}`).join(', ') || 'none';
  }

  stop(): Promise<ExecResult> {
    return this.proc.stop(500);
  }
}

/** One of ctmigrated's sessions as `ctmigratectl status --json` prints it (the fields tests read). */
export interface CtSession {
  readonly id: string;
  readonly role: string;
  readonly vm: string;
  readonly state: string;
  readonly peer: string;
  readonly sent: number;
  readonly received: number;
  readonly committed: number;
  readonly blocked: boolean;
  readonly createdAt: number;
  readonly cutoverAt: number;
  readonly readyAt: number;
  readonly error: string;
  /** vmstate, vmstate-hot, event or hook. */
  readonly path: string;
}

/** `ctmigratectl status --json`, the parts tests read. */
export interface CtStatus {
  readonly sessions: CtSession[];
  readonly vms: Array<{ uuid: string; [key: string]: unknown }>;
}

const SUPERVISOR_READY = 'ctm-libvirt-host ready';

function q(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * The supervisor, run by `ip netns exec NS unshare --mount --uts bash`.
 * Prints SUPERVISOR_READY once libvirtd has daemonized; on TERM stops what
 * it started and exits. `set -e`: any failed step ends it with the step's
 * error on stderr, which the harness shows.
 */
function supervisorScript(o: { dir: string; name: string; ids: boolean; ctmigrated: string[] | null }): string {
  const d = q(o.dir);
  const node = q(process.execPath);
  const ctm = o.ctmigrated === null ? '' : o.ctmigrated.map(q).join(' ');
  return `#!/bin/bash
set -euo pipefail
D=${d}
ctm=; bus=; sleeper=
stop_all() {
  trap - TERM INT HUP
  for f in /run/libvirt/qemu/*.pid; do [ -s "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null || true; done
  for f in /run/libvirt/libvirtd.pid /run/libvirt/virtlogd.pid; do [ -s "$f" ] && kill -TERM "$(cat "$f")" 2>/dev/null || true; done
  [ -n "$ctm" ] && kill -TERM "$ctm" 2>/dev/null || true
  [ -n "$bus" ] && kill -TERM "$bus" 2>/dev/null || true
  [ -n "$sleeper" ] && kill -TERM "$sleeper" 2>/dev/null || true
  wait || true
  exit 0
}
trap stop_all TERM INT HUP
hostname ${q(o.name)}
mount --make-rprivate /
mount -t tmpfs -o mode=0755,size=64m ctm-run /run
mkdir -p /run/libvirt /run/dbus /run/lock /run/ctm-var/upper /run/ctm-var/work
mount -t overlay ctm-var -o lowerdir=/var,upperdir=/run/ctm-var/upper,workdir=/run/ctm-var/work /var
mkdir -p /var/lib/libvirt/qemu /var/cache/libvirt /var/log/libvirt
mount --bind "$D/log" /var/log/libvirt
mount --bind "$D/dbus" /run/dbus
mount --bind "$D/etc-libvirt" /etc/libvirt
mount --bind "$D/hosts" /etc/hosts
${o.ids ? 'mount --bind "$D/passwd" /etc/passwd\nmount --bind "$D/group" /etc/group' : ': the machine has kvm and libvirt-qemu'}
unset DBUS_SYSTEM_BUS_ADDRESS DBUS_SESSION_BUS_ADDRESS
dbus-daemon --nofork --nopidfile --config-file="$D/system-bus.conf" &
bus=$!
for i in $(seq 100); do [ -S /run/dbus/system_bus_socket ] && break; sleep 0.05; done
[ -S /run/dbus/system_bus_socket ] || { echo "supervisor: the system bus did not come up" >&2; exit 1; }
${
  o.ctmigrated === null
    ? ': no ctmigrated on this host'
    : `${node} ${q(CTMIGRATED)} ${ctm} >"$D/ctmigrated.log" 2>&1 &
ctm=$!
ok=
for i in $(seq 150); do
  if ${node} ${q(CTMIGRATECTL)} status >/dev/null 2>&1; then ok=1; break; fi
  kill -0 "$ctm" 2>/dev/null || break
  sleep 0.1
done
[ -n "$ok" ] || { echo "supervisor: ctmigrated did not answer on the system bus:" >&2; tail -n 20 "$D/ctmigrated.log" >&2; exit 1; }`
}
virtlogd -d -p /run/libvirt/virtlogd.pid
libvirtd -d --listen -p /run/libvirt/libvirtd.pid
echo ${q(SUPERVISOR_READY)}
while :; do
  sleep 3600 &
  sleeper=$!
  wait "$sleeper" || true
done
`;
}

/** A bus that lets root (the only user here) own and call anything, at the standard system-bus path. */
const SYSTEM_BUS_CONFIG = `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=/run/dbus/system_bus_socket</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
  </policy>
</busconfig>
`;

/** A running libvirt host. Built by LibvirtHost.start(); the Lab removes it. */
export class LibvirtHost {
  /** qemu+tcp://ADDR/system */
  readonly uri: string;
  /** The host's system bus, as seen from outside its mount namespace. */
  readonly busAddress: string;
  /** ctmigrated's run dir (per-VM dbus-vmstate buses). */
  readonly runDir: string;
  /** ADDR:PORT of the host's ctmigrated. */
  readonly ctmigrateEndpoint: string;

  private constructor(
    readonly spec: LibvirtHostSpec,
    readonly dir: string,
    readonly supervisor: LabProcess,
  ) {
    this.uri = `qemu+tcp://${spec.address}/system`;
    this.busAddress = `unix:path=${join(dir, 'dbus', 'system_bus_socket')}`;
    this.runDir = join(dir, 'run');
    this.ctmigrateEndpoint = `${spec.address}:${spec.ctmigratePort ?? 7471}`;
  }

  get name(): string {
    return this.spec.name;
  }

  get ns(): NetNs {
    return this.spec.ns;
  }

  /** Builds the host's folder, starts the supervisor and waits until libvirtd answers. */
  static async start(lab: Lab, spec: LibvirtHostSpec): Promise<LibvirtHost> {
    if (!/^[a-z0-9-]{1,30}$/.test(spec.name)) throw new Error(`bad host name "${spec.name}"`);
    const dir = await lab.tempDir(spec.name);
    await chmod(dir, 0o755);
    for (const sub of ['log', 'dbus', 'run']) await mkdir(join(dir, sub), { recursive: true });
    // A fresh /etc/libvirt, not a copy of the machine's: a real installation's
    // domain definitions (with autostart links), networks and hooks must not
    // come to life inside the lab. Files left out mean libvirt's defaults.
    const etc = join(dir, 'etc-libvirt');
    await mkdir(join(etc, 'hooks', 'qemu.d'), { recursive: true });
    await writeFile(join(etc, 'libvirt.conf'), '# ctmigrate libvirt lab: client defaults\n');
    await writeFile(join(etc, 'virtlogd.conf'), '# ctmigrate libvirt lab: virtlogd defaults\n');
    for (const hook of spec.hooks ?? []) await symlink(hook, join(etc, 'hooks', 'qemu.d', basename(hook)));
    await writeFile(
      join(etc, 'libvirtd.conf'),
      [
        '# ctmigrate libvirt lab: one host of two on this machine',
        'listen_tls = 0',
        'listen_tcp = 1',
        'auth_tcp = "none"',
        `listen_addr = "${spec.address}"`,
        `host_uuid = "${randomUUID()}"`,
        'log_outputs = "3:file:/var/log/libvirt/libvirtd.log"',
        '',
      ].join('\n'),
    );
    await writeFile(join(etc, 'qemu.conf'), ['user = "root"', 'group = "root"', 'security_driver = "none"', ''].join('\n'));
    await writeFile(join(dir, 'system-bus.conf'), SYSTEM_BUS_CONFIG);
    // libvirt resolves its own host name (migration cookies, logs); without an
    // entry each lookup waits for a DNS server the namespace cannot reach.
    const hosts = await readFile('/etc/hosts', 'utf8').catch(() => '');
    await writeFile(join(dir, 'hosts'), `${hosts.endsWith('\n') || hosts === '' ? hosts : `${hosts}\n`}${spec.address} ${spec.name}\n`, { mode: 0o644 });
    const ids = await identityCopies(dir);
    const port = spec.ctmigratePort ?? 7471;
    const ctmigrated =
      spec.ctmigrated === undefined ? null : ['--config', '/dev/null', '--listen', `${spec.address}:${port}`, '--run-dir', join(dir, 'run'), ...spec.ctmigrated];
    const script = join(dir, 'supervisor.sh');
    await writeFile(script, supervisorScript({ dir, name: spec.name, ids: ids !== null, ctmigrated }), { mode: 0o755 });
    const supervisor = lab.spawn(spec.ns, 'unshare', ['--mount', '--uts', '--propagation', 'private', 'bash', script]);
    const host = new LibvirtHost(spec, dir, supervisor);
    try {
      await supervisor.waitFor(new RegExp(SUPERVISOR_READY), 30_000);
      // A libvirtd still initialising (probing dmidecode, udev, capabilities)
      // may accept the connection and answer late: such a try is retried
      // like a refused one, until the deadline (seen once in CI: 10 s).
      const deadline = Date.now() + 40_000;
      for (;;) {
        let why: string;
        try {
          const r = await host.virsh(['version'], { timeoutMs: 8_000 });
          if (r.code === 0) break;
          why = r.stderr.trim();
        } catch (e) {
          why = (e as Error).message;
        }
        if (Date.now() > deadline) throw new Error(`libvirtd on ${spec.name} does not answer: ${why}`);
        await sleep(100);
      }
    } catch (e) {
      throw new Error(`libvirt host ${spec.name} did not start: ${(e as Error).message}\n${host.logs()}`);
    }
    return host;
  }

  /** `virsh -c URI ARGS` from inside the host's network namespace. */
  virsh(args: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
    return this.ns.exec('virsh', ['-q', '-c', this.uri, ...args], { timeoutMs: 60_000, ...opts });
  }

  async virshOk(args: readonly string[], opts: ExecOptions = {}): Promise<string> {
    const r = await this.virsh(args, opts);
    if (r.code !== 0) throw new Error(`virsh ${args.join(' ')} on ${this.name} exited ${r.code}: ${r.stderr.trim() || r.stdout.trim()}`);
    return r.stdout;
  }

  /** `ctmigratectl ARGS` in the host's network namespace, on its system bus. */
  ctl(args: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
    return this.ns.exec('env', [`DBUS_SYSTEM_BUS_ADDRESS=${this.busAddress}`, process.execPath, CTMIGRATECTL, ...args], { timeoutMs: 30_000, ...opts });
  }

  async ctlOk(args: readonly string[], opts: ExecOptions = {}): Promise<string> {
    const r = await this.ctl(args, opts);
    if (r.code !== 0) throw new Error(`ctmigratectl ${args.join(' ')} on ${this.name} exited ${r.code}: ${r.stderr.trim() || r.stdout.trim()}`);
    return r.stdout;
  }

  /** The daemon's sessions and registered VMs. */
  async status(): Promise<CtStatus> {
    const out = await this.ctlOk(['status', '--json']);
    const parsed = JSON.parse(out) as Partial<CtStatus>;
    return { sessions: parsed.sessions ?? [], vms: parsed.vms ?? [] };
  }

  /** Starts `virsh event --event lifecycle --loop` (line-buffered) on this host. */
  async watchLifecycle(lab: Lab): Promise<LifecycleWatch> {
    const proc = lab.spawn(this.ns, 'stdbuf', ['-oL', 'virsh', '-c', this.uri, 'event', '--event', 'lifecycle', '--loop']);
    const watch = new LifecycleWatch(proc);
    // virsh prints nothing until an event: give it time to register its callback.
    await sleep(500);
    if (!proc.running) throw new Error(`virsh event on ${this.name} exited: ${proc.stderr.trim()}`);
    return watch;
  }

  /** PIDs of the QEMU processes running on this host. */
  async qemuPids(): Promise<number[]> {
    const pids: number[] = [];
    for (const pid of await this.ns.pids()) {
      try {
        if (readFileSync(`/proc/${pid}/comm`, 'utf8').trim().startsWith('qemu-system')) pids.push(pid);
      } catch {
        // exited meanwhile
      }
    }
    return pids;
  }

  /** Names of the processes in this host's namespace (e.g. to see a helper bus left over). */
  async processNames(): Promise<string[]> {
    const names: string[] = [];
    for (const pid of await this.ns.pids()) {
      try {
        names.push(readFileSync(`/proc/${pid}/comm`, 'utf8').trim());
      } catch {
        // exited meanwhile
      }
    }
    return names;
  }

  /** The tail of the host's logs (supervisor, ctmigrated, libvirtd, QEMU), for failure messages. */
  logs(lines = 30): string {
    const tail = (file: string): string => {
      try {
        return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
      } catch {
        return '(none)';
      }
    };
    const parts = [
      `--- ${this.name} supervisor\n${`${this.supervisor.stdout}${this.supervisor.stderr}`.trim().split('\n').slice(-lines).join('\n')}`,
      `--- ${this.name} ctmigrated.log\n${tail(join(this.dir, 'ctmigrated.log'))}`,
      `--- ${this.name} libvirtd.log\n${tail(join(this.dir, 'log', 'libvirtd.log'))}`,
    ];
    return parts.join('\n');
  }

  /** ctmigrated's log so far. */
  daemonLog(): string {
    try {
      return readFileSync(join(this.dir, 'ctmigrated.log'), 'utf8');
    } catch {
      return '';
    }
  }

  /** Stops QEMU, libvirtd, virtlogd, ctmigrated and the bus (the Lab sweeps whatever remains). */
  async stop(): Promise<void> {
    await this.supervisor.stop(5_000);
  }
}

/** A fresh pre-shared key file (hex, 32 bytes) for the hosts' ctmigrated. */
export const writePsk = writePskFile;

/** The options of a lab domain. */
export interface LabDomainSpec {
  readonly name: string;
  readonly uuid: string;
  /** Addresses written to <ctmigrate:address>. */
  readonly addresses: readonly string[];
  /** `-object` value (ctmigratectl vmstate-args on the source); omitted = no qemu:commandline. */
  readonly vmstateObject?: string;
  readonly memoryMiB?: number;
  /** false: no <metadata> at all (a VM nobody enabled). */
  readonly metadata?: boolean;
}

function xmlAttr(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/'/g, '&apos;').replace(/"/g, '&quot;');
}

/**
 * A tiny TCG domain (type qemu, machine pc, no disks) enabled for ctmigrate
 * the way `ctmigratectl enable-vm` does it: our metadata, and the
 * dbus-vmstate object through <qemu:commandline>.
 */
export function labDomainXml(spec: LabDomainSpec): string {
  const addresses = spec.addresses.map((a) => `      <ctmigrate:address>${xmlAttr(a)}</ctmigrate:address>\n`).join('');
  const commandline =
    spec.vmstateObject === undefined
      ? ''
      : `  <qemu:commandline>
    <qemu:arg value='-object'/>
    <qemu:arg value='${xmlAttr(spec.vmstateObject)}'/>
  </qemu:commandline>
`;
  return `<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>${xmlAttr(spec.name)}</name>
  <uuid>${spec.uuid}</uuid>
${
  spec.metadata === false
    ? ''
    : `  <metadata>
    <ctmigrate:vm xmlns:ctmigrate="urn:ctmigrate:vm:1">
${addresses}    </ctmigrate:vm>
  </metadata>
`
}  <memory unit='MiB'>${spec.memoryMiB ?? 32}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
  </os>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>${xmlAttr(qemuEmulator())}</emulator>
  </devices>
${commandline}</domain>
`;
}

/** `virsh create` of a domain XML on a host (the file is written to the host's folder). */
export async function createDomain(host: LibvirtHost, xml: string, name: string): Promise<void> {
  const file = join(host.dir, `${name}.xml`);
  await writeFile(file, xml);
  await host.virshOk(['create', file]);
}


// ---------------------------------------------------------------------------
// The migration lab on two libvirt hosts: the network a VM's flows cross.
//
//   client  lo 203.0.113.2/32 (flows), 203.0.113.3/32 (probes through B)
//           to-a 203.0.113.5/30 ── A to-client 203.0.113.6/30
//           to-b 203.0.113.9/30 ── B to-client 203.0.113.10/30
//   A, B    hl0 198.51.100.1/24 ── 198.51.100.2/24 (libvirt, migration, ctmigrate peers)
//           to-vm 192.0.2.1/24 (the VM's gateway, the same on both hosts)
//   vm      lo 192.0.2.10/32; eth-a ── A to-vm, eth-b ── B to-vm
//
// The QEMU guest has no NIC here: the "VM's network" is the vm namespace,
// whose flows go through A until the harness moves them to B (client route
// and vm default route switched to B's link, A's link down) the moment B's
// libvirt reports "Resumed Migrated". Probes from 203.0.113.3 always go
// through B, so B's drop is seen working while the VM migrates.
//
// Both hosts run a strict firewall: forward policy drop, established and
// related accepted, new flows only with a bare SYN, and
// nf_conntrack_tcp_loose=0: a flow moved to B lives only if B has its entry.
// ---------------------------------------------------------------------------

export const LAB_ADDR = {
  hostA: '198.51.100.1',
  hostB: '198.51.100.2',
  client: '203.0.113.2',
  probe: '203.0.113.3',
  clientToA: '203.0.113.5',
  aToClient: '203.0.113.6',
  clientToB: '203.0.113.9',
  bToClient: '203.0.113.10',
  gateway: '192.0.2.1',
  vm: '192.0.2.10',
} as const;

/** Port of the VM's echo server. */
export const VM_PORT = 7000;

const STRICT_FIREWALL = `
table inet ctm_lab_strict {
  chain forward {
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    ct state new tcp flags & (fin | syn | rst | ack) == syn accept
    counter comment "refused by the strict firewall"
  }
}
`;

/**
 * A TCP prober run in the client namespace: every 100 ms it opens a
 * connection from SRC to the VM, sends a line and waits up to 300 ms for the
 * echo. Prints "ok T" (T = Date.now() when the echo came) or "fail T".
 */
const PROBER = `
const net = require('node:net');
const [src, host, port] = process.argv.slice(1);
const attempt = () => {
  const s = net.connect({ host, port: Number(port), localAddress: src });
  let done = false;
  const end = (ok) => { if (done) return; done = true; clearTimeout(t); s.destroy(); process.stdout.write((ok ? 'ok ' : 'fail ') + Date.now() + '\\n'); };
  const t = setTimeout(() => end(false), 300);
  s.on('connect', () => s.write('probe\\n'));
  s.on('data', () => end(true));
  s.on('error', () => end(false));
};
setInterval(attempt, 100);
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
`;

/** Probe outcomes: the times (Date.now()) of echoes that came back and of attempts that failed. */
export interface ProbeLog {
  ok: number[];
  fail: number[];
}

export function parseProbes(text: string): ProbeLog {
  const log: ProbeLog = { ok: [], fail: [] };
  for (const m of text.matchAll(/^(ok|fail) (\d+)$/gm)) (m[1] === 'ok' ? log.ok : log.fail).push(Number(m[2]));
  return log;
}

export interface LibvirtLabOptions {
  /** Link the repo's hook into both hosts' qemu.d (default true). */
  readonly hook?: boolean;
  /** Run ctmigrated on both hosts (default true). */
  readonly ctmigrated?: boolean;
  /** Extra ctmigrated flags for both hosts. */
  readonly daemonFlags?: readonly string[];
}

/** Client, two libvirt hosts with strict firewalls, and the VM's network. */
export class LibvirtMigrationLab {
  private constructor(
    readonly lab: Lab,
    readonly client: NetNs,
    readonly vmNet: NetNs,
    readonly a: LibvirtHost,
    readonly b: LibvirtHost,
  ) {}

  static async build(lab: Lab, options: LibvirtLabOptions = {}): Promise<LibvirtMigrationLab> {
    const [client, nsA, nsB, vmNet] = await Promise.all([lab.netns('lv-client'), lab.netns('lv-a'), lab.netns('lv-b'), lab.netns('lv-vm')]);
    await lab.link(nsA, nsB, { ifname: 'hl0', addrs: [`${LAB_ADDR.hostA}/24`] }, { ifname: 'hl0', addrs: [`${LAB_ADDR.hostB}/24`] });
    await lab.link(client, nsA, { ifname: 'to-a', addrs: [`${LAB_ADDR.clientToA}/30`] }, { ifname: 'to-client', addrs: [`${LAB_ADDR.aToClient}/30`] });
    await lab.link(client, nsB, { ifname: 'to-b', addrs: [`${LAB_ADDR.clientToB}/30`] }, { ifname: 'to-client', addrs: [`${LAB_ADDR.bToClient}/30`] });
    await lab.link(vmNet, nsA, { ifname: 'eth-a' }, { ifname: 'to-vm', addrs: [`${LAB_ADDR.gateway}/24`] });
    await lab.link(vmNet, nsB, { ifname: 'eth-b' }, { ifname: 'to-vm', addrs: [`${LAB_ADDR.gateway}/24`] });

    const batch = (ns: NetNs, lines: string[]): Promise<ExecResult> => ns.execOk('ip', ['-batch', '-'], { input: `${lines.join('\n')}\n` });
    await batch(client, [
      `addr add ${LAB_ADDR.client}/32 dev lo`,
      `addr add ${LAB_ADDR.probe}/32 dev lo`,
      `route add 192.0.2.0/24 via ${LAB_ADDR.aToClient} src ${LAB_ADDR.client}`,
      `rule add from ${LAB_ADDR.probe} lookup 100`,
      `route add 192.0.2.0/24 via ${LAB_ADDR.bToClient} src ${LAB_ADDR.probe} table 100`,
    ]);
    await batch(vmNet, [
      `addr add ${LAB_ADDR.vm}/32 dev lo`,
      `route add default via ${LAB_ADDR.gateway} dev eth-a onlink src ${LAB_ADDR.vm}`,
      `rule add to ${LAB_ADDR.probe} lookup 100`,
      `route add default via ${LAB_ADDR.gateway} dev eth-b onlink src ${LAB_ADDR.vm} table 100`,
    ]);
    await batch(nsA, [`route add 203.0.113.0/24 via ${LAB_ADDR.clientToA}`]);
    await batch(nsB, [`route add 203.0.113.0/24 via ${LAB_ADDR.clientToB}`]);
    for (const ns of [nsA, nsB]) {
      await ns.nft(STRICT_FIREWALL);
      await ns.sysctl({ 'net.ipv4.ip_forward': '1', 'net.netfilter.nf_conntrack_tcp_loose': '0' });
    }

    const dir = await lab.tempDir('lv-shared');
    const psk = await writePsk(dir);
    const hooks = options.hook === false ? [] : [REPO_HOOK];
    const flags = [...(options.daemonFlags ?? [])];
    const [a, b] = await Promise.all([
      LibvirtHost.start(lab, { name: 'lvhost-a', ns: nsA, address: LAB_ADDR.hostA, hooks, ctmigrated: options.ctmigrated === false ? undefined : ['--psk-file', psk, ...flags] }),
      LibvirtHost.start(lab, {
        name: 'lvhost-b',
        ns: nsB,
        address: LAB_ADDR.hostB,
        hooks,
        ctmigrated: options.ctmigrated === false ? undefined : ['--psk-file', psk, '--peer', `${LAB_ADDR.hostA}:7471`, ...flags],
      }),
    ]);
    return new LibvirtMigrationLab(lab, client, vmNet, a, b);
  }

  /** The VM's echo server (in the VM's network) and K busy flows from the client, through A until the move. */
  startFlows(k: number, breakMs = 5000): Promise<Flows> {
    return Flows.start(this.lab, this.vmNet, this.client, { source: LAB_ADDR.client, server: LAB_ADDR.vm, port: VM_PORT, count: k, breakMs });
  }

  /** The prober: new connections to the VM through B, every 100 ms. */
  startProbes(): LabProcess {
    return this.lab.spawn(this.client, process.execPath, ['-e', PROBER, LAB_ADDR.probe, LAB_ADDR.vm, String(VM_PORT)]);
  }

  /**
   * The VM's network follows it to B: the VM's default route and the
   * client's route switch to B's links, and A's link to the VM goes down.
   * Both namespaces are switched at once.
   */
  async moveVmNetworkToB(): Promise<void> {
    await Promise.all([
      this.vmNet.execOk('ip', ['-batch', '-'], { input: `route replace default via ${LAB_ADDR.gateway} dev eth-b onlink src ${LAB_ADDR.vm}\nlink set eth-a down\n` }),
      this.client.execOk('ip', ['route', 'replace', '192.0.2.0/24', 'via', LAB_ADDR.bToClient, 'src', LAB_ADDR.client]),
    ]);
  }

  /**
   * Back to the start, for the next VM: its network through A again, and
   * neither host holding an entry of the VM's address (the previous VM's).
   */
  async resetVmNetwork(): Promise<void> {
    await Promise.all([
      this.vmNet.execOk('ip', ['-batch', '-'], { input: `link set eth-a up\nroute replace default via ${LAB_ADDR.gateway} dev eth-a onlink src ${LAB_ADDR.vm}\n` }),
      this.client.execOk('ip', ['route', 'replace', '192.0.2.0/24', 'via', LAB_ADDR.aToClient, 'src', LAB_ADDR.client]),
    ]);
    for (const ns of [this.a.ns, this.b.ns]) {
      for (const dir of ['-s', '-d', '-r', '-q']) await ns.exec('conntrack', ['-D', dir, LAB_ADDR.vm]);
    }
  }
}

/** ctmigrated's drop tables on a host (every family): the addresses they hold and the packets they dropped. */
export interface BlockState {
  /** Some `ctmigrate` table exists. */
  readonly exists: boolean;
  /** Addresses in the tables' sets. */
  readonly addresses: string[];
  /** Packets counted by their rules. */
  readonly dropped: number;
}

interface NftJsonItem {
  table?: { family: string; name: string };
  set?: { family: string; table: string; name: string; elem?: unknown[] };
  rule?: { family: string; table: string; expr?: Array<Record<string, unknown>> };
}

/** Reads the ctmigrate tables from `nft -j list ruleset` in ns. */
export async function blockState(ns: NetNs): Promise<BlockState> {
  const r = await ns.execOk('nft', ['-j', 'list', 'ruleset']);
  const items = (JSON.parse(r.stdout) as { nftables: NftJsonItem[] }).nftables;
  let exists = false;
  const addresses: string[] = [];
  let dropped = 0;
  for (const it of items) {
    if (it.table?.name === 'ctmigrate') exists = true;
    if (it.set?.table === 'ctmigrate') for (const e of it.set.elem ?? []) addresses.push(typeof e === 'string' ? e : JSON.stringify(e));
    if (it.rule?.table === 'ctmigrate') {
      for (const x of it.rule.expr ?? []) {
        const c = x.counter as { packets?: number } | undefined;
        if (c && typeof c.packets === 'number') dropped += c.packets;
      }
    }
  }
  return { exists, addresses, dropped };
}

/** Number of conntrack entries in ns that involve `address` (ctmigratectl dump --address). */
export async function entriesOf(host: LibvirtHost, address: string): Promise<number> {
  const out = await host.ctlOk(['dump', '--address', address, '--format', 'json']);
  return out.split('\n').filter((l) => l.trim() !== '').length;
}

const CLOSED_STATES = new Set(['migrated', 'failed']);

/** What a host still holds of one VM: everything ctmigrate or libvirt could leave behind. */
export interface VmTraces {
  /** The VM is registered with ctmigrated. */
  registered: boolean;
  /** The VM's sessions that are not closed (state other than migrated/failed): "state role". */
  openSessions: string[];
  /** Every session of the VM: "role state". */
  sessions: string[];
  /** Conntrack entries involving the VM's address. */
  entries: number;
  /** The VM's address is in one of ctmigrated's drop sets. */
  blocked: boolean;
  /** libvirt knows the domain here (`virsh domstate`), e.g. "running"; '' when not. */
  domain: string;
  /** QEMU processes of this domain. */
  qemu: number;
}

/** PIDs of the QEMU processes running domain `name` on host (libvirt passes -name guest=NAME,...). */
export async function qemuPidsOf(host: LibvirtHost, name: string): Promise<number[]> {
  const pids: number[] = [];
  for (const pid of await host.qemuPids()) {
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes(`guest=${name},debug-threads=on`)) pids.push(pid);
    } catch {
      // exited
    }
  }
  return pids;
}

export async function vmTraces(host: LibvirtHost, vm: { uuid: string; name: string; address: string }): Promise<VmTraces> {
  const status = await host.status();
  const mine = status.sessions.filter((s) => s.vm === vm.uuid);
  const blocks = await blockState(host.ns);
  const dom = await host.virsh(['domstate', vm.name]);
  const qemu = (await qemuPidsOf(host, vm.name)).length;
  return {
    registered: status.vms.some((v) => v.uuid === vm.uuid),
    openSessions: mine.filter((s) => !CLOSED_STATES.has(s.state)).map((s) => `${s.role} ${s.state}`),
    sessions: mine.map((s) => `${s.role} ${s.state}`),
    entries: await entriesOf(host, vm.address),
    blocked: blocks.addresses.includes(vm.address),
    domain: dom.code === 0 ? dom.stdout.trim() : '',
    qemu,
  };
}

/** Polls `check` until it returns true or the time is up; returns the last value it saw. */
export async function until<T>(probe: () => Promise<T>, ok: (v: T) => boolean, timeoutMs: number, everyMs = 200): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (ok(v) || Date.now() > deadline) return v;
    await sleep(everyMs);
  }
}

/** A lab VM: libvirt name, UUID and the address ctmigrate carries. */
export interface LabVm {
  readonly name: string;
  readonly uuid: string;
  readonly address: string;
}

/** A fresh lab VM (a new UUID and name per run). */
export function newLabVm(address: string, tag: string): LabVm {
  const uuid = randomUUID();
  return { name: `ctm-${tag}-${uuid.slice(0, 8)}`, uuid, address };
}

/**
 * Defines the VM on `host` the way an operator enables it: metadata naming
 * its address, and the dbus-vmstate object `ctmigratectl vmstate-args`
 * prints on that host; then `virsh create`. Returns the domain XML used.
 */
export async function startLabVm(host: LibvirtHost, vm: LabVm): Promise<string> {
  const object = (await host.ctlOk(['vmstate-args', vm.uuid])).trim();
  const xml = labDomainXml({ name: vm.name, uuid: vm.uuid, addresses: [vm.address], vmstateObject: object });
  await createDomain(host, xml, vm.name);
  return xml;
}

/**
 * Starts the VM on `host` from plain XML, as a VM nobody prepared for
 * ctmigrate: no metadata, no <qemu:commandline>. Returns the domain XML used.
 */
export async function startPlainVm(host: LibvirtHost, vm: LabVm): Promise<string> {
  const xml = labDomainXml({ name: vm.name, uuid: vm.uuid, addresses: [], metadata: false });
  await createDomain(host, xml, vm.name);
  return xml;
}

/** The objects under /objects in the VM's running QEMU (QMP qom-list), as "name type". */
export async function qemuObjects(host: LibvirtHost, vm: LabVm): Promise<string[]> {
  const out = await host.virshOk(['qemu-monitor-command', vm.name, JSON.stringify({ execute: 'qom-list', arguments: { path: '/objects' } })]);
  const reply = JSON.parse(out) as { return?: Array<{ name: string; type: string }> };
  return (reply.return ?? []).map((o) => `${o.name} ${o.type}`).sort();
}

/** `virsh migrate --live --p2p VM qemu+tcp://B/system --migrateuri tcp://B` from A. */
export function migrateCommand(vm: LabVm, to: LibvirtHost): string[] {
  return ['migrate', '--live', '--p2p', vm.name, to.uri, '--migrateuri', `tcp://${to.spec.address}`];
}

/** What happened during one live migration of the lab VM with its network. */
export interface MigrationRun {
  readonly exitCode: number;
  readonly stderr: string;
  readonly startedAt: number;
  /** First time B's drop sets were seen holding the VM's address (0 = never). */
  readonly blockSeenAt: number;
  /** Last time they were seen holding it. */
  readonly blockLastSeenAt: number;
  /** Most packets B's drop rules had counted while they held the VM's address. */
  readonly droppedWhileBlocked: number;
  /** When the harness saw B's "Resumed Migrated" (0 = never). */
  readonly resumedAt: number;
  /** When the VM's network had been moved to B. */
  readonly movedAt: number;
  readonly finishedAt: number;
  /** Probes through B (started when the block was first seen). */
  readonly probes: ProbeLog;
}

/**
 * Live-migrates the VM from A to B with `virsh migrate --live --p2p`,
 * watching B: its drop set is polled every 25 ms; once it holds the VM's
 * address the prober sends new connections through B; the VM's network is
 * moved the moment B's libvirt prints "Resumed Migrated".
 */
export async function migrateWithNetwork(m: LibvirtMigrationLab, vm: LabVm, say: (s: string) => void = () => undefined): Promise<MigrationRun> {
  const watch = await m.b.watchLifecycle(m.lab);
  let blockSeenAt = 0;
  let blockLastSeenAt = 0;
  let dropped = 0;
  let prober: LabProcess | undefined;
  let stopMonitor = false;
  const monitor = (async () => {
    while (!stopMonitor) {
      const s = await blockState(m.b.ns).catch(() => undefined);
      if (s?.addresses.includes(vm.address)) {
        const now = Date.now();
        if (blockSeenAt === 0) {
          blockSeenAt = now;
          say(`B blocks ${vm.address} (ctmigrated's drop set holds it); probing through B`);
          prober = m.startProbes();
        }
        blockLastSeenAt = now;
        dropped = Math.max(dropped, s.dropped);
      }
      await sleep(25);
    }
  })();
  const startedAt = Date.now();
  say(`$ virsh -c ${m.a.uri} ${migrateCommand(vm, m.b).join(' ')}`);
  const migration = m.a.virsh(migrateCommand(vm, m.b), { timeoutMs: 120_000 });
  let resumedAt = 0;
  let movedAt = 0;
  try {
    // Whichever comes first: B resumes the VM, or the migration fails.
    const resumed = watch.waitFor(vm.name, 'Resumed', 'Migrated', 120_000);
    resumed.catch(() => undefined);
    const ended = migration.then((r) => {
      if (r.code !== 0) throw new Error(`virsh migrate exited ${r.code}: ${r.stderr.trim()}`);
      return watch.waitFor(vm.name, 'Resumed', 'Migrated', 2_000);
    });
    ended.catch(() => undefined);
    resumedAt = await Promise.race([resumed, ended]);
    await m.moveVmNetworkToB();
    movedAt = Date.now();
    say(`B: Resumed Migrated after ${resumedAt - startedAt} ms; the VM's network moved to B ${movedAt - resumedAt} ms later`);
  } catch (e) {
    say(`no resume on B: ${(e as Error).message}`);
  }
  const r = await migration;
  const finishedAt = Date.now();
  // Let the probes see B forwarding after the move.
  if (prober && movedAt) await sleep(1000);
  stopMonitor = true;
  await monitor;
  await watch.stop();
  let probes: ProbeLog = { ok: [], fail: [] };
  if (prober) {
    const done = await prober.stop(1000);
    probes = parseProbes(done.stdout);
  }
  return { exitCode: r.code, stderr: r.stderr, startedAt, blockSeenAt, blockLastSeenAt, droppedWhileBlocked: dropped, resumedAt, movedAt, finishedAt, probes };
}

/** How the harness makes libvirt abort a migration. */
export type AbortHow = 'kill-destination-qemu' | 'domjobabort';

/** A migration that was made to fail. */
export interface AbortedRun {
  readonly exitCode: number;
  readonly stderr: string;
  /** When the abort was done (0 = the moment never came: B never blocked the VM, or no QEMU there). */
  readonly abortedAt: number;
  /** What was done, for messages. */
  readonly what: string;
}

/**
 * Starts `virsh migrate --live --p2p` of the VM from A to B and, once B's
 * ctmigrated holds the VM's address in its drop set (the incoming session
 * is prepared and pulling), aborts it: either B's QEMU for the VM is killed
 * (SIGKILL) as soon as it runs, or `virsh domjobabort` cancels the job on A.
 */
export async function abortedMigration(m: LibvirtMigrationLab, vm: LabVm, how: AbortHow, say: (s: string) => void = () => undefined): Promise<AbortedRun> {
  say(`$ virsh -c ${m.a.uri} ${migrateCommand(vm, m.b).join(' ')}`);
  const migration = m.a.virsh(migrateCommand(vm, m.b), { timeoutMs: 120_000 });
  let settled = false;
  void migration.finally(() => {
    settled = true;
  });
  let abortedAt = 0;
  let what = 'nothing: the migration ended first';
  const deadline = Date.now() + 60_000;
  while (!settled && abortedAt === 0 && Date.now() < deadline) {
    const s = await blockState(m.b.ns).catch(() => undefined);
    if (s?.addresses.includes(vm.address)) {
      if (how === 'domjobabort') {
        const r = await m.a.virsh(['domjobabort', vm.name]);
        abortedAt = Date.now();
        what = `virsh domjobabort ${vm.name} on A: exit ${r.code}${r.stderr.trim() ? ` (${r.stderr.trim()})` : ''}`;
      } else {
        const pids = await qemuPidsOf(m.b, vm.name);
        if (pids.length > 0) {
          for (const pid of pids) process.kill(pid, 'SIGKILL');
          abortedAt = Date.now();
          what = `SIGKILL to B's QEMU (pid ${pids.join(', ')})`;
        }
      }
      if (abortedAt) say(`while B blocks ${vm.address}: ${what}`);
    }
    if (abortedAt === 0) await sleep(10);
  }
  const r = await migration;
  say(`virsh migrate exited ${r.code}: ${r.stderr.trim().split('\n')[0] ?? ''}`);
  return { exitCode: r.code, stderr: r.stderr, abortedAt, what };
}
