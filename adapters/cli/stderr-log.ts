import { Log, LogFields } from '../../plugin/ports/log-port';

/**
 * Structured log lines on stderr, logfmt style (`level=info msg="..." vm=...`):
 * journald keeps them as they are when the daemon runs under systemd, and
 * they stay greppable by key.
 */
export class StderrLog implements Log {
  constructor(
    private readonly out: NodeJS.WritableStream = process.stderr,
    private readonly withTime = !process.env.JOURNAL_STREAM,
  ) {}

  info(message: string, fields?: LogFields): void {
    this.line('info', message, fields);
  }
  warn(message: string, fields?: LogFields): void {
    this.line('warn', message, fields);
  }
  error(message: string, fields?: LogFields): void {
    this.line('error', message, fields);
  }

  private line(level: string, message: string, fields?: LogFields): void {
    let s = this.withTime ? `time=${new Date().toISOString()} ` : '';
    s += `level=${level} msg=${quote(message)}`;
    if (fields) for (const [k, v] of Object.entries(fields)) if (v !== undefined) s += ` ${k}=${quote(String(v))}`;
    this.out.write(`${s}\n`);
  }
}

function quote(v: string): string {
  return /^[A-Za-z0-9_.:/@[\]-]+$/.test(v) ? v : JSON.stringify(v);
}
