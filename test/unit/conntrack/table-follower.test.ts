/**
 * The table follower's overrun repair, driven through a scripted socket that
 * answers dumps with messages recorded from the kernel (dump-6.18.hex). The
 * real-kernel flood is in test/integration/conntrack-netlink.test.ts; this
 * pins the orderings a flood only hits now and then.
 */
import { strict as assert } from 'node:assert';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import sinon from 'sinon';
import { CtnetlinkHandlers, CtnetlinkSocket } from '../../../adapters/conntrack/ctnetlink-socket';
import { planDump } from '../../../adapters/conntrack/dump-filter';
import { TableFollower } from '../../../adapters/conntrack/table-follower';
import { ConnectionTable } from '../../../plugin/connection-table';

const fixtureDir = join(__dirname, '..', '..', '..', '..', 'test', 'fixtures', 'conntrack');
const recorded = readFileSync(join(fixtureDir, 'dump-6.18.hex'), 'utf8')
  .split('\n')
  .filter((l) => l.trim() !== '')
  .map((l) => Buffer.from(l.trim(), 'hex'));

const NLMSG_NOOP = 1;
const IPCTNL_MSG_CT_DELETE = 2;

const CTA_STATUS = 3;
const IPS_DYING = 1 << 9;

/** A recorded entry as a dump shows it while it is being deleted (status bit DYING). */
function dying(entry: Buffer): Buffer {
  const m = Buffer.from(entry);
  for (let off = 20; off + 4 <= m.length; ) {
    const len = m.readUInt16LE(off);
    if ((m.readUInt16LE(off + 2) & 0x7fff) === CTA_STATUS) {
      m.writeUInt32BE(m.readUInt32BE(off + 4) | IPS_DYING, off + 4);
      return m;
    }
    off += (len + 3) & ~3;
  }
  throw new Error('recorded entry has no CTA_STATUS');
}

/** The destroy event the kernel sends for a recorded entry. */
function destroyEvent(entry: Buffer): Buffer {
  const m = Buffer.from(entry);
  m.writeUInt16LE((m.readUInt16LE(4) & 0xff00) | IPCTNL_MSG_CT_DELETE, 4);
  m.writeUInt32LE(0, 8);
  return m;
}

/** A socket whose kernel is the test: it records requests and answers when told. */
class ScriptedSocket {
  handlers: CtnetlinkHandlers = {};
  received = 0;
  private seq = 1;
  /** Sequence numbers of dump requests not yet answered. */
  readonly dumps: number[] = [];
  readonly noops: number[] = [];

  reserve(n: number): number {
    const first = this.seq;
    this.seq += n;
    return first;
  }

  send(buf: Buffer): void {
    const seq = buf.readUInt32LE(8);
    if (buf.readUInt16LE(4) === NLMSG_NOOP) this.noops.push(seq);
    else this.dumps.push(seq);
  }

  /** Answer the oldest dump request with these recorded messages, then DONE. */
  answerDump(entries: Buffer[]): void {
    const seq = this.dumps.shift();
    assert.ok(seq !== undefined, 'a dump request is outstanding');
    for (const m of entries) {
      const copy = Buffer.from(m);
      copy.writeUInt32LE(seq, 8);
      this.received++;
      this.handlers.reply?.(copy, 0, copy.length, seq);
    }
    this.received++;
    this.handlers.done?.(seq, 0);
  }

  answerNoops(): void {
    for (const seq of this.noops.splice(0)) this.handlers.ack?.(seq, 0);
  }
}

describe('table follower overrun repair', () => {
  let clock: sinon.SinonFakeTimers;
  beforeEach(() => {
    clock = sinon.useFakeTimers();
  });
  afterEach(() => clock.restore());

  /** A follower whose initial dump returned `initial`, then an overrun whose repair dump was requested. */
  async function repairing(initial: Buffer[]): Promise<{ sock: ScriptedSocket; table: ConnectionTable; f: TableFollower }> {
    const sock = new ScriptedSocket();
    const table = ConnectionTable.create({ capacity: 64 });
    const f = new TableFollower(sock as unknown as CtnetlinkSocket, table, { addresses: [] }, planDump({ addresses: [] }, [6, 18]), () => undefined);
    const started = f.start();
    sock.answerDump(initial);
    await started;
    sock.handlers.overrun?.();
    sock.handlers.drained?.();
    return { sock, table, f };
  }

  it('tombstones what a re-dump after an overrun no longer returns', async () => {
    const { sock, table, f } = await repairing(recorded.slice(0, 4));
    assert.equal(table.size, 4);
    sock.answerDump(recorded.slice(0, 2));
    await clock.tickAsync(0);
    assert.equal(table.size, 2);
    assert.ok(f.stats.repaired >= 2);
  });

  it('ignores a dump copy of an entry whose destroy event came first (the kernel unlinks it after the event)', async () => {
    const { sock, table } = await repairing(recorded.slice(0, 4));
    // While the repair dump runs, entry 0 is destroyed: the event is queued,
    // then a dump datagram still carrying the dying entry.
    sock.handlers.event?.(destroyEvent(recorded[0]), 0, recorded[0].length);
    assert.equal(table.size, 3);
    sock.answerDump(recorded.slice(0, 4));
    await clock.tickAsync(0);
    assert.equal(table.size, 3, 'the destroyed entry stays gone');
  });

  it('treats a dump copy marked dying as gone, whether or not its destroy event came first', async () => {
    const { sock, table } = await repairing([recorded[0], dying(recorded[1]), recorded[2]]);
    assert.equal(table.size, 2, 'the initial dump skips the dying entry');
    // Its destroy event was lost in the overrun; the re-dump still copies it, dying.
    sock.answerDump([dying(recorded[0]), recorded[2]]);
    await clock.tickAsync(0);
    assert.equal(table.size, 1, 'the repair sweeps it');
  });

  it('runs a second repair when an overrun comes during a repair and the queue then stays quiet', async () => {
    const { sock, table, f } = await repairing(recorded.slice(0, 4));
    assert.equal(sock.dumps.length, 1, 'the first repair dump was requested');
    // The kernel drops events again while the repair dump runs, then goes quiet.
    sock.handlers.overrun?.();
    await clock.tickAsync(250);
    sock.answerDump(recorded.slice(0, 3));
    await clock.tickAsync(0);
    assert.equal(table.size, 3, 'first repair applied');

    let synced = false;
    void f.sync().then(() => (synced = true));
    sock.answerNoops();
    await clock.tickAsync(0);
    assert.equal(synced, false, 'sync waits for the pending repair');

    await clock.tickAsync(150);
    assert.equal(sock.dumps.length, 1, 'the second repair dump was requested without further traffic');
    sock.answerDump(recorded.slice(0, 1));
    await clock.tickAsync(0);
    assert.equal(table.size, 1, 'second repair applied');
    assert.equal(synced, true, 'sync resolves once the table is repaired');
  });

  it('a sync whose ACK the overrun dropped resolves once the repair that followed is done', async () => {
    const sock = new ScriptedSocket();
    const table = ConnectionTable.create({ capacity: 64 });
    const f = new TableFollower(sock as unknown as CtnetlinkSocket, table, { addresses: [] }, planDump({ addresses: [] }, [6, 18]), () => undefined);
    const started = f.start();
    sock.answerDump(recorded.slice(0, 4));
    await started;

    let synced = false;
    void f.sync().then(() => (synced = true));
    // The queue is full: the barrier's ACK is dropped, and the kernel reports the overrun.
    sock.noops.splice(0);
    sock.handlers.overrun?.();
    sock.handlers.drained?.();
    await clock.tickAsync(0);
    assert.equal(sock.dumps.length, 1, 'the repair dump was requested');
    assert.equal(synced, false, 'nothing is known before the repair');

    // A second barrier sent while the repair runs still needs its own ACK.
    let later = false;
    void f.sync().then(() => (later = true));
    sock.answerDump(recorded.slice(0, 2));
    await clock.tickAsync(0);
    assert.equal(table.size, 2, 'repair applied');
    assert.equal(synced, true, 'the barrier sent before the repair is covered by it');
    assert.equal(later, false, 'the barrier sent during the repair waits for its ACK');
    sock.answerNoops();
    await clock.tickAsync(0);
    assert.equal(later, true);
  });
});
