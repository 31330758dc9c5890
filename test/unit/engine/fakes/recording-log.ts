import { Log, LogFields } from '../../../../plugin/ports/log-port';

export interface LogLine {
  level: 'info' | 'warn' | 'error';
  message: string;
  fields: LogFields;
}

/** A silent log that keeps every line for assertions. */
export class RecordingLog implements Log {
  readonly lines: LogLine[] = [];

  info(message: string, fields: LogFields = {}): void {
    this.lines.push({ level: 'info', message, fields });
  }
  warn(message: string, fields: LogFields = {}): void {
    this.lines.push({ level: 'warn', message, fields });
  }
  error(message: string, fields: LogFields = {}): void {
    this.lines.push({ level: 'error', message, fields });
  }

  /** Messages of one level. */
  at(level: LogLine['level']): string[] {
    return this.lines.filter((l) => l.level === level).map((l) => l.message);
  }
}
