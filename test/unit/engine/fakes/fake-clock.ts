import { Clock } from '../../../../plugin/ports/clock';

interface Timer {
  at: number;
  seq: number;
  fn: () => void;
}

/** Lets every promise chain that is ready run to its end (fakes never wait on real I/O). */
export function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * A clock the test moves by hand. Timers run in due order; between two
 * timers the promise chains they started settle, so a change tick that
 * reschedules itself runs again within the same run().
 */
export class FakeClock implements Clock {
  private time: number;
  private timers: Timer[] = [];
  private seq = 0;

  constructor(start = Date.UTC(2025, 0, 1)) {
    this.time = start;
  }

  now(): number {
    return this.time;
  }

  after(ms: number, fn: () => void): () => void {
    const t: Timer = { at: this.time + Math.max(0, ms), seq: this.seq++, fn };
    this.timers.push(t);
    return () => {
      this.timers = this.timers.filter((x) => x !== t);
    };
  }

  /** Timers waiting to run. */
  get pending(): number {
    return this.timers.length;
  }

  /** Move time forward by `ms`, running each timer that falls due and settling after it. */
  async run(ms: number): Promise<void> {
    const end = this.time + ms;
    await settle();
    for (;;) {
      const due = this.timers.filter((t) => t.at <= end).sort((a, b) => a.at - b.at || a.seq - b.seq)[0];
      if (!due) break;
      this.timers = this.timers.filter((t) => t !== due);
      this.time = due.at;
      due.fn();
      await settle();
    }
    this.time = end;
    await settle();
  }
}
