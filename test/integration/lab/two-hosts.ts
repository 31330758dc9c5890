// The shape both migration labs share: two hosts with a strict firewall, a
// client network reachable from both, and a guest namespace (a VM's or a
// container's) linked to each host, up on A and down on B:
//
//            client  (lo 203.0.113.100/32; to-a .2/30, to-b .6/30)
//             /                                   \
//   A  client 203.0.113.1/30                B  client 203.0.113.5/30
//      GUEST  192.0.2.1/24                        GUEST 192.0.2.1/24
//             \                                   /
//            guest (eth-a 192.0.2.10/24 up, eth-b 192.0.2.10/24 down)

import { Lab, NetNs } from './netns';

export const TWO_HOSTS = {
  guest: '192.0.2.10',
  gateway: '192.0.2.1',
  client: '203.0.113.100',
  clientA: '203.0.113.2',
  clientB: '203.0.113.6',
  hostAClient: '203.0.113.1',
  hostBClient: '203.0.113.5',
} as const;

export interface TwoHosts {
  a: NetNs;
  b: NetNs;
  client: NetNs;
  guest: NetNs;
}

/**
 * Build the namespaces and links; each host gets `firewall` (nft text) and
 * nf_conntrack_tcp_loose=0, the client a route to `clientRoute` through A.
 * `guestLink` names the hosts' end of the guest's link ("vm", "ctr").
 */
export async function buildTwoHosts(lab: Lab, o: { guestLabel: string; guestLink: string; firewall: string; clientRoute: string }): Promise<TwoHosts> {
  const T = TWO_HOSTS;
  const [a, b, client, guest] = await Promise.all([lab.netns('host-a'), lab.netns('host-b'), lab.netns('client'), lab.netns(o.guestLabel)]);
  await lab.link(client, a, { ifname: 'to-a', addrs: [`${T.clientA}/30`] }, { ifname: 'client', addrs: [`${T.hostAClient}/30`] });
  await lab.link(client, b, { ifname: 'to-b', addrs: [`${T.clientB}/30`] }, { ifname: 'client', addrs: [`${T.hostBClient}/30`] });
  await lab.link(guest, a, { ifname: 'eth-a', addrs: [`${T.guest}/24`] }, { ifname: o.guestLink, addrs: [`${T.gateway}/24`] });
  await lab.link(guest, b, { ifname: 'eth-b', addrs: [`${T.guest}/24`] }, { ifname: o.guestLink, addrs: [`${T.gateway}/24`] });
  await guest.execOk('ip', ['link', 'set', 'eth-b', 'down']);
  await guest.execOk('ip', ['route', 'add', 'default', 'via', T.gateway, 'dev', 'eth-a']);
  // On loopback: this kernel has no dummy devices, and lo serves the same.
  await client.execOk('ip', ['addr', 'add', `${T.client}/32`, 'dev', 'lo']);
  await client.execOk('ip', ['route', 'add', o.clientRoute, 'via', T.hostAClient, 'src', T.client]);
  for (const [ns, clientSide] of [
    [a, T.clientA],
    [b, T.clientB],
  ] as const) {
    await ns.enableForwarding();
    await ns.execOk('ip', ['route', 'add', `${T.client}/32`, 'via', clientSide]);
    await ns.nft(o.firewall);
    await ns.sysctl({ 'net.netfilter.nf_conntrack_tcp_loose': '0' });
  }
  return { a, b, client, guest };
}
