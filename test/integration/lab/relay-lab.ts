// Three hosts for migration through a relay: A, B and a relay R linked to
// both, with the direct peer path between A and B cut by a firewall (the
// QEMU stream still goes direct). The daemons reach each other only through
// `ctmigrated --relay`, TLS end to end. Used by relay.test.ts and the demo.
//
//   R to-a 203.0.113.21/30 -- A relay 203.0.113.22/30
//   R to-b 203.0.113.25/30 -- B relay 203.0.113.26/30
//   R routes 198.51.100.1 via A, 198.51.100.2 via B (the daemons' listen addresses)

import { ADDR, CTMIGRATED, MigrationLab, PEER_PORT } from './migration-lab';
import { LabProcess, NetNs } from './netns';

export const RELAY = { onA: '203.0.113.21', a: '203.0.113.22', onB: '203.0.113.25', b: '203.0.113.26', port: 7472 } as const;

/** No peer connection between A and B except through R. */
const CUT = `table inet cut_direct {
  chain out { type filter hook output priority -300; policy accept; ip daddr { ${ADDR.peerA}, ${ADDR.peerB} } tcp dport ${PEER_PORT} ip saddr { ${ADDR.peerA}, ${ADDR.peerB} } drop; }
  chain in { type filter hook input priority -300; policy accept; ip saddr { ${ADDR.peerA}, ${ADDR.peerB} } tcp dport ${PEER_PORT} drop; }
}`;

export interface RelayLab {
  m: MigrationLab;
  r: NetNs;
  relay: LabProcess;
}

/** The migration lab plus R, the cut and the relay; the daemons dial each other through R. */
export async function relayLab(daemonExtra: readonly string[] = []): Promise<RelayLab> {
  const m = await MigrationLab.build({ daemons: false });
  try {
    const r = await m.lab.netns('relay');
    await m.lab.link(r, m.a.ns, { ifname: 'to-a', addrs: [`${RELAY.onA}/30`] }, { ifname: 'relay', addrs: [`${RELAY.a}/30`] });
    await m.lab.link(r, m.b.ns, { ifname: 'to-b', addrs: [`${RELAY.onB}/30`] }, { ifname: 'relay', addrs: [`${RELAY.b}/30`] });
    await r.execOk('ip', ['-batch', '-'], { input: `route add ${ADDR.peerA}/32 via ${RELAY.a}\nroute add ${ADDR.peerB}/32 via ${RELAY.b}\n` });
    for (const ns of [m.a.ns, m.b.ns]) await ns.nft(CUT);
    const relay = await startRelay(m, r);
    await m.startDaemon(m.a, ['--peer', `${ADDR.peerB}:${PEER_PORT}`, '--via', `${RELAY.onA}:${RELAY.port}`, ...daemonExtra]);
    await m.startDaemon(m.b, ['--via', `${RELAY.onB}:${RELAY.port}`, ...daemonExtra]);
    return { m, r, relay };
  } catch (e) {
    await m.close().catch(() => undefined);
    throw e;
  }
}

export async function startRelay(m: MigrationLab, r: NetNs): Promise<LabProcess> {
  const relay = m.lab.spawn(r, process.execPath, [CTMIGRATED, '--relay', '--listen', `0.0.0.0:${RELAY.port}`, '--relay-allow', `${ADDR.peerA}:${PEER_PORT}`, '--relay-allow', `${ADDR.peerB}:${PEER_PORT}`]);
  await relay.waitFor(/ctmigrated relay ready/, 10_000);
  return relay;
}

