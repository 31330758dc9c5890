// The domain's persistent definition, through the virsh client (enable-vm
// edits what `virsh define` keeps; the hook never calls into libvirt).

import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** virsh is absent or refused; the message says which and what to do. */
export class VirshError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'VirshError';
  }
}

const TIMEOUT_MS = 30_000;

export class Virsh {
  /** `uri`: libvirt connection URI (virsh -c), default virsh's own. */
  constructor(private readonly uri?: string) {}

  /**
   * The persistent XML, with secrets: without --security-info virsh leaves
   * out passwords (VNC, SPICE), and defining that XML would erase them.
   */
  dumpInactiveXml(domain: string): Promise<string> {
    return this.run(['dumpxml', '--inactive', '--security-info', domain]);
  }

  /** Replace the domain's persistent definition. */
  async define(xml: string): Promise<void> {
    const dir = await mkdtemp(join(tmpdir(), 'ctmigrate-define-'));
    try {
      const file = join(dir, 'domain.xml');
      await writeFile(file, xml, { mode: 0o600 });
      await this.run(['define', file]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }

  /** `virsh domstate`: running, paused, shut off, ... (fails for a domain libvirt does not know). */
  domainState(domain: string, timeoutMs = TIMEOUT_MS): Promise<string> {
    return this.run(['domstate', domain], timeoutMs);
  }

  /** The running domain's XML as libvirt has it now (no secrets). */
  liveXml(domain: string, timeoutMs = TIMEOUT_MS): Promise<string> {
    return this.run(['dumpxml', domain], timeoutMs);
  }

  /** `virsh domname`: the name of the domain with that UUID. */
  async domainName(uuid: string, timeoutMs = TIMEOUT_MS): Promise<string> {
    return (await this.run(['domname', uuid], timeoutMs)).trim();
  }

  /** UUIDs of the running domains. */
  async runningDomains(timeoutMs = TIMEOUT_MS): Promise<string[]> {
    return (await this.run(['list', '--uuid'], timeoutMs)).split('\n').map((l) => l.trim()).filter((l) => l !== '');
  }

  /** Whether the domain has a persistent definition (a transient one, from `virsh create`, has none). */
  async isPersistent(domain: string, timeoutMs = TIMEOUT_MS): Promise<boolean> {
    const info = await this.run(['dominfo', domain], timeoutMs);
    return /^Persistent:\s+yes\s*$/m.test(info);
  }

  /**
   * One QMP command through libvirt's monitor passthrough; returns QEMU's
   * reply text. libvirt marks the domain tainted (custom-monitor).
   */
  monitorCommand(domain: string, command: string, timeoutMs = TIMEOUT_MS): Promise<string> {
    return this.run(['qemu-monitor-command', domain, command], timeoutMs);
  }

  /**
   * `virsh metadata --set`: an element of namespace `uri`, written with the
   * prefix `key`, on the running domain (`live`) and/or its definition (`config`).
   */
  async setMetadata(domain: string, meta: { uri: string; key: string; xml: string }, where: { live: boolean; config: boolean }): Promise<void> {
    const args = ['metadata', domain, '--uri', meta.uri, '--key', meta.key, '--set', meta.xml];
    if (where.live) args.push('--live');
    if (where.config) args.push('--config');
    await this.run(args);
  }

  private run(args: string[], timeoutMs = TIMEOUT_MS): Promise<string> {
    const argv = this.uri ? ['-c', this.uri, ...args] : args;
    return new Promise((resolve, reject) => {
      const child = spawn('virsh', argv, { stdio: ['ignore', 'pipe', 'pipe'] });
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      child.stdout.on('data', (b: Buffer) => out.push(b));
      child.stderr.on('data', (b: Buffer) => err.push(b));
      const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
      child.on('error', (e: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        reject(
          e.code === 'ENOENT'
            ? new VirshError('virsh not found on PATH: install libvirt-clients (enable-vm edits the domain through virsh)')
            : new VirshError(`cannot run virsh: ${e.message}`),
        );
      });
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        if (code === 0) return resolve(Buffer.concat(out).toString('utf8'));
        const why = Buffer.concat(err).toString('utf8').trim().split('\n').filter((l) => l.trim() !== '')[0] ?? '';
        reject(new VirshError(`virsh ${args[0]} failed (${signal ? `killed by ${signal}` : `exit ${code}`})${why ? `: ${why}` : ''}`));
      });
    });
  }
}
