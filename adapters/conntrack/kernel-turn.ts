/**
 * Kernel turn: one writer thread at a time inside send().
 *
 * Why: the kernel runs every ctnetlink create and delete under one mutex
 * (per message, inside our send()), and that mutex spins while its owner
 * runs. Two writer threads sending at once therefore buy no kernel
 * parallelism: the waiting one burns its CPU spinning (a quarter of the
 * writers' CPU at 1M entries, measured), CPU the decoder needs. Taking
 * turns in user space instead, the waiting thread sleeps (a futex wait)
 * and the other one encodes its next batch meanwhile, so the kernel always
 * has a batch to work on and nobody spins.
 *
 * The turn is a shared Int32 (0 free, 1 taken) in a SharedArrayBuffer that
 * every writer thread of one ConntrackNetlink gets. It is held only for the
 * length of one synchronous send(), so a thread cannot die holding it
 * without taking the whole process with it.
 */

/** Longest single sleep while waiting for the turn; the loop then checks again. */
const WAIT_SLICE_MS = 50;

export class KernelTurn {
  private readonly cell: Int32Array;

  constructor(readonly sab: SharedArrayBuffer = new SharedArrayBuffer(4)) {
    this.cell = new Int32Array(sab, 0, 1);
  }

  /** Wait (asleep, not spinning) until no other thread is sending, then take the turn. */
  take(): void {
    const c = this.cell;
    while (Atomics.compareExchange(c, 0, 0, 1) !== 0) Atomics.wait(c, 0, 1, WAIT_SLICE_MS);
  }

  /** Give the turn back and wake one waiter. */
  give(): void {
    Atomics.store(this.cell, 0, 0);
    Atomics.notify(this.cell, 0, 1);
  }
}
