import { spawn } from 'node:child_process';
import { mkdirSync, openSync, closeSync } from 'node:fs';
import { dirname } from 'node:path';
import { Address, formatAddress } from '../../plugin/address';
import { RestoreWatchPort } from '../../plugin/ports/restore-watch-port';

/**
 * The watcher as a process of its own (`ctmigratectl criu-action --watch`),
 * started detached: the pre-restore script that starts it exits at once,
 * and CRIU goes on restoring. Its few log lines go to a file, since CRIU's
 * output is long closed by the time a restore dies.
 */
export class DetachedRestoreWatch implements RestoreWatchPort {
  constructor(
    private readonly node: string,
    private readonly program: string,
    private readonly logFile: string,
  ) {}

  async watch(container: string, addresses: readonly Address[], criuPid: number, deadline: number): Promise<void> {
    const args = [this.program, 'criu-action', '--watch', container, '--criu-pid', String(criuPid), '--deadline', String(deadline)];
    for (const a of addresses) args.push('--address', formatAddress(a.bytes, 0, a.bytes.length));
    mkdirSync(dirname(this.logFile), { recursive: true });
    const log = openSync(this.logFile, 'a', 0o600);
    try {
      const child = spawn(this.node, args, { detached: true, stdio: ['ignore', log, log] });
      await new Promise<void>((resolve, reject) => {
        child.once('spawn', () => resolve());
        child.once('error', reject);
      });
      child.unref();
    } finally {
      closeSync(log);
    }
  }
}

/** The start time of a process (clock ticks since boot, /proc/PID/stat field 22): a pid that comes back is another process. */
export function processStart(pid: number, read: (path: string) => string): string | null {
  try {
    const stat = read(`/proc/${pid}/stat`);
    // The command name (field 2) is in parentheses and may hold spaces: count from the last ')'.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return rest[19] ?? null;
  } catch {
    return null;
  }
}
