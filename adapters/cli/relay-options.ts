import { ConfigError, parsePeerAddress } from '../../plugin/daemon-config';
import { PeerAddress } from '../../plugin/ports/peer-port';
import { parseOptions } from './parse-options';
import { UsageError } from './usage-error';

/** What `ctmigrated --relay` runs with. */
export interface RelayConfig {
  listen: PeerAddress;
  allow: PeerAddress[];
}

/** The default relay port: the peer port's neighbour, so one host may run both. */
export const DEFAULT_RELAY_PORT = 7472;

/** `--relay --listen ADDR:PORT --relay-allow ADDR:PORT...` */
export function relayConfig(args: string[]): RelayConfig {
  const { values, positionals } = parseOptions(args, {
    relay: { type: 'boolean' },
    listen: { type: 'string', short: 'l' },
    'relay-allow': { type: 'string', multiple: true },
  });
  if (positionals.length) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`);
  try {
    const listen = values.listen === undefined ? { host: '0.0.0.0', port: DEFAULT_RELAY_PORT } : parsePeerAddress(values.listen, '--listen');
    const allow = (values['relay-allow'] ?? []).map((a) => parsePeerAddress(a, '--relay-allow'));
    if (allow.length === 0) throw new UsageError('--relay needs at least one --relay-allow ADDR:PORT: a relay that forwards anywhere is an open proxy into the cluster network');
    return { listen, allow };
  } catch (e) {
    if (e instanceof ConfigError) throw new UsageError(e.message);
    throw e;
  }
}
