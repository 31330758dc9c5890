// Three namespaces, client — router — server, where the router's kernel
// makes conntrack entries from real traffic: SNAT/masquerade, DNAT with a
// port change, and the FTP helper with its expectations and RELATED flows.
//
//   client  eth0 192.0.2.2/24     2001:db8:1::2/64
//   router  lan0 192.0.2.1/24     2001:db8:1::1/64
//           wan0 198.51.100.1/24  2001:db8:2::1/64
//   server  eth0 198.51.100.2/24  2001:db8:2::2/64
//
// Router rules: traffic from the client side leaving wan0 is source-NATed
// (IPv4: snat to 198.51.100.1 ports 20000-29999; IPv6: masquerade); the
// router's wan address port 8080 is destination-NATed to the client's port
// 80; TCP ports 21 and 2121 get the kernel's FTP helper.

import { join } from 'node:path';
import { Lab, LabProcess, NetNs } from './netns';

export const ADDR = {
  client4: '192.0.2.2',
  client6: '2001:db8:1::2',
  routerLan4: '192.0.2.1',
  routerLan6: '2001:db8:1::1',
  routerWan4: '198.51.100.1',
  routerWan6: '2001:db8:2::1',
  server4: '198.51.100.2',
  server6: '2001:db8:2::2',
} as const;

/** SNAT port range the router maps IPv4 client flows into. */
export const SNAT_PORTS = { min: 20000, max: 29999 } as const;

/**
 * The FTP helper must be assigned by a rule: since Linux 6.0 the kernel no
 * longer attaches helpers by port on its own (nf_conntrack_helper sysctl is
 * gone). `ct helper set` must run after conntrack has looked the packet up,
 * i.e. at priority > -200: at `priority raw` it silently does nothing.
 */
const ROUTER_RULESET = `
table inet ctm_lab_router {
  ct helper ftp-standard { type "ftp" protocol tcp; l3proto inet; }
  chain prerouting_helper {
    type filter hook prerouting priority filter; policy accept;
    tcp dport { 21, 2121 } ct helper set "ftp-standard"
  }
  chain forward_filter {
    type filter hook forward priority filter; policy accept;
    ct state established,related counter accept
    ct state new counter accept
  }
  chain prerouting_nat {
    type nat hook prerouting priority dstnat; policy accept;
    iifname "wan0" ip daddr ${ADDR.routerWan4} tcp dport 8080 dnat ip to ${ADDR.client4}:80
    iifname "wan0" ip6 daddr ${ADDR.routerWan6} tcp dport 8080 dnat ip6 to [${ADDR.client6}]:80
  }
  chain postrouting_nat {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "wan0" ip saddr 192.0.2.0/24 meta l4proto { tcp, udp } snat ip to ${ADDR.routerWan4}:${SNAT_PORTS.min}-${SNAT_PORTS.max}
    oifname "wan0" ip6 saddr 2001:db8:1::/64 masquerade
  }
}
`;

/** Path of the compiled agent (it sits next to this file in dist/). */
export const AGENT = join(__dirname, 'agent.js');

export class NatTopology {
  private constructor(
    readonly lab: Lab,
    readonly client: NetNs,
    readonly router: NetNs,
    readonly server: NetNs,
  ) {}

  static async build(lab: Lab): Promise<NatTopology> {
    const [client, router, server] = await Promise.all([lab.netns('client'), lab.netns('router'), lab.netns('server')]);
    await lab.link(
      client,
      router,
      { ifname: 'eth0', addrs: [`${ADDR.client4}/24`, `${ADDR.client6}/64`] },
      { ifname: 'lan0', addrs: [`${ADDR.routerLan4}/24`, `${ADDR.routerLan6}/64`] },
    );
    await lab.link(
      router,
      server,
      { ifname: 'wan0', addrs: [`${ADDR.routerWan4}/24`, `${ADDR.routerWan6}/64`] },
      { ifname: 'eth0', addrs: [`${ADDR.server4}/24`, `${ADDR.server6}/64`] },
    );
    await client.addRoute('default', ADDR.routerLan4);
    await client.addRoute('default', ADDR.routerLan6);
    await server.addRoute('default', ADDR.routerWan4);
    await server.addRoute('default', ADDR.routerWan6);
    await router.enableForwarding();
    await router.nft(ROUTER_RULESET);
    return new NatTopology(lab, client, router, server);
  }

  /** Starts `node agent.js ARGS` in ns and waits for its first line matching ready. */
  async agent(ns: NetNs, args: readonly string[], ready: RegExp, timeoutMs = 10_000): Promise<{ proc: LabProcess; match: RegExpMatchArray }> {
    const proc = this.lab.spawn(ns, process.execPath, [AGENT, ...args]);
    const match = await proc.waitFor(ready, timeoutMs);
    return { proc, match };
  }
}
