import { MessageKind, PeerRole } from './peer-protocol';
import { formatPeerAddress, PeerAddress, PeerConnection, PeerPort } from './ports/peer-port';

/** What one peer said to "who has VM X?". */
export interface SourceAnswer {
  peer: PeerAddress;
  answer: 'yes' | 'no' | 'timeout' | 'error';
  /** For people: "192.0.2.30:7471 does not run VM X", or why the peer could not answer. */
  detail: string;
}

/** No peer runs the VM (or none could answer); `answers` in the order the peers were given. */
export class SourceNotFoundError extends Error {
  constructor(
    readonly vm: string,
    readonly peers: readonly PeerAddress[],
    readonly answers: readonly SourceAnswer[],
  ) {
    super(
      peers.length === 0
        ? `no source given for VM ${vm} and no peers configured to ask`
        : `none of the peers (${peers.map(formatPeerAddress).join(', ')}) runs VM ${vm}${answers.length ? `: ${answers.map((a) => a.detail).join('; ')}` : ''}`,
    );
    this.name = 'SourceNotFoundError';
  }
}

export interface SourceQueryOptions {
  /** How long each peer has to answer (connect included). */
  timeoutMs: number;
  /** The relay a peer is reached through, if any. */
  via?: (peer: PeerAddress) => PeerAddress | undefined;
  /** The clock the answers are timed by (the engine's Clock; default the wall clock). */
  now?: () => number;
}

/** One peer's answer; never throws. Only the answer to our own query id counts. */
async function ask(port: PeerPort, peer: PeerAddress, vm: string, queryId: number, o: SourceQueryOptions): Promise<SourceAnswer> {
  const now = o.now ?? Date.now;
  const deadline = now() + o.timeoutMs;
  let c: PeerConnection | null = null;
  try {
    c = await port.connect(peer, { role: PeerRole.Query, timeoutMs: o.timeoutMs, via: o.via?.(peer) });
    await c.send({ kind: MessageKind.WhoHas, queryId, vm });
    for (;;) {
      const m = await c.receive(Math.max(1, deadline - now()));
      if (m.kind === MessageKind.HasVm && m.queryId === queryId && m.vm === vm) {
        return m.has ? { peer, answer: 'yes', detail: '' } : { peer, answer: 'no', detail: `${formatPeerAddress(peer)} does not run VM ${vm}` };
      }
      if (m.kind === MessageKind.Error) return { peer, answer: 'error', detail: `${formatPeerAddress(peer)}: ${m.text}` };
    }
  } catch (err) {
    const text = err instanceof Error ? err.message : String(err);
    return { peer, answer: /within \d+ ms/.test(text) ? 'timeout' : 'error', detail: text };
  } finally {
    await c?.close().catch(() => undefined);
  }
}

/**
 * Ask every peer at once "do you run VM <uuid>?"; the first yes wins, and
 * the other queries finish on their own (each closes its connection). A
 * peer that does not answer in time counts as a timeout, not a no, so the
 * error can say which peers were silent and which said no.
 */
export function findSource(port: PeerPort, peers: readonly PeerAddress[], vm: string, o: SourceQueryOptions): Promise<PeerAddress> {
  if (peers.length === 0) return Promise.reject(new SourceNotFoundError(vm, peers, []));
  const answers: Array<SourceAnswer | undefined> = new Array<SourceAnswer | undefined>(peers.length);
  return new Promise<PeerAddress>((resolve, reject) => {
    let left = peers.length;
    let found = false;
    peers.forEach((peer, i) => {
      void ask(port, peer, vm, i + 1, o).then((a) => {
        answers[i] = a;
        if (a.answer === 'yes' && !found) {
          found = true;
          resolve(peer);
        }
        if (--left === 0 && !found) reject(new SourceNotFoundError(vm, peers, answers as SourceAnswer[]));
      });
    });
  });
}
