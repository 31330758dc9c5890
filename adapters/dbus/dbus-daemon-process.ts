import { ChildProcess, spawn } from 'node:child_process';

/** A dbus-daemon that did not come up; says why, nothing is left running. */
export class DbusDaemonError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DbusDaemonError';
  }
}

const running = new Set<ChildProcess>();
let exitHookInstalled = false;

/**
 * Kill our buses when this process exits normally. A SIGKILLed parent is
 * covered by the parent-death signal set at spawn (setpriv --pdeathsig).
 */
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const child of running) child.kill('SIGTERM');
  });
}

/**
 * A `dbus-daemon --config-file=FILE` child, started and waited for: start()
 * resolves once the daemon prints its address, which it does only after it
 * listens, so a connection made right after cannot be refused.
 */
export class DbusDaemonProcess {
  private child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  /** The address the daemon printed (unix:path=...,guid=...). */
  address = '';

  constructor(
    private readonly configFile: string,
    private readonly startTimeoutMs = 5000,
  ) {}

  get pid(): number | undefined {
    return this.child?.pid;
  }

  async start(): Promise<string> {
    installExitHook();
    // setpriv --pdeathsig: the bus dies with us even if we are SIGKILLed.
    const child = spawn('setpriv', ['--pdeathsig', 'SIGTERM', 'dbus-daemon', `--config-file=${this.configFile}`, '--nofork', '--nopidfile', '--print-address=1'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child = child;
    running.add(child);
    this.exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
    child.once('close', () => running.delete(child));
    let stderr = '';
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (d: string) => {
      if (stderr.length < 4000) stderr += d;
    });
    try {
      this.address = await new Promise<string>((resolve, reject) => {
        let out = '';
        const timer = setTimeout(() => reject(new DbusDaemonError(`dbus-daemon (${this.configFile}) printed no address within ${this.startTimeoutMs} ms: ${stderr.trim()}`)), this.startTimeoutMs);
        child.stdout?.setEncoding('utf8');
        child.stdout?.on('data', (d: string) => {
          out += d;
          const nl = out.indexOf('\n');
          if (nl >= 0) {
            clearTimeout(timer);
            resolve(out.slice(0, nl).trim());
          }
        });
        child.once('error', (e) => {
          clearTimeout(timer);
          reject(new DbusDaemonError(`cannot run dbus-daemon: ${e.message}`));
        });
        child.once('close', (code, signal) => {
          clearTimeout(timer);
          reject(new DbusDaemonError(`dbus-daemon (${this.configFile}) exited (${signal ?? `status ${code}`}) before listening: ${stderr.trim()}`));
        });
      });
    } catch (e) {
      await this.stop();
      throw e;
    }
    return this.address;
  }

  /** Terminate the daemon and wait for it; SIGKILL if it lingers. Idempotent. */
  async stop(): Promise<void> {
    const child = this.child;
    if (!child) return;
    this.child = undefined;
    // A child that never spawned (no pid) has nothing to wait for.
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const killer = setTimeout(() => child.kill('SIGKILL'), 2000);
      await this.exited;
      clearTimeout(killer);
    }
    child.stdout?.destroy();
    child.stderr?.destroy();
  }
}
