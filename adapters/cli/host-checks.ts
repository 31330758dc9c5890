// The items `ctmigratectl check` looks at, each on its own: what works, and
// for what does not, the one thing to do about it.

import { execFile } from 'node:child_process';
import { accessSync, constants, existsSync, lstatSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { connect } from 'node:net';
import { ConnectionTable } from '../../plugin/connection-table';
import { DaemonConfig } from '../../plugin/daemon-config';
import { ConntrackPort } from '../../plugin/ports/conntrack-port';
import { ManagerClient } from '../../plugin/ports/manager-client';
import { formatPeerAddress, PeerAddress } from '../../plugin/ports/peer-port';
import { parseAddress } from '../../plugin/address';
import { conntrackEventsSetting } from '../conntrack/event-sysctl';
import { loadCredentials } from '../peer/tls-credentials';
import { readDomain } from '../libvirt/domain-xml';
import { virshFor } from './composition-root';

/** One line of `check`. */
export interface CheckResult {
  item: string;
  ok: boolean;
  detail: string;
  /** What to do when not ok. */
  fix?: string;
}

const message = (e: unknown): string => (e instanceof Error ? e.message : String(e));

function run(file: string, args: string[], timeoutMs: number): Promise<{ code: number | null; stdout: string; stderr: string; missing: boolean }> {
  return new Promise((resolve) => {
    execFile(file, args, { timeout: timeoutMs }, (err, stdout, stderr) => {
      const e = err as (NodeJS.ErrnoException & { code?: string | number }) | null;
      resolve({ code: e ? (typeof e.code === 'number' ? e.code : null) : 0, stdout: String(stdout), stderr: String(stderr), missing: e?.code === 'ENOENT' });
    });
  });
}

/** The kernel's conntrack is there and ctnetlink answers a dump in this namespace. */
export async function checkConntrack(conntrack: ConntrackPort): Promise<CheckResult> {
  const item = 'conntrack';
  if (!existsSync('/proc/sys/net/netfilter/nf_conntrack_max')) {
    return { item, ok: false, detail: 'the nf_conntrack module is not loaded', fix: 'modprobe nf_conntrack (and nf_conntrack_netlink)' };
  }
  try {
    // A documentation address: the dump walks the kernel's table but keeps nothing.
    const stats = await conntrack.dump({ addresses: [parseAddress('192.0.2.255')] }, ConnectionTable.create({ capacity: 16 }));
    return { item, ok: true, detail: `ctnetlink dump works (kernel filters: ${stats.kernelFilters.join(', ') || 'none'})` };
  } catch (e) {
    return { item, ok: false, detail: `ctnetlink dump failed: ${message(e)}`, fix: 'run as root (CAP_NET_ADMIN) and modprobe nf_conntrack_netlink' };
  }
}

/** Every new entry reports its changes (the daemon sets this at start). */
export function checkEvents(): CheckResult {
  const item = 'conntrack events';
  const v = conntrackEventsSetting();
  if (v === '1') return { item, ok: true, detail: 'net.netfilter.nf_conntrack_events = 1' };
  return {
    item,
    ok: false,
    detail: v === null ? 'net.netfilter.nf_conntrack_events cannot be read' : `net.netfilter.nf_conntrack_events = ${v}: entries created while nobody listens never report changes`,
    fix: 'sysctl -w net.netfilter.nf_conntrack_events=1 (ctmigrated sets it when it starts)',
  };
}

/** nft runs and can read the ruleset (the destination's drop goes through it). */
export async function checkNft(): Promise<CheckResult> {
  const item = 'nftables';
  const r = await run('nft', ['-j', 'list', 'tables'], 5000);
  if (r.missing) return { item, ok: false, detail: 'nft not found on PATH', fix: 'apt-get install nftables' };
  if (r.code !== 0) return { item, ok: false, detail: `nft -j list tables failed: ${r.stderr.trim().split('\n')[0] || `exit ${r.code}`}`, fix: 'run as root (CAP_NET_ADMIN); check that the nf_tables module loads' };
  return { item, ok: true, detail: 'nft -j list tables works' };
}

/** The system bus answers and ctmigrated owns org.ctmigrate1 on it. */
export async function checkDaemon(client: ManagerClient, busAddress: string): Promise<CheckResult> {
  const item = 'ctmigrated';
  try {
    const s = await Promise.race([
      client.status(),
      new Promise<never>((_, reject) => setTimeout(() => reject(new Error('ctmigrated did not answer Status within 5 s')), 5000).unref()),
    ]);
    return { item, ok: true, detail: `ctmigrated ${s.version} owns org.ctmigrate1 on ${busAddress} (${s.vms.length} VM(s), ${s.sessions.length} session(s))` };
  } catch (e) {
    const m = message(e);
    const busDown = /cannot connect|cannot be reached|lost the connection/.test(m);
    return { item, ok: false, detail: m, fix: busDown ? 'systemctl start dbus (the system bus)' : 'systemctl start ctmigrated; journalctl -u ctmigrated says why it stopped' };
  }
}

/** The peer channel's key or certificates can be read. */
export function checkCredentials(config: DaemonConfig): CheckResult {
  const item = 'peer credentials';
  try {
    const c = loadCredentials({ pskFile: config.pskFile, tlsCert: config.tlsCert, tlsKey: config.tlsKey, tlsCa: config.tlsCa });
    return { item, ok: true, detail: c.kind === 'psk' ? `pre-shared key ${config.pskFile} readable` : 'TLS certificate, key and CA readable' };
  } catch (e) {
    return {
      item,
      ok: false,
      detail: message(e),
      fix: /group or others|not root/.test(message(e))
        ? `chown root:root ${config.pskFile ?? '/etc/ctmigrate/psk'}; chmod 600 ${config.pskFile ?? '/etc/ctmigrate/psk'} (the key must be readable by root only)`
        : 'create a key on one host ((umask 077; od -An -tx1 -N32 /dev/urandom | tr -d " \\n" > /etc/ctmigrate/psk)), copy it to every host (0600, owned by root), and set psk-file = /etc/ctmigrate/psk in /etc/ctmigrate/ctmigrate.conf',
    };
  }
}

function tcpConnect(p: PeerAddress, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: p.host, port: p.port });
    const t = setTimeout(() => {
      s.destroy();
      reject(new Error(`no answer within ${timeoutMs / 1000} s`));
    }, timeoutMs);
    s.once('connect', () => {
      clearTimeout(t);
      s.destroy();
      resolve();
    });
    s.once('error', (e) => {
      clearTimeout(t);
      reject(e);
    });
  });
}

/** Every configured peer accepts a TCP connection on its peer port. */
export async function checkPeers(config: DaemonConfig): Promise<CheckResult[]> {
  if (config.peers.length === 0) {
    return [{ item: 'peers', ok: false, detail: 'no peers configured: a destination cannot find a VM\'s source', fix: 'add a "peer = ADDR:PORT" line per other host to /etc/ctmigrate/ctmigrate.conf' }];
  }
  return Promise.all(
    config.peers.map(async (p): Promise<CheckResult> => {
      const item = `peer ${formatPeerAddress(p)}`;
      try {
        await tcpConnect(p, 3000);
        return { item, ok: true, detail: 'accepts TCP connections' };
      } catch (e) {
        return { item, ok: false, detail: `cannot connect: ${message(e)}`, fix: `start ctmigrated on ${p.host}, and let TCP port ${p.port} through the firewalls between the hosts` };
      }
    }),
  );
}

/** The hook is installed, executable, and finds its program (it answers --version). */
export async function checkHook(path: string): Promise<CheckResult> {
  const item = 'libvirt hook';
  const fix = `install the ctmigrate package (it ships the hook there), or from a built checkout: ln -s <checkout>/packaging/libvirt/qemu.d/ctmigrate ${path}`;
  try {
    statSync(path);
  } catch (e) {
    return { item, ok: false, detail: `${path}: ${(e as NodeJS.ErrnoException).code ?? message(e)}`, fix };
  }
  try {
    accessSync(path, constants.X_OK);
  } catch {
    return { item, ok: false, detail: `${path} is not executable`, fix: `chmod 755 ${path}` };
  }
  const r = await run(path, ['--version'], 10_000);
  if (r.code !== 0 || !/ctmigrate/.test(r.stdout)) {
    return { item, ok: false, detail: `${path} --version failed: ${(r.stderr || r.stdout).trim().split('\n')[0] || `exit ${r.code}`}`, fix: 'reinstall the ctmigrate package (or run npm run build in the checkout the hook links to)' };
  }
  return { item, ok: true, detail: `${path} installed and runs (${r.stdout.trim()})` };
}

/** libvirt's QEMU driver daemon and when it started (ms since the epoch). */
function libvirtDaemons(): { name: string; pid: number; startedAt: number }[] {
  const found: { name: string; pid: number; startedAt: number }[] = [];
  let btime = 0;
  try {
    btime = Number(/^btime (\d+)$/m.exec(readFileSync('/proc/stat', 'utf8'))?.[1] ?? 0);
  } catch {
    return found;
  }
  // USER_HZ is 100 on every Linux architecture we run on.
  const hz = 100;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const name = readFileSync(`/proc/${entry}/comm`, 'utf8').trim();
      if (name !== 'libvirtd' && name !== 'virtqemud') continue;
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const startTicks = Number(fields[19]);
      found.push({ name, pid: Number(entry), startedAt: (btime + startTicks / hz) * 1000 });
    } catch {
      // The process ended while we looked.
    }
  }
  return found;
}

/** libvirt runs, and started after the hook was installed (it reads qemu.d/ only when it starts). */
export function checkLibvirt(hookPath: string): CheckResult {
  const item = 'libvirt';
  const daemons = libvirtDaemons();
  if (daemons.length === 0) return { item, ok: false, detail: 'neither libvirtd nor virtqemud is running', fix: 'systemctl start libvirtd (or virtqemud)' };
  let installedAt = 0;
  try {
    const l = lstatSync(hookPath);
    installedAt = Math.max(l.ctimeMs, l.mtimeMs);
  } catch {
    // checkHook reports a missing hook.
  }
  const stale = daemons.filter((d) => installedAt > d.startedAt + 1000);
  const names = daemons.map((d) => `${d.name} (pid ${d.pid})`).join(', ');
  if (stale.length) {
    return {
      item,
      ok: false,
      detail: `${names} started before the hook was installed: it does not know the hook yet`,
      fix: `systemctl restart ${stale[0].name}, or kill -HUP ${stale[0].pid} (libvirt finds hooks when it starts or reloads)`,
    };
  }
  return { item, ok: true, detail: `${names} running${installedAt ? ', started after the hook was installed' : ''}` };
}

/** Whether a QEMU binary has the dbus-vmstate object type (`-object help` lists it). */
async function qemuHasDbusVmstate(emulator: string): Promise<boolean | undefined> {
  const r = await run(emulator, ['-object', 'help'], 5000);
  if (r.missing || r.code !== 0) return undefined;
  return /^\s*dbus-vmstate\s*$/m.test(r.stdout);
}

/**
 * For each running domain with our metadata: which path its next migration
 * takes (cutover-path.ts), as this host's daemon would choose it, and
 * whether the daemon has it registered (without, its state is not carried).
 */
export async function checkVmPaths(config: DaemonConfig, client: ManagerClient): Promise<CheckResult[]> {
  const virsh = virshFor(config.libvirtUri);
  let uuids: string[];
  try {
    uuids = await virsh.runningDomains(10_000);
  } catch (e) {
    return [{ item: 'VM paths', ok: false, detail: `cannot list the running domains (${config.libvirtUri}): ${message(e)}`, fix: 'start libvirtd, or set libvirt-uri in the config' }];
  }
  const registered = await client.status().then(
    (s) => new Set(s.vms.map((v) => v.uuid)),
    () => undefined,
  );
  const qemuTypes = new Map<string, Promise<boolean | undefined>>();
  const results: CheckResult[] = [];
  for (const uuid of uuids) {
    let xml: string;
    try {
      xml = await virsh.liveXml(uuid, 10_000);
    } catch {
      continue; // stopped meanwhile
    }
    let facts;
    try {
      facts = readDomain(xml);
    } catch (e) {
      results.push({ item: `VM ${uuid}`, ok: false, detail: `domain XML refused: ${message(e)}` });
      continue;
    }
    if (!facts.metadata) continue;
    const item = `VM ${facts.name}`;
    let path: string;
    if (facts.vmstateObjects.some((o) => o.ours)) path = 'vmstate (its QEMU has the dbus-vmstate object)';
    else {
      const emulator = /<emulator>\s*([^<\s]+)\s*<\/emulator>/.exec(xml)?.[1];
      let has: Promise<boolean | undefined> = Promise.resolve(undefined);
      if (emulator) {
        if (!qemuTypes.has(emulator)) qemuTypes.set(emulator, qemuHasDbusVmstate(emulator));
        has = qemuTypes.get(emulator) as Promise<boolean | undefined>;
      }
      if (!config.hotAttach) path = 'event (hot-attach = no: cut over when libvirt reports it suspended for migration)';
      else if ((await has) === false) path = `event (${emulator} has no dbus-vmstate object type: cut over when libvirt reports it suspended for migration)`;
      else path = 'vmstate-hot (the dbus-vmstate object is added to its running QEMU when the migration starts; libvirt marks the domain tainted)';
    }
    if (registered === undefined) results.push({ item, ok: true, detail: `next migration: ${path}; ctmigrated not reachable to say whether it is registered` });
    else if (registered.has(facts.uuid)) results.push({ item, ok: true, detail: `registered; next migration: ${path}` });
    else
      results.push({
        item,
        ok: false,
        detail: `has ctmigrate metadata but ctmigrated does not have it registered: its state would not be carried`,
        fix: `ctmigratectl enable-vm ${facts.name} --live`,
      });
  }
  if (results.length === 0) results.push({ item: 'VM paths', ok: true, detail: `no running domain with ctmigrate metadata (${uuids.length} running)` });
  return results;
}
