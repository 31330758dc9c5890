import assert from 'node:assert/strict';
import { ConntrackNetlink, liveSlots } from '../../../adapters/conntrack/conntrack-netlink';
import { CtnetlinkHandlers, CtnetlinkSocket, CtnetlinkSocketOptions } from '../../../adapters/conntrack/ctnetlink-socket';
import { ConnectionTable } from '../../../plugin/connection-table';
import { ExtFlag, L4 } from '../../../plugin/flow';
import { FlowRecord } from '../../../plugin/flow-view';
import { makeFlow } from '../table/flow-builder';

const rec = new FlowRecord();
function flow(sport: number, master = false): FlowRecord {
  const r = makeFlow(rec, L4.TCP, '192.0.2.1', sport, '198.51.100.2', 22);
  if (master) r.addExt(ExtFlag.Master);
  return r;
}

describe('ConntrackNetlink write selection (liveSlots)', () => {
  let t: ConnectionTable;
  let slots: number[];
  beforeEach(() => {
    t = ConnectionTable.create({ capacity: 64 });
    // Slots 0..5, versions 1..6; slot 1 is related (has a master); slot 3 is deleted afterwards (version 7).
    slots = [1000, 1001, 1002, 1003, 1004, 1005].map((p) => t.upsert(flow(p, p === 1001)));
    t.remove(flow(1003));
  });

  it('without from/filter: every live record up to upTo, related ones last', () => {
    assert.deepEqual(liveSlots({ table: t }), { plain: [0, 2, 4, 5], related: [1], keep: [] });
    assert.deepEqual(liveSlots({ table: t, upTo: 3 }), { plain: [0, 2], related: [1], keep: [] });
  });

  it('from: only records with a version in (from, upTo], never tombstones', () => {
    assert.deepEqual(liveSlots({ table: t, from: 2 }), { plain: [2, 4, 5], related: [], keep: [] });
    assert.deepEqual(liveSlots({ table: t, from: 1, upTo: 4 }), { plain: [2], related: [1], keep: [] });
    assert.deepEqual(liveSlots({ table: t, from: 6 }), { plain: [], related: [], keep: [] }, 'the deletion at version 7 is no write');
  });

  it('filter: only the records it selects, given their slot', () => {
    const asked: number[] = [];
    const sel = liveSlots({
      table: t,
      filter: (v, slot) => {
        asked.push(slot);
        return v.origSport % 2 === 0 || slot === 1;
      },
    });
    assert.deepEqual(sel, { plain: [0, 2, 4], related: [1], keep: [] });
    assert.deepEqual(asked, [0, 1, 2, 4, 5], 'asked once per live record in range');
    assert.deepEqual(liveSlots({ table: t, from: 3, filter: (v) => v.origSport !== 1004 }), { plain: [5], related: [], keep: [] });
  });

  it('slots: only those slots, still checked for life, range and filter', () => {
    assert.deepEqual(liveSlots({ table: t, slots: [5, 1, 3, 0] }), { plain: [5, 0], related: [1], keep: [] });
    assert.deepEqual(liveSlots({ table: t, slots: [5, 1, 0], from: 1, upTo: 5 }), { plain: [], related: [1], keep: [] });
    assert.deepEqual(liveSlots({ table: t, slots: [5, 4, 2, 63, -1], filter: (_v, s) => s !== 4 }), { plain: [5, 2], related: [], keep: [] });
    // keepExisting: which of the selected records must not replace an existing entry.
    assert.deepEqual(liveSlots({ table: t, slots: [5, 1, 3, 0], keepExisting: (_v, s) => s !== 0 }), { plain: [5, 0], related: [1], keep: [5, 1] });
    assert.equal(slots.length, 6);
  });
});

/** A socket whose kernel takes every request: the ACK a batch asks for comes back on the next turn. */
class AcceptingSocket {
  handlers: CtnetlinkHandlers = {};
  readonly recvBufferSize = 8 << 20;
  readonly sendBufferSize = 8 << 20;
  readonly requests: number[] = [];
  private seq = 1;
  reserve(n: number): number {
    const first = this.seq;
    this.seq += n;
    return first;
  }
  send(buf: Buffer): void {
    for (let off = 0; off + 16 <= buf.length; ) {
      const len = buf.readUInt32LE(off);
      const seq = buf.readUInt32LE(off + 8);
      this.requests.push(buf.readUInt16LE(off + 4));
      if (buf.readUInt16LE(off + 6) & NLM_F_ACK) setImmediate(() => this.handlers.ack?.(seq, 0));
      off += (len + 3) & ~3;
    }
  }
  close(): void {}
}

const NLM_F_ACK = 4;

describe('ConntrackNetlink write sockets', () => {
  it('ask for their full receive buffer past rmem_max (it bounds the batch), for creates and deletes', async () => {
    const opened: CtnetlinkSocketOptions[] = [];
    const socks: AcceptingSocket[] = [];
    const port = new ConntrackNetlink({
      openSocket: (o) => {
        opened.push(o);
        const s = new AcceptingSocket();
        socks.push(s);
        return s as unknown as CtnetlinkSocket;
      },
    });
    const t = ConnectionTable.create({ capacity: 64 });
    for (let p = 2000; p < 2010; p++) t.upsert(flow(p));
    const created = await port.create({ table: t });
    assert.equal(created.created, 10);
    const removed = await port.remove({ table: t });
    assert.equal(removed.deleted, 10);
    assert.deepEqual(
      opened.map((o) => o.forceRecvBuffer),
      [true, true],
    );
    assert.equal(socks[0].requests.length, 10, 'one create per entry, in one batch');
  });
});
