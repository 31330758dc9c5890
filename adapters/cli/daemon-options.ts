import { existsSync, readFileSync } from 'node:fs';
import {
  applyConfigText,
  applySetting,
  checkCredentials,
  ConfigError,
  DaemonConfig,
  DEFAULT_CONFIG_FILE,
  defaultConfig,
} from '../../plugin/daemon-config';
import { parseOptions } from './parse-options';
import { UsageError } from './usage-error';

export const DAEMON_HELP = `Usage: ctmigrated [--config FILE] [--listen ADDR:PORT] [--peer ADDR:PORT]...
                  [--psk-file FILE | --tls-cert F --tls-key F --tls-ca F [--tls-allow NAME]...]
                  [--run-dir DIR] [--ready-when complete|precopy|fraction:F|tcp-established]
                  [--block-timeout SECONDS] [--on-block-timeout open|block] [--load-timeout SECONDS]
                  [--table-capacity N] [--metrics ADDR:PORT]
                  [--hot-attach yes|no] [--libvirt-uri URI] [--via RELAY:PORT]
       ctmigrated --relay --listen ADDR:PORT --relay-allow ADDR:PORT...

The ctmigrate daemon. It carries registered VMs' conntrack entries to the
destination host during live migration: pre-copy while the VM runs, the
residual delta when it stops (through QEMU's dbus-vmstate or the peer
channel), and on the destination it drops the VM's traffic until the state
is in. It owns org.ctmigrate1 on the system bus (DBUS_SYSTEM_BUS_ADDRESS is
honoured) and answers peers on the listen address.

Options (flags override the config file, which overrides the defaults):
  -c, --config FILE          settings file (default ${DEFAULT_CONFIG_FILE} when present);
                             one "key = value" per line, keys as the long flags
  -l, --listen ADDR:PORT     peer channel address (default 0.0.0.0:7471)
  -p, --peer ADDR:PORT       a peer daemon to ask for a VM's source (repeatable); in
                             the config, "peer = ADDR:PORT via RELAY:PORT" reaches
                             that one through a relay
      --via RELAY:PORT       reach every peer through this relay (a ctmigrated --relay),
                             the TLS session running end to end through it
      --psk-file FILE        the cluster's pre-shared key, hex, at least 32 bytes
      --tls-cert FILE        mutual TLS instead of a key: this host's certificate,
      --tls-key FILE         its key and the CA (default: libvirt's PKI files
      --tls-ca FILE          under /etc/pki when they exist)
      --tls-allow NAME       with certificates: a peer identity accepted (a DNS name or
                             IP address among the certificate's subjectAltNames;
                             repeatable). The configured peers' addresses are always
                             accepted; a certificate naming neither is refused, even
                             one the CA signed
      --run-dir DIR          per-VM buses and state (default /run/ctmigrate)
      --ready-when POLICY    when the destination lifts the drop: complete (default),
                             precopy, fraction:F, tcp-established
      --block-timeout SEC    longest a VM's traffic is dropped waiting (default 30)
      --load-timeout SEC     longest QEMU's Load() holds the VM paused waiting for its
                             state (default 0.05); then the VM resumes with its traffic
                             still dropped until the state is in
      --on-block-timeout P   open (lift the drop, warn; default) or block
      --table-capacity N     most entries per VM session (default 2000000)
      --metrics ADDR:PORT    serve Prometheus metrics at http://ADDR:PORT/metrics (default off)
      --hot-attach yes|no    when a migration starts for a VM whose QEMU has no
                             dbus-vmstate object, add one to the running QEMU
                             (QMP object-add through libvirt, which marks the domain
                             tainted; default yes). no: such VMs cut over when
                             libvirt reports them suspended for migration
      --libvirt-uri URI      libvirt connection for hot attach, events and crash
                             recovery (default qemu:///system)
  -h, --help                 show this help
  -V, --version              print the version

With --relay it is a relay only: no D-Bus, no kernel access, no key. It
reads one preamble line naming the target from each connection, forwards
only to the --relay-allow targets (repeatable, required), and from then on
copies bytes both ways: the peers' TLS runs end to end through it, so it can
neither read nor alter a session, only drop it.

Without key or certificates the daemon still runs (register, status), but
cannot migrate state: peers are neither accepted nor dialled.
`;

/** Flags, then the file they name (or the default file), then defaults. */
export function daemonConfig(args: string[]): DaemonConfig {
  const { values, positionals } = parseOptions(args, {
    config: { type: 'string', short: 'c' },
    listen: { type: 'string', short: 'l' },
    peer: { type: 'string', short: 'p', multiple: true },
    'psk-file': { type: 'string' },
    'tls-cert': { type: 'string' },
    'tls-key': { type: 'string' },
    'tls-ca': { type: 'string' },
    'tls-allow': { type: 'string', multiple: true },
    'run-dir': { type: 'string' },
    'ready-when': { type: 'string' },
    'block-timeout': { type: 'string' },
    'on-block-timeout': { type: 'string' },
    'table-capacity': { type: 'string' },
    metrics: { type: 'string' },
    'hot-attach': { type: 'string' },
    'libvirt-uri': { type: 'string' },
    via: { type: 'string' },
    'load-timeout': { type: 'string' },
  });
  if (positionals.length) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`);
  const c = defaultConfig();
  const file = values.config ?? (existsSync(DEFAULT_CONFIG_FILE) ? DEFAULT_CONFIG_FILE : undefined);
  try {
    if (file !== undefined) {
      let text: string;
      try {
        text = readFileSync(file, 'utf8');
      } catch (e) {
        throw new ConfigError(`cannot read config file ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
      }
      applyConfigText(c, text, file);
    }
    // Peers given on the command line replace the file's list.
    if (values.peer) {
      c.peers = [];
      c.peerVia.clear();
    }
    if (values['tls-allow']) c.tlsAllow = [];
    for (const [key, value] of Object.entries(values)) {
      if (key === 'config' || value === undefined) continue;
      for (const v of Array.isArray(value) ? value : [value]) applySetting(c, key, String(v), `--${key}`);
    }
    checkCredentials(c);
  } catch (e) {
    if (e instanceof ConfigError) throw new UsageError(e.message);
    throw e;
  }
  return c;
}
