import { connect, Socket } from 'node:net';

/** A QMP event with QEMU's host timestamp in milliseconds. */
export interface QmpEvent {
  event: string;
  data: unknown;
  atMs: number;
}

interface QmpMessage {
  QMP?: unknown;
  return?: unknown;
  error?: { class: string; desc: string };
  event?: string;
  data?: unknown;
  timestamp?: { seconds: number; microseconds: number };
}

/** A minimal QMP client on QEMU's unix socket: commands one at a time, events kept. */
export class QmpClient {
  readonly events: QmpEvent[] = [];
  private buffer = '';
  private waiting: ((m: QmpMessage) => void) | undefined;

  private constructor(private readonly socket: Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => {
      this.buffer += d;
      let nl: number;
      while ((nl = this.buffer.indexOf('\n')) >= 0) {
        const line = this.buffer.slice(0, nl).trim();
        this.buffer = this.buffer.slice(nl + 1);
        if (line) this.onMessage(JSON.parse(line) as QmpMessage);
      }
    });
    socket.on('error', () => undefined);
  }

  /** Connect (retrying until QEMU listens) and leave capabilities negotiation mode. */
  static async connect(path: string, timeoutMs = 10000): Promise<QmpClient> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        const socket = await new Promise<Socket>((resolve, reject) => {
          const s = connect(path);
          s.once('connect', () => resolve(s));
          s.once('error', reject);
        });
        const c = new QmpClient(socket);
        await c.next();
        await c.execute('qmp_capabilities');
        return c;
      } catch (e) {
        if (Date.now() > deadline) throw e;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }

  async execute(command: string, args?: Record<string, unknown>): Promise<unknown> {
    const reply = this.next();
    this.socket.write(JSON.stringify(args ? { execute: command, arguments: args } : { execute: command }) + '\n');
    const m = await reply;
    if (m.error) throw new Error(`QMP ${command}: ${m.error.class}: ${m.error.desc}`);
    return m.return;
  }

  /** Wait for an event (already seen or coming). */
  async waitEvent(name: string, timeoutMs = 10000): Promise<QmpEvent> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const e = this.events.find((x) => x.event === name);
      if (e) return e;
      if (Date.now() > deadline) throw new Error(`no QMP event ${name} within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  close(): void {
    this.socket.destroy();
  }

  private next(): Promise<QmpMessage> {
    return new Promise((resolve) => {
      this.waiting = resolve;
    });
  }

  private onMessage(m: QmpMessage): void {
    if (m.event) {
      const t = m.timestamp ?? { seconds: 0, microseconds: 0 };
      this.events.push({ event: m.event, data: m.data, atMs: t.seconds * 1000 + t.microseconds / 1000 });
      return;
    }
    const w = this.waiting;
    this.waiting = undefined;
    w?.(m);
  }
}
