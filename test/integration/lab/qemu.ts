// A real QEMU (TCG, no disks, 32 MiB) run inside a lab namespace, driven
// over QMP: migrate, cancel, quit, and the lifecycle events (STOP on the
// source, RESUME on the destination) with timestamps, which give the VM's
// blackout.

import { connect, Socket } from 'node:net';
import { join } from 'node:path';
import { Lab, LabProcess, NetNs } from './netns';

/** One QMP event. */
export interface QmpEvent {
  event: string;
  data: unknown;
  /** QEMU's own timestamp (host wall clock), milliseconds since the epoch. */
  qemuMs: number;
  /** Date.now() when the line reached us. */
  seenMs: number;
}

interface QmpLine {
  QMP?: unknown;
  return?: unknown;
  error?: { class: string; desc: string };
  event?: string;
  data?: unknown;
  timestamp?: { seconds: number; microseconds: number };
}

/** A minimal QMP client: commands one at a time, every event kept, listeners told at once. */
export class Qmp {
  readonly events: QmpEvent[] = [];
  private buffer = '';
  private readonly replies: Array<(m: QmpLine) => void> = [];
  private readonly listeners: Array<(e: QmpEvent) => void> = [];
  private closedError: Error | null = null;

  private constructor(private readonly socket: Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => {
      this.buffer += d;
      for (let nl = this.buffer.indexOf('\n'); nl >= 0; nl = this.buffer.indexOf('\n')) {
        const line = this.buffer.slice(0, nl).trim();
        this.buffer = this.buffer.slice(nl + 1);
        if (line) this.onLine(JSON.parse(line) as QmpLine);
      }
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      this.closedError = new Error('QMP connection closed (QEMU exited?)');
      for (const r of this.replies.splice(0)) r({ error: { class: 'Closed', desc: 'QMP connection closed' } });
    });
  }

  /** Connect (retrying while QEMU starts) and leave capabilities negotiation. */
  static async connect(path: string, timeoutMs = 10_000): Promise<Qmp> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        const socket = await new Promise<Socket>((resolve, reject) => {
          const s = connect(path);
          s.once('connect', () => resolve(s));
          s.once('error', reject);
        });
        const q = new Qmp(socket);
        await q.greeting();
        await q.execute('qmp_capabilities');
        return q;
      } catch (e) {
        if (Date.now() > deadline) throw new Error(`cannot reach QMP at ${path}: ${(e as Error).message}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }

  async execute(command: string, args?: Record<string, unknown>): Promise<unknown> {
    if (this.closedError) throw this.closedError;
    const reply = new Promise<QmpLine>((resolve) => this.replies.push(resolve));
    this.socket.write(`${JSON.stringify(args ? { execute: command, arguments: args } : { execute: command })}\n`);
    const m = await reply;
    if (m.error) throw new Error(`QMP ${command}: ${m.error.class}: ${m.error.desc}`);
    return m.return;
  }

  /** Call `fn` for every event from now on (and for none before). */
  onEvent(fn: (e: QmpEvent) => void): void {
    this.listeners.push(fn);
  }

  /** The first event of that name, seen already or coming. */
  async waitEvent(name: string, timeoutMs = 30_000): Promise<QmpEvent> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const e = this.events.find((x) => x.event === name);
      if (e) return e;
      if (Date.now() > deadline) throw new Error(`no QMP event ${name} within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  close(): void {
    this.socket.destroy();
  }

  private greeting(): Promise<QmpLine> {
    return new Promise((resolve) => this.replies.push(resolve));
  }

  private onLine(m: QmpLine): void {
    if (m.event) {
      const t = m.timestamp ?? { seconds: 0, microseconds: 0 };
      const e: QmpEvent = { event: m.event, data: m.data, qemuMs: t.seconds * 1000 + t.microseconds / 1000, seenMs: Date.now() };
      this.events.push(e);
      for (const l of this.listeners) l(e);
      return;
    }
    this.replies.shift()?.(m);
  }
}

export interface QemuOptions {
  /** A folder of the lab's for the QMP socket. */
  dir: string;
  /** Short name, for the socket file and messages. */
  name: string;
  /** `-object` value attaching the dbus-vmstate helper (ctmigratectl register prints it). */
  vmstateObject?: string;
  /** `tcp:ADDR:PORT`: start waiting for an incoming migration there. */
  incoming?: string;
}

/** Migration status as `query-migrate` reports it. */
export interface MigrationStatus {
  status: string;
  /** Milliseconds QEMU counts as downtime (stop-and-copy), when it says. */
  downtime?: number;
  totalTime?: number;
}

/** One QEMU process in a namespace and its QMP connection. */
export class QemuVm {
  private constructor(
    readonly name: string,
    readonly process: LabProcess,
    readonly qmp: Qmp,
  ) {}

  static async start(lab: Lab, ns: NetNs, options: QemuOptions): Promise<QemuVm> {
    const sock = join(options.dir, `qmp-${options.name}.sock`);
    const args = ['-M', 'pc', '-m', '32', '-nodefaults', '-display', 'none', '-qmp', `unix:${sock},server=on,wait=off`];
    if (options.vmstateObject) args.push('-object', options.vmstateObject);
    if (options.incoming) args.push('-incoming', options.incoming);
    const proc = lab.spawn(ns, 'qemu-system-x86_64', args);
    let qmp: Qmp;
    try {
      qmp = await Promise.race([
        Qmp.connect(sock),
        proc.exited.then((r) => {
          throw new Error(`QEMU ${options.name} exited (${r.code}): ${r.stderr.trim()}`);
        }),
      ]);
    } catch (e) {
      await proc.stop(1_000);
      throw e;
    }
    return new QemuVm(options.name, proc, qmp);
  }

  /** Start migrating to `uri` (tcp:ADDR:PORT); returns at once. */
  async migrate(uri: string): Promise<void> {
    await this.qmp.execute('migrate', { uri });
  }

  async migrationStatus(): Promise<MigrationStatus> {
    const r = (await this.qmp.execute('query-migrate')) as { status?: string; downtime?: number; 'total-time'?: number };
    return { status: r.status ?? 'none', downtime: r.downtime, totalTime: r['total-time'] };
  }

  /** Poll until the migration has completed, failed or been cancelled. */
  async waitMigration(timeoutMs = 60_000): Promise<MigrationStatus> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const s = await this.migrationStatus();
      if (s.status === 'completed' || s.status === 'failed' || s.status === 'cancelled') return s;
      if (Date.now() > deadline) throw new Error(`QEMU ${this.name}: migration still ${s.status} after ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  async cancelMigration(): Promise<void> {
    await this.qmp.execute('migrate_cancel');
  }

  async setMaxBandwidth(bytesPerSecond: number): Promise<void> {
    await this.qmp.execute('migrate-set-parameters', { 'max-bandwidth': bytesPerSecond });
  }

  /** `running`, `paused`, `inmigrate`, `postmigrate`, ... */
  async runState(): Promise<string> {
    const r = (await this.qmp.execute('query-status')) as { status: string };
    return r.status;
  }

  /** Quit over QMP; kill if that does not end it. */
  async quit(): Promise<void> {
    await this.qmp.execute('quit').catch(() => undefined);
    this.qmp.close();
    const done = await Promise.race([this.process.exited.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 2_000))]);
    if (!done) await this.process.stop(1_000);
  }
}
