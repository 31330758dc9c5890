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
 * the ruleset), nothing changes and the caller falls back to nft.
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

/**
 * Delete `addresses` from the VM's sets in every family's table, as one
 * transaction. Resolves once the kernel acknowledged every message; rejects
 * (nothing changed) on any error or after `timeoutMs`.
 */
export function flushVmElements(vm: string, addresses: readonly Address[], families: readonly NftFamily[], timeoutMs = 1000): Promise<void> {
  const seqBase = (Date.now() & 0x3fffffff) + 1;
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
  return new Promise<void>((resolve, reject) => {
    let sock: RawNetlinkSocket;
    try {
      sock = new RawNetlinkSocket(NETLINK_NETFILTER);
    } catch (e) {
      reject(e as Error);
      return;
    }
    let done = false;
    const finish = (err?: Error): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.close();
      if (err) reject(err);
      else resolve();
    };
    const timer = setTimeout(() => finish(new Error(`no answer from nftables within ${timeoutMs} ms`)), timeoutMs);
    sock.on('error', (e) => finish(e));
    sock.on('message', (buf: Buffer) => {
      for (let off = 0; off + 16 <= buf.length; ) {
        const len = buf.readUInt32LE(off);
        if (len < 16 || off + len > buf.length) return finish(new Error('malformed nftables answer'));
        if (buf.readUInt16LE(off + 4) === NLMSG_ERROR && len >= 32) {
          const errno = -buf.readInt32LE(off + 16);
          const s = buf.readUInt32LE(off + 28);
          if (errno !== 0) return finish(new Error(`nftables refused the element deletion (errno ${errno})`));
          acks.delete(s);
          if (acks.size === 0) return finish();
        }
        off += (len + 3) & ~3;
      }
    });
    sock.send(Buffer.concat(messages), undefined, (err) => {
      if (err) finish(err);
    });
  });
}
