/**
 * At most one emit per interval, trailing edge guaranteed: a burst of pokes
 * emits at once, then once more at the end of the interval if anything was
 * poked meanwhile. A session importing a million entries changes its counts
 * a million times; subscribers need the progress, not every step.
 */
export class ChangeThrottle {
  private lastEmit = Number.NEGATIVE_INFINITY;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly intervalMs: number,
    private readonly emit: () => void,
    private readonly now: () => number = Date.now,
  ) {}

  /** Something changed: emit now if the interval has passed, else once it has. */
  poke(): void {
    if (this.timer) return;
    const wait = this.lastEmit + this.intervalMs - this.now();
    if (wait <= 0) {
      this.fire();
      return;
    }
    this.timer = setTimeout(() => this.fire(), wait);
    // Progress updates must not keep a daemon that is shutting down alive.
    this.timer.unref();
  }

  /** Emit now (final values, state changes), cancelling a pending emit. */
  flush(): void {
    this.cancel();
    this.fire();
  }

  /** Drop a pending emit without emitting. */
  cancel(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private fire(): void {
    this.timer = undefined;
    this.lastEmit = this.now();
    this.emit();
  }
}
