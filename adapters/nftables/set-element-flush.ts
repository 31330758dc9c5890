/**
 * Lifting a drop in one netlink round trip: delete the VM's addresses from
 * its sets with a single nftables batch (NFT_MSG_DELSETELEM), no process.
 *
 * Why: the lift happens inside QEMU's Load(), while the VM is paused, so
 * every millisecond is blackout. Starting `nft` costs a fork of a daemon
 * that may hold hundreds of MB (page tables copied) plus nft's own start:
 * 10–40 ms measured. The rules stay; with empty sets they match nothing.
 * The blocker rewrites its tables with nft afterwards, off the pause.
 *
 * The batch is one transaction: if any element is missing (someone flushed
 * the ruleset), nothing changes and the caller falls back to nft. An error
 * answer ends the transaction in the kernel; the socket stays usable.
 */
import { RawNetlinkSocket } from 'netlink';
import { Address } from '../../plugin/address';
import { AF_INET } from '../../plugin/flow';
import { NftFamily } from './nft-json';
import { TABLE } from './drop-ruleset';
import { setName } from './set-names';

const NETLINK_NETFILTER = 12;
const NFNL_SUBSYS_NFTABLES = 10;
const NFNL_MSG_BATCH_BEGIN = 0x10;
const NFNL_MSG_BATCH_END = 0x11;
const NFT_MSG_DELSETELEM = 14;
const NLM_F_REQUEST = 1;
const NLM_F_ACK = 4;
const NLMSG_ERROR = 2;
const NLA_F_NESTED = 0x8000;
const NFTA_SET_ELEM_LIST_TABLE = 1;
const NFTA_SET_ELEM_LIST_SET = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS = 3;
const NFTA_LIST_ELEM = 1;
const NFTA_SET_ELEM_KEY = 1;
const NFTA_DATA_VALUE = 1;
const NFPROTO: Record<NftFamily, number> = { inet: 1, bridge: 7 } as Record<NftFamily, number>;

/** Netlink attribute builder over a growing byte list (a handful of small messages: no hot path). */
class Message {
  private readonly parts: Buffer[] = [];
  private readonly stack: number[] = [];
  private length = 0;

  push(b: Buffer): void {
    this.parts.push(b);
    this.length += b.length;
  }
  attr(type: number, value: Buffer): void {
    const len = 4 + value.length;
    const head = Buffer.alloc(4);
    head.writeUInt16LE(len, 0);
    head.writeUInt16LE(type, 2);
    this.push(head);
    this.push(value);
    const pad = (4 - (len & 3)) & 3;
    if (pad) this.push(Buffer.alloc(pad));
  }
  begin(type: number): void {
    const head = Buffer.alloc(4);
    head.writeUInt16LE(type | NLA_F_NESTED, 2);
    this.stack.push(this.parts.length, this.length);
    this.push(head);
  }
  end(): void {
    const start = this.stack.pop() as number;
    const index = this.stack.pop() as number;
    this.parts[index].writeUInt16LE(this.length - start, 0);
  }
  bytes(): Buffer {
    return Buffer.concat(this.parts, this.length);
  }
}

function header(type: number, flags: number, seq: number, family: number, resId: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(20);
  h.writeUInt32LE(20 + payload.length, 0);
  h.writeUInt16LE(type, 4);
  h.writeUInt16LE(flags, 6);
  h.writeUInt32LE(seq, 8);
  h.writeUInt32LE(0, 12);
  h[16] = family;
  h[17] = 0;
  h.writeUInt16BE(resId, 18);
  return Buffer.concat([h, payload]);
}

function cstring(s: string): Buffer {
  return Buffer.from(`${s}\0`, 'utf8');
}

/** One request in flight: the sequence numbers still to be acknowledged. */
interface Pending {
  readonly acks: Set<number>;
  readonly resolve: () => void;
  readonly reject: (e: Error) => void;
  readonly timer: NodeJS.Timeout;
}

/**
 * Deletes a VM's addresses from its sets over one netlink socket that stays
 * open. Why it stays open: closing a socket that has just committed an
 * nftables transaction waits in the kernel for the transaction's cleanup
 * (an RCU grace period, 4–9 ms measured here) — inside close(), which
 * blocks the event loop while QEMU waits for Load(). The socket is unref'd
 * between requests, so it never keeps a process alive. One request at a
 * time (the blocker serialises its calls).
 */
export class SetElementFlusher {
  private sock: RawNetlinkSocket | null = null;
  private pending: Pending | null = null;
  private seq = (Date.now() & 0x3fffffff) + 1;

  /** Open the socket ahead of the first flush (a no-op when open); errors surface at flush(). */
  prepare(): void {
    try {
      this.socket();
    } catch {
      // flush() opens again and reports the error.
    }
  }

  /**
   * Delete `addresses` from the VM's sets in every family's table, as one
   * transaction. Resolves once the kernel acknowledged every message;
   * rejects (nothing changed) on any error or after `timeoutMs`.
   */
  flush(vm: string, addresses: readonly Address[], families: readonly NftFamily[], timeoutMs = 1000): Promise<void> {
    if (this.pending) return Promise.reject(new Error('a set element deletion is already in flight'));
    const seqBase = this.nextSeq(2 + 2 * families.length);
    const messages: Buffer[] = [header(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, seqBase, 0, NFNL_SUBSYS_NFTABLES, Buffer.alloc(0))];
    const acks = new Set<number>();
    let seq = seqBase + 1;
    for (const family of families) {
      for (const kind of ['v4', 'v6'] as const) {
        const elements = addresses.filter((a) => (a.family === AF_INET) === (kind === 'v4'));
        if (elements.length === 0) continue;
        const m = new Message();
        m.attr(NFTA_SET_ELEM_LIST_TABLE, cstring(TABLE));
        m.attr(NFTA_SET_ELEM_LIST_SET, cstring(setName(vm, kind)));
        m.begin(NFTA_SET_ELEM_LIST_ELEMENTS);
        for (const a of elements) {
          m.begin(NFTA_LIST_ELEM);
          m.begin(NFTA_SET_ELEM_KEY);
          m.attr(NFTA_DATA_VALUE, Buffer.from(a.bytes));
          m.end();
          m.end();
        }
        m.end();
        acks.add(seq);
        messages.push(header((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_DELSETELEM, NLM_F_REQUEST | NLM_F_ACK, seq++, NFPROTO[family], 0, m.bytes()));
      }
    }
    if (acks.size === 0) return Promise.resolve();
    messages.push(header(NFNL_MSG_BATCH_END, NLM_F_REQUEST, seq, 0, NFNL_SUBSYS_NFTABLES, Buffer.alloc(0)));
    let sock: RawNetlinkSocket;
    try {
      sock = this.socket();
    } catch (e) {
      return Promise.reject(e as Error);
    }
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => this.settle(new Error(`no answer from nftables within ${timeoutMs} ms`), true), timeoutMs);
      this.pending = { acks, resolve, reject, timer };
      sock.ref();
      sock.send(Buffer.concat(messages), undefined, (err) => {
        if (err) this.settle(err, true);
      });
    });
  }

  private nextSeq(n: number): number {
    if (this.seq + n >= 0x7fffffff) this.seq = 1;
    const first = this.seq;
    this.seq += n;
    return first;
  }

  private socket(): RawNetlinkSocket {
    if (this.sock) return this.sock;
    const sock = new RawNetlinkSocket(NETLINK_NETFILTER);
    sock.unref();
    sock.on('error', (e: Error) => this.settle(e, true));
    sock.on('message', (buf: Buffer) => this.answer(buf));
    this.sock = sock;
    return sock;
  }

  private answer(buf: Buffer): void {
    const p = this.pending;
    if (!p) return; // a late answer to a request that timed out
    for (let off = 0; off + 16 <= buf.length; ) {
      const len = buf.readUInt32LE(off);
      if (len < 16 || off + len > buf.length) return this.settle(new Error('malformed nftables answer'), true);
      if (buf.readUInt16LE(off + 4) === NLMSG_ERROR && len >= 32) {
        const errno = -buf.readInt32LE(off + 16);
        const s = buf.readUInt32LE(off + 28);
        if (p.acks.has(s)) {
          if (errno !== 0) return this.settle(new Error(`nftables refused the element deletion (errno ${errno})`), false);
          p.acks.delete(s);
          if (p.acks.size === 0) return this.settle(undefined, false);
        }
      }
      off += (len + 3) & ~3;
    }
  }

  /** End the request in flight; `drop` also discards the socket (its state is unknown). */
  private settle(err: Error | undefined, drop: boolean): void {
    const p = this.pending;
    this.pending = null;
    if (p) clearTimeout(p.timer);
    if (drop && this.sock) {
      const sock = this.sock;
      this.sock = null;
      sock.close();
    } else this.sock?.unref();
    if (!p) return;
    if (err) p.reject(err);
    else p.resolve();
  }
}
