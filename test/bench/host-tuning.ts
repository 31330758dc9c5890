/**
 * Host-wide conntrack limits for the big runs: net.netfilter.nf_conntrack_max
 * (each namespace may hold that many entries; read-only inside a namespace)
 * and the global hash size (/sys/module/nf_conntrack/parameters/hashsize).
 *
 * raise() records the original values, writes the new ones and arranges a
 * synchronous restore on every exit path we can see (normal end, thrown
 * error, process.exit, SIGINT/SIGTERM/SIGHUP). A run killed with SIGKILL
 * leaves a state file; the next run restores from it when its pid is gone.
 * A value someone else changed while we ran is left alone (with a warning).
 */
import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const CONNTRACK_MAX = '/proc/sys/net/netfilter/nf_conntrack_max';
export const HASHSIZE = '/sys/module/nf_conntrack/parameters/hashsize';
export const RMEM_MAX = '/proc/sys/net/core/rmem_max';

interface Change {
  path: string;
  original: number;
  set: number;
}

const STATE_PREFIX = 'ctm-bench-host-';

export function readNumber(path: string): number {
  return Number(readFileSync(path, 'utf8').trim());
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function restoreOne(c: Change, log: (s: string) => void): void {
  try {
    const cur = readNumber(c.path);
    if (cur !== c.set) {
      log(`host tuning: ${c.path} is ${cur}, not the ${c.set} we set; someone else changed it, left alone (was ${c.original})`);
      return;
    }
    writeFileSync(c.path, `${c.original}\n`);
  } catch (e) {
    log(`host tuning: could not restore ${c.path} to ${c.original}: ${(e as Error).message}`);
  }
}

/** Restores what a bench run killed with SIGKILL left raised. */
export function restoreStale(log: (s: string) => void): void {
  for (const f of readdirSync(tmpdir())) {
    const m = new RegExp(`^${STATE_PREFIX}(\\d+)\\.json$`).exec(f);
    if (!m || isAlive(Number(m[1]))) continue;
    const file = join(tmpdir(), f);
    try {
      const changes = JSON.parse(readFileSync(file, 'utf8')) as Change[];
      for (const c of changes) {
        log(`host tuning: restoring ${c.path} to ${c.original} (left raised by a bench run, pid ${m[1]}, that died)`);
        restoreOne(c, log);
      }
    } catch (e) {
      log(`host tuning: unreadable state file ${file}: ${(e as Error).message}`);
    }
    rmSync(file, { force: true });
  }
}

export class HostTuning {
  private readonly changes: Change[] = [];
  private readonly stateFile = join(tmpdir(), `${STATE_PREFIX}${process.pid}.json`);
  private restored = false;
  private hooked = false;

  constructor(private readonly log: (s: string) => void) {}

  /** Raises `path` to at least `value` (never lowers it). Returns the value now in effect. */
  raise(path: string, value: number): number {
    const original = readNumber(path);
    if (original >= value) return original;
    this.hook();
    this.changes.push({ path, original, set: value });
    // Record before writing: a crash right after the write still gets undone.
    writeFileSync(this.stateFile, JSON.stringify(this.changes));
    writeFileSync(path, `${value}\n`);
    const now = readNumber(path);
    this.changes[this.changes.length - 1].set = now;
    writeFileSync(this.stateFile, JSON.stringify(this.changes));
    this.log(`host tuning: ${path} ${original} -> ${now} (restored on exit)`);
    return now;
  }

  get summary(): Record<string, { original: number; set: number }> {
    return Object.fromEntries(this.changes.map((c) => [c.path, { original: c.original, set: c.set }]));
  }

  /** Puts every raised value back (idempotent, synchronous). */
  restore(): void {
    if (this.restored) return;
    this.restored = true;
    for (const c of this.changes.slice().reverse()) {
      restoreOne(c, this.log);
      if (readNumber(c.path) === c.original) this.log(`host tuning: ${c.path} restored to ${c.original}`);
    }
    rmSync(this.stateFile, { force: true });
  }

  private hook(): void {
    if (this.hooked) return;
    this.hooked = true;
    process.on('exit', () => this.restore());
    for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
      process.once(sig, () => {
        this.restore();
        process.exit(128 + (sig === 'SIGINT' ? 2 : sig === 'SIGTERM' ? 15 : 1));
      });
    }
  }
}
