import { isIpv4Mapped, parseAddress } from './address';
import { formatPeerAddress, PeerAddress } from './ports/peer-port';

/**
 * Which authenticated peers may open a session here. The cluster key (or
 * CA) only proves a host belongs to the cluster; the configured peers say
 * which hosts this one migrates with. With peers configured, only they may
 * start (or resume) a source session, or ask which VMs run here, so a host
 * that merely holds the key cannot take a VM's session before its real
 * destination does. With none configured there is nothing to check against,
 * and the daemon says so when it starts.
 */
export class PeerAuthorization {
  private readonly allowed: Uint8Array[];

  /**
   * `relays`: the relays this host reaches its peers through; a peer that
   * comes through one arrives from its address. Behind a relay the
   * pre-shared key cannot tell the peers apart (certificates can: tls-allow).
   */
  constructor(
    private readonly peers: readonly PeerAddress[],
    private readonly relays: readonly PeerAddress[] = [],
  ) {
    this.allowed = [...peers, ...relays].map((p) => canonical(p.host)).filter((b): b is Uint8Array => b !== null);
  }

  /** Whether any peer is named at all (otherwise every authenticated peer is let in). */
  get restricted(): boolean {
    return this.peers.length > 0;
  }

  /** Whether a connection from `host` (as the socket reports it) may open a session. */
  allows(host: string): boolean {
    if (!this.restricted) return true;
    const b = canonical(host);
    return b !== null && this.allowed.some((a) => sameBytes(a, b));
  }

  /** The refusal a peer is told, naming who may connect. */
  refusal(remote: PeerAddress): string {
    const relays = this.relays.length ? `; relays: ${this.relays.map(formatPeerAddress).join(', ')}` : '';
    return `peer ${remote.host} is not a configured peer of this host (configured: ${this.peers.map(formatPeerAddress).join(', ')}${relays})`;
  }
}

/** Address bytes, an IPv4-mapped IPv6 address (a dual-stack socket's view of IPv4) as IPv4. */
function canonical(host: string): Uint8Array | null {
  let a;
  try {
    a = parseAddress(host);
  } catch {
    return null;
  }
  return isIpv4Mapped(a.bytes) ? a.bytes.slice(12) : a.bytes;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
