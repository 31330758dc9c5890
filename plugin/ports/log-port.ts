import { portToken } from './port-token';

/** Fields of a structured log line. */
export type LogFields = Record<string, string | number | boolean | undefined>;

/** Structured logging (stderr/journal). */
export interface Log {
  info(message: string, fields?: LogFields): void;
  warn(message: string, fields?: LogFields): void;
  error(message: string, fields?: LogFields): void;
}
export const Log = portToken<Log>('Log');
