import { MessageKind, PeerRole } from '../../plugin/peer-protocol';
import { formatPeerAddress, PeerAddress, PeerConnection, PeerPort } from '../../plugin/ports/peer-port';

/** What one peer said to "who has VM X?". */
export interface SourceAnswer {
  peer: PeerAddress;
  answer: 'yes' | 'no' | 'timeout' | 'error';
  /** Why, for 'error' and 'timeout' (and a peer's Error text). */
  detail: string;
}

/** No configured peer runs the VM (or none answered). */
export class SourceNotFoundError extends Error {
  constructor(
    readonly vm: string,
    readonly answers: SourceAnswer[],
  ) {
    super(
      answers.length === 0
        ? `cannot find the source of VM ${vm}: no peers configured (give --source or --peer)`
        : `cannot find the source of VM ${vm}: ${answers.map((a) => `${formatPeerAddress(a.peer)} ${a.answer}${a.detail ? ` (${a.detail})` : ''}`).join(', ')}`,
    );
    this.name = 'SourceNotFoundError';
  }
}

async function ask(port: PeerPort, peer: PeerAddress, vm: string, queryId: number, timeoutMs: number): Promise<SourceAnswer> {
  const deadline = Date.now() + timeoutMs;
  let c: PeerConnection | null = null;
  try {
    c = await port.connect(peer, { role: PeerRole.Query, timeoutMs });
    await c.send({ kind: MessageKind.WhoHas, queryId, vm });
    for (;;) {
      const m = await c.receive(Math.max(1, deadline - Date.now()));
      if (m.kind === MessageKind.HasVm && m.queryId === queryId && m.vm === vm)
        return { peer, answer: m.has ? 'yes' : 'no', detail: '' };
      if (m.kind === MessageKind.Error) return { peer, answer: 'error', detail: m.text };
    }
  } catch (err) {
    const text = err instanceof Error ? err.message : String(err);
    return { peer, answer: /within \d+ ms/.test(text) ? 'timeout' : 'error', detail: text };
  } finally {
    c?.destroy();
  }
}

/**
 * Ask every peer at once "do you run VM <uuid>?"; the first yes wins and
 * the other queries are left to finish on their own (each closes its
 * connection). A peer that does not answer within `timeoutMs` counts as a
 * timeout, not a no, so the error can say which peers were silent.
 */
export function findSource(port: PeerPort, peers: PeerAddress[], vm: string, timeoutMs = 3000): Promise<PeerAddress> {
  const answers: SourceAnswer[] = [];
  return new Promise<PeerAddress>((resolve, reject) => {
    if (peers.length === 0) return reject(new SourceNotFoundError(vm, []));
    let left = peers.length;
    let found = false;
    peers.forEach((peer, i) => {
      void ask(port, peer, vm, i + 1, timeoutMs).then((a) => {
        answers.push(a);
        if (a.answer === 'yes' && !found) {
          found = true;
          resolve(peer);
        }
        if (--left === 0 && !found) reject(new SourceNotFoundError(vm, answers));
      });
    });
  });
}
