import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { KernelTurn } from '../../../adapters/conntrack/kernel-turn';

/**
 * Threads that each take the turn, stay "in the kernel" for a while, and
 * give it back; a shared counter records how many were inside at once.
 */
const THREAD = `
const { workerData, parentPort } = require('node:worker_threads');
const { KernelTurn } = require(workerData.module);
const turn = new KernelTurn(workerData.turn);
const stats = new Int32Array(workerData.stats);
for (let i = 0; i < workerData.rounds; i++) {
  turn.take();
  const inside = Atomics.add(stats, 0, 1) + 1;
  if (inside > Atomics.load(stats, 1)) Atomics.store(stats, 1, inside);
  const until = Date.now() + 2;
  while (Date.now() < until);
  Atomics.sub(stats, 0, 1);
  turn.give();
}
parentPort.postMessage('done');
`;

describe('KernelTurn', () => {
  it('lets one writer thread at a time into send(), and every thread gets its turns', async () => {
    const turn = new KernelTurn();
    const stats = new SharedArrayBuffer(8);
    const rounds = 40;
    const module = join(__dirname, '../../../adapters/conntrack/kernel-turn.js');
    const threads = [0, 1, 2].map(() => new Worker(THREAD, { eval: true, workerData: { module, turn: turn.sab, stats, rounds } }));
    try {
      await Promise.all(
        threads.map(
          (w) =>
            new Promise<void>((resolve, reject) => {
              w.once('message', () => resolve());
              w.once('error', reject);
            }),
        ),
      );
    } finally {
      await Promise.all(threads.map((w) => w.terminate()));
    }
    const s = new Int32Array(stats);
    assert.equal(s[1], 1, 'never two threads inside at once');
    assert.equal(s[0], 0, 'everyone left');
    // The turn is free again: this thread takes it at once.
    turn.take();
    turn.give();
  });

  it('a taken turn makes the next taker wait until it is given back', async () => {
    const turn = new KernelTurn();
    turn.take();
    const module = join(__dirname, '../../../adapters/conntrack/kernel-turn.js');
    const waiter = new Worker(
      `const { workerData, parentPort } = require('node:worker_threads');
       const { KernelTurn } = require(workerData.module);
       const t = new KernelTurn(workerData.turn);
       t.take(); parentPort.postMessage('got it'); t.give();`,
      { eval: true, workerData: { module, turn: turn.sab } },
    );
    try {
      let got = false;
      const done = new Promise<void>((resolve) =>
        waiter.once('message', () => {
          got = true;
          resolve();
        }),
      );
      // Proof that it waits, not a pause: notify() counts the threads asleep
      // on the turn; the one it wakes finds the turn still taken and sleeps again.
      const cell = new Int32Array(turn.sab, 0, 1);
      while (Atomics.notify(cell, 0, 1) === 0) await new Promise<void>((r) => setImmediate(r));
      assert.equal(got, false, 'got the turn while it was taken');
      turn.give();
      await done;
      assert.equal(got, true);
    } finally {
      await waiter.terminate();
    }
  });
});
