/**
 * The daemon's configuration: embedded defaults, then the config file (when
 * there is one), then command-line flags. The file has the flags' long
 * names as keys, one `key = value` per line, `#` comments, `peer` repeated:
 *
 *   listen = 0.0.0.0:7471
 *   peer = 198.51.100.2:7471
 *   psk-file = /etc/ctmigrate/psk
 *   ready-when = complete
 *   block-timeout = 30
 *   hot-attach = yes
 *   peer = 203.0.113.7:7471 via 198.51.100.9:7472
 */
import { isIP } from 'node:net';
import { formatPeerAddress, PeerAddress } from './ports/peer-port';
import { parseReadiness, Readiness, ReadinessError } from './readiness';
import { portToken } from './ports/port-token';

export interface DaemonConfig {
  listen: PeerAddress;
  peers: PeerAddress[];
  pskFile?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
  /**
   * With certificates: the peer identities (a DNS name or IP address among a
   * certificate's subjectAltNames) accepted from dialling peers, on top of
   * the configured peers' addresses.
   */
  tlsAllow: string[];
  runDir: string;
  readyWhen: Readiness;
  /** How long the destination may block a VM's traffic waiting for its state. */
  blockTimeoutMs: number;
  /**
   * Longest QEMU's Load() waits for the state with the VM paused; then the
   * VM resumes with its traffic still dropped until the state is in.
   */
  loadTimeoutMs: number;
  /** At the block timeout: lift the drop and warn (open), or keep dropping (block). */
  onBlockTimeout: 'open' | 'block';
  /** Most entries one VM's session may hold (memory is reserved, used only as filled). */
  tableCapacity: number;
  /** How often a source ships the changes since the last shipment during pre-copy. */
  changeIntervalMs: number;
  /** Where Prometheus scrapes `GET /metrics`; absent: no metrics endpoint. */
  metrics?: PeerAddress;
  /**
   * Add the dbus-vmstate object to a running QEMU that lacks it when a
   * migration starts (libvirt marks such a domain tainted); off: such VMs
   * cut over on libvirt's events.
   */
  hotAttach: boolean;
  /** Where the daemon reaches libvirt (virsh -c) for hot attach and events. */
  libvirtUri: string;
  /** Reach every peer through this relay (config `via`), unless the peer names its own. */
  via?: PeerAddress;
  /** Peers reached through a relay of their own (`peer = ADDR:PORT via RELAY:PORT`), by "ADDR:PORT". */
  peerVia: Map<string, PeerAddress>;
}

/** The relay this daemon dials `peer` through, if any. */
export function relayFor(c: DaemonConfig, peer: PeerAddress): PeerAddress | undefined {
  return c.peerVia.get(formatPeerAddress(peer)) ?? c.via;
}

/** Every relay the configuration names: connections through them arrive from their address. */
export function configuredRelays(c: DaemonConfig): PeerAddress[] {
  const all = [...(c.via ? [c.via] : []), ...c.peerVia.values()];
  return all.filter((r, i) => all.findIndex((x) => formatPeerAddress(x) === formatPeerAddress(r)) === i);
}

export const DEFAULT_CONFIG_FILE = '/etc/ctmigrate/ctmigrate.conf';
export const DEFAULT_PORT = 7471;

export function defaultConfig(): DaemonConfig {
  return {
    listen: { host: '0.0.0.0', port: DEFAULT_PORT },
    peers: [],
    tlsAllow: [],
    runDir: '/run/ctmigrate',
    readyWhen: { kind: 'complete' },
    blockTimeoutMs: 30_000,
    loadTimeoutMs: 50,
    onBlockTimeout: 'open',
    tableCapacity: 2_000_000,
    changeIntervalMs: 20,
    hotAttach: true,
    libvirtUri: 'qemu:///system',
    peerVia: new Map(),
  };
}

/** A configuration value that cannot be used; says which and where. */
export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

/** "ADDR:PORT", "[v6]:PORT" or a bare address (default port). */
export function parsePeerAddress(text: string, what = 'address'): PeerAddress {
  const t = text.trim();
  let host: string;
  let port = DEFAULT_PORT;
  const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(t);
  if (v6) {
    host = v6[1];
    if (v6[2] !== undefined) port = Number(v6[2]);
  } else if (isIP(t) === 6) {
    host = t;
  } else {
    const i = t.lastIndexOf(':');
    host = i < 0 ? t : t.slice(0, i);
    if (i >= 0) port = Number(t.slice(i + 1));
  }
  if (isIP(host) === 0) throw new ConfigError(`${what} ${JSON.stringify(text)}: not an IP address (use ADDR:PORT or [IPv6]:PORT)`);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new ConfigError(`${what} ${JSON.stringify(text)}: port must be 1-65535`);
  return { host, port };
}

/** Keys the file and the flags share. */
export const CONFIG_KEYS = [
  'listen',
  'peer',
  'psk-file',
  'tls-cert',
  'tls-key',
  'tls-ca',
  'tls-allow',
  'run-dir',
  'ready-when',
  'block-timeout',
  'on-block-timeout',
  'table-capacity',
  'metrics',
  'hot-attach',
  'libvirt-uri',
  'via',
  'load-timeout',
] as const;
export type ConfigKey = (typeof CONFIG_KEYS)[number];

/** Apply one setting; `where` names its origin for errors ("line 4 of FILE", "--listen"). */
export function applySetting(c: DaemonConfig, key: string, value: string, where: string): void {
  const bad = (why: string): never => {
    throw new ConfigError(`${where}: ${key} ${why}`);
  };
  switch (key as ConfigKey) {
    case 'listen':
      c.listen = wrap(() => parsePeerAddress(value, 'listen'), where);
      break;
    case 'peer': {
      // "ADDR:PORT" or "ADDR:PORT via RELAY:PORT"
      const m = /^(\S+)(?:\s+via\s+(\S+))?$/.exec(value.trim());
      if (!m) bad(`must be ADDR:PORT or "ADDR:PORT via RELAY:PORT", not ${JSON.stringify(value)}`);
      const peer = wrap(() => parsePeerAddress((m as RegExpExecArray)[1] as string, 'peer'), where);
      c.peers.push(peer);
      const relay = (m as RegExpExecArray)[2];
      if (relay !== undefined) c.peerVia.set(formatPeerAddress(peer), wrap(() => parsePeerAddress(relay, 'relay'), where));
      break;
    }
    case 'via':
      c.via = wrap(() => parsePeerAddress(value, 'via'), where);
      break;
    case 'psk-file':
      c.pskFile = value || bad('needs a file name');
      break;
    case 'tls-cert':
      c.tlsCert = value || bad('needs a file name');
      break;
    case 'tls-key':
      c.tlsKey = value || bad('needs a file name');
      break;
    case 'tls-ca':
      c.tlsCa = value || bad('needs a file name');
      break;
    case 'tls-allow':
      if (!/^[A-Za-z0-9.:_-]+$/.test(value)) bad('must be a DNS name or an IP address, as in a certificate\'s subjectAltName');
      c.tlsAllow.push(value);
      break;
    case 'run-dir':
      if (!value.startsWith('/')) bad('must be an absolute path');
      c.runDir = value;
      break;
    case 'ready-when':
      try {
        c.readyWhen = parseReadiness(value);
      } catch (e) {
        if (e instanceof ReadinessError) bad(e.message.replace(/^unknown readiness policy /, 'is not a readiness policy: '));
        throw e;
      }
      break;
    case 'block-timeout': {
      const n = Number(value);
      if (!(Number.isFinite(n) && n > 0 && n <= 3600)) bad(`must be seconds between 0 and 3600, not ${JSON.stringify(value)}`);
      c.blockTimeoutMs = Math.round(n * 1000);
      break;
    }
    case 'load-timeout': {
      const n = Number(value);
      if (!(Number.isFinite(n) && n > 0 && n <= 60)) bad(`must be seconds between 0 and 60 (e.g. 0.05), not ${JSON.stringify(value)}`);
      c.loadTimeoutMs = Math.max(1, Math.round(n * 1000));
      break;
    }
    case 'on-block-timeout':
      if (value !== 'open' && value !== 'block') bad(`must be open or block, not ${JSON.stringify(value)}`);
      c.onBlockTimeout = value as 'open' | 'block';
      break;
    case 'table-capacity': {
      const n = Number(value);
      if (!(Number.isInteger(n) && n >= 1024 && n <= 50_000_000)) bad(`must be an entry count from 1024 to 50000000, not ${JSON.stringify(value)}`);
      c.tableCapacity = n;
      break;
    }
    case 'metrics':
      // A port of its own, always written out: the peer port is the wrong default here.
      if (!/:\d+$/.test(value.trim())) bad(`must be ADDR:PORT or [IPv6]:PORT, not ${JSON.stringify(value)}`);
      c.metrics = wrap(() => parsePeerAddress(value, 'metrics'), where);
      break;
    case 'hot-attach':
      if (!/^(yes|no|true|false|on|off)$/.test(value)) bad(`must be yes or no, not ${JSON.stringify(value)}`);
      c.hotAttach = /^(yes|true|on)$/.test(value);
      break;
    case 'libvirt-uri':
      if (!/^[a-z0-9+.-]+:\/\/[^\s]*$/i.test(value)) bad(`must be a libvirt URI such as qemu:///system, not ${JSON.stringify(value)}`);
      c.libvirtUri = value;
      break;
    default:
      throw new ConfigError(`${where}: unknown setting ${JSON.stringify(key)} (known: ${CONFIG_KEYS.join(', ')})`);
  }
}

function wrap<T>(fn: () => T, where: string): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof ConfigError) throw new ConfigError(`${where}: ${e.message}`);
    throw e;
  }
}

/** Parse a config file's text onto `c`. */
export function applyConfigText(c: DaemonConfig, text: string, file: string): void {
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].replace(/#.*$/, '').trim();
    if (line === '') continue;
    const eq = line.indexOf('=');
    if (eq < 0) throw new ConfigError(`line ${i + 1} of ${file}: expected "key = value", got ${JSON.stringify(lines[i].trim())}`);
    applySetting(c, line.slice(0, eq).trim(), line.slice(eq + 1).trim(), `line ${i + 1} of ${file}`);
  }
}

/** The same credentials rule on both: a key, or certificate + key + CA, not both, not part. */
export function checkCredentials(c: DaemonConfig): void {
  const tls = [c.tlsCert, c.tlsKey, c.tlsCa].filter((x) => x !== undefined).length;
  if (c.pskFile !== undefined && tls > 0) throw new ConfigError('give either psk-file or tls-cert/tls-key/tls-ca, not both');
  if (tls > 0 && tls < 3) throw new ConfigError('tls-cert, tls-key and tls-ca go together');
}

/** The daemon's configuration, as the composition root resolved it. */
export const DaemonConfigToken = portToken<DaemonConfig>('DaemonConfig');
