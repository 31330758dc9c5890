// Every kind of conntrack entry a migration must carry, as recipes that
// create it in a lab namespace, with what the reference CLI then lists.
// Verified on Linux 6.18 with conntrack-tools 1.4.7; findings and the why
// behind each quirk are in test/integration/kernel-entries.md.
//
// cliRecipes:     `conntrack -I`, deterministic, all coexist in one namespace
//                 (distinct tuples) so a whole table can round-trip.
// cliLimits:      what the CLI or kernel refuses or silently changes, kept as
//                 executable facts so a tool/kernel upgrade gets noticed.
// trafficRecipes: real packets through NatTopology's router, so the kernel
//                 itself makes NAT bindings, helper assignments, expectations
//                 and RELATED entries with a master (the CLI can make none of
//                 the last three).

import { listExpect, listExtended, listSave, normalize } from './conntrack-cli';
import { labelName } from './netns';
import { ADDR, NatTopology } from './topology';

/** Entries made with `conntrack -I`, and their normalised listings. */
export interface CliRecipe {
  readonly name: string;
  /** What the recipe exercises. */
  readonly note: string;
  /** The namespace needs NetNs.enableLabels() first. */
  readonly needsLabels?: boolean;
  /** One `conntrack -I` argument list per entry. */
  readonly inserts: ReadonlyArray<readonly string[]>;
  /** normalize(`conntrack -L -o extended,labels`) lines of these entries. */
  readonly extended: readonly string[];
  /** normalize(`conntrack -L -o save`) lines of these entries. */
  readonly save: readonly string[];
  /**
   * What a copy through `conntrack -L -o save` | `conntrack -R` loses, when
   * it loses something: such entries come out different in the copy.
   */
  readonly saveLoses?: string;
}

const T = ['-t', '3600'];
const EST = ['--state', 'ESTABLISHED', '-u', 'SEEN_REPLY,ASSURED'];
const TCP4 = (sport: number, dport = 443): string[] => [
  '-p', 'tcp', '-s', '192.0.2.10', '-d', '198.51.100.10', '--sport', String(sport), '--dport', String(dport),
];
const tcp4Line = (sport: number, state: string, tail: string, dport = 443): string =>
  `ipv4 2 tcp 6 ${state} src=192.0.2.10 dst=198.51.100.10 sport=${sport} dport=${dport} ${tail.replace(
    '<R>',
    `src=198.51.100.10 dst=192.0.2.10 sport=${dport} dport=${sport}`,
  )}`;
const tcp4Save = (sport: number, status: string, state: string, extra = '', dport = 443): string =>
  `-A -u ${status}${extra} -s 192.0.2.10 -d 198.51.100.10 -r 198.51.100.10 -q 192.0.2.10 -p tcp --sport ${sport} --dport ${dport} --reply-port-src ${dport} --reply-port-dst ${sport} --state ${state}`;

/** TCP states the CLI accepts, as the kernel then names them. */
const TCP_STATES: ReadonlyArray<{ given: string; listed: string; port: number; replied: boolean }> = [
  { given: 'SYN_SENT', listed: 'SYN_SENT', port: 40010, replied: false },
  { given: 'SYN_RECV', listed: 'SYN_RECV', port: 40011, replied: false },
  { given: 'FIN_WAIT', listed: 'FIN_WAIT', port: 40012, replied: true },
  { given: 'CLOSE_WAIT', listed: 'CLOSE_WAIT', port: 40013, replied: true },
  { given: 'LAST_ACK', listed: 'LAST_ACK', port: 40014, replied: true },
  { given: 'TIME_WAIT', listed: 'TIME_WAIT', port: 40015, replied: true },
  { given: 'CLOSE', listed: 'CLOSE', port: 40016, replied: false },
  // The CLI's LISTEN is value 9, which the kernel calls SYN_SENT2.
  { given: 'LISTEN', listed: 'SYN_SENT2', port: 40017, replied: false },
  { given: 'NONE', listed: 'NONE', port: 40018, replied: false },
];

export const cliRecipes: readonly CliRecipe[] = [
  {
    name: 'tcp4-established-assured',
    note: 'the common case: an established, assured TCP flow',
    inserts: [[...TCP4(40001), ...EST, ...T]],
    extended: [tcp4Line(40001, 'ESTABLISHED', '<R> [ASSURED] mark=0')],
    save: [tcp4Save(40001, 'SEEN_REPLY,ASSURED', 'ESTABLISHED')],
  },
  {
    name: 'tcp4-established-unreplied',
    note: 'state ESTABLISHED but no SEEN_REPLY: listed [UNREPLIED]',
    inserts: [[...TCP4(40002), '--state', 'ESTABLISHED', ...T]],
    extended: [tcp4Line(40002, 'ESTABLISHED', '[UNREPLIED] <R> mark=0')],
    save: [tcp4Save(40002, 'UNSET', 'ESTABLISHED')],
  },
  {
    name: 'tcp4-states',
    note: 'every TCP state the CLI accepts',
    inserts: TCP_STATES.map((s) => [
      ...TCP4(s.port), '--state', s.given, ...(s.replied ? ['-u', 'SEEN_REPLY,ASSURED'] : []), ...T,
    ]),
    extended: TCP_STATES.map((s) =>
      tcp4Line(s.port, s.listed, s.replied ? '<R> [ASSURED] mark=0' : '[UNREPLIED] <R> mark=0'),
    ),
    save: TCP_STATES.map((s) => tcp4Save(s.port, s.replied ? 'SEEN_REPLY,ASSURED' : 'UNSET', s.listed)),
  },
  {
    name: 'tcp4-fixed-timeout',
    note: 'status FIXED_TIMEOUT: shown by -o save only',
    inserts: [[...TCP4(40003), '--state', 'ESTABLISHED', '-u', 'SEEN_REPLY,ASSURED,FIXED_TIMEOUT', ...T]],
    extended: [tcp4Line(40003, 'ESTABLISHED', '<R> [ASSURED] mark=0')],
    save: [tcp4Save(40003, 'SEEN_REPLY,ASSURED,FIXED_TIMEOUT', 'ESTABLISHED')],
  },
  {
    name: 'udp4',
    note: 'UDP unreplied, replied, and assured (stream)',
    inserts: [
      ['-p', 'udp', '-s', '192.0.2.11', '-d', '198.51.100.11', '--sport', '40101', '--dport', '53', ...T],
      ['-p', 'udp', '-s', '192.0.2.11', '-d', '198.51.100.11', '--sport', '40102', '--dport', '53', '-u', 'SEEN_REPLY', ...T],
      ['-p', 'udp', '-s', '192.0.2.11', '-d', '198.51.100.11', '--sport', '40103', '--dport', '53', '-u', 'SEEN_REPLY,ASSURED', ...T],
    ],
    extended: [
      'ipv4 2 udp 17 src=192.0.2.11 dst=198.51.100.11 sport=40101 dport=53 [UNREPLIED] src=198.51.100.11 dst=192.0.2.11 sport=53 dport=40101 mark=0',
      'ipv4 2 udp 17 src=192.0.2.11 dst=198.51.100.11 sport=40102 dport=53 src=198.51.100.11 dst=192.0.2.11 sport=53 dport=40102 mark=0',
      'ipv4 2 udp 17 src=192.0.2.11 dst=198.51.100.11 sport=40103 dport=53 src=198.51.100.11 dst=192.0.2.11 sport=53 dport=40103 [ASSURED] mark=0',
    ],
    save: [
      '-A -u UNSET -s 192.0.2.11 -d 198.51.100.11 -r 198.51.100.11 -q 192.0.2.11 -p udp --sport 40101 --dport 53 --reply-port-src 53 --reply-port-dst 40101',
      '-A -u SEEN_REPLY -s 192.0.2.11 -d 198.51.100.11 -r 198.51.100.11 -q 192.0.2.11 -p udp --sport 40102 --dport 53 --reply-port-src 53 --reply-port-dst 40102',
      '-A -u SEEN_REPLY,ASSURED -s 192.0.2.11 -d 198.51.100.11 -r 198.51.100.11 -q 192.0.2.11 -p udp --sport 40103 --dport 53 --reply-port-src 53 --reply-port-dst 40103',
    ],
  },
  {
    name: 'udplite4',
    note: 'UDP-Lite (protocol 136), by name and by number',
    inserts: [
      ['-p', 'udplite', '-s', '192.0.2.12', '-d', '198.51.100.12', '--sport', '40201', '--dport', '5000', '-u', 'SEEN_REPLY', ...T],
      ['-p', '136', '-s', '192.0.2.12', '-d', '198.51.100.12', '--sport', '40202', '--dport', '5000', ...T],
    ],
    extended: [
      'ipv4 2 udplite 136 src=192.0.2.12 dst=198.51.100.12 sport=40201 dport=5000 src=198.51.100.12 dst=192.0.2.12 sport=5000 dport=40201 mark=0',
      'ipv4 2 udplite 136 src=192.0.2.12 dst=198.51.100.12 sport=40202 dport=5000 [UNREPLIED] src=198.51.100.12 dst=192.0.2.12 sport=5000 dport=40202 mark=0',
    ],
    save: [
      '-A -u SEEN_REPLY -s 192.0.2.12 -d 198.51.100.12 -r 198.51.100.12 -q 192.0.2.12 -p udplite --sport 40201 --dport 5000 --reply-port-src 5000 --reply-port-dst 40201',
      '-A -u UNSET -s 192.0.2.12 -d 198.51.100.12 -r 198.51.100.12 -q 192.0.2.12 -p udplite --sport 40202 --dport 5000 --reply-port-src 5000 --reply-port-dst 40202',
    ],
  },
  {
    name: 'icmp4-echo',
    note: 'ICMP echo: the reply tuple carries type 0 (echo reply); id as the "port"',
    inserts: [['-p', 'icmp', '-s', '192.0.2.13', '-d', '198.51.100.13', '--icmp-type', '8', '--icmp-code', '0', '--icmp-id', '4242', '-u', 'SEEN_REPLY', ...T]],
    extended: ['ipv4 2 icmp 1 src=192.0.2.13 dst=198.51.100.13 type=8 code=0 id=4242 src=198.51.100.13 dst=192.0.2.13 type=0 code=0 id=4242 mark=0'],
    save: ['-A -u SEEN_REPLY -s 192.0.2.13 -d 198.51.100.13 -r 198.51.100.13 -q 192.0.2.13 -p icmp --icmp-type 8 --icmp-code 0 --icmp-id 4242'],
  },
  {
    name: 'icmp6-echo',
    note: 'ICMPv6 echo (options are --icmpv6-*; --icmp-type is refused for IPv6)',
    inserts: [['-p', 'icmpv6', '-s', '2001:db8:a::13', '-d', '2001:db8:b::13', '--icmpv6-type', '128', '--icmpv6-code', '0', '--icmpv6-id', '4243', '-u', 'SEEN_REPLY', ...T]],
    extended: ['ipv6 10 icmpv6 58 src=2001:db8:a::13 dst=2001:db8:b::13 type=128 code=0 id=4243 src=2001:db8:b::13 dst=2001:db8:a::13 type=129 code=0 id=4243 mark=0'],
    save: ['-A -u SEEN_REPLY -s 2001:db8:a::13 -d 2001:db8:b::13 -r 2001:db8:b::13 -q 2001:db8:a::13 -p icmpv6 --icmpv6-type 128 --icmpv6-code 0 --icmpv6-id 4243'],
  },
  {
    name: 'sctp4',
    note: 'SCTP with state and verification tags (decimal only; -o extended hides vtags, -o save shows them)',
    inserts: [
      ['-p', 'sctp', '-s', '192.0.2.14', '-d', '198.51.100.14', '--sport', '40301', '--dport', '3868', '--state', 'ESTABLISHED', '--orig-vtag', '305419896', '--reply-vtag', '2271560481', '-u', 'SEEN_REPLY,ASSURED', ...T],
      ['-p', 'sctp', '-s', '192.0.2.14', '-d', '198.51.100.14', '--sport', '40302', '--dport', '3868', '--state', 'COOKIE_WAIT', '--orig-vtag', '7', '--reply-vtag', '0', ...T],
    ],
    extended: [
      'ipv4 2 sctp 132 ESTABLISHED src=192.0.2.14 dst=198.51.100.14 sport=40301 dport=3868 src=198.51.100.14 dst=192.0.2.14 sport=3868 dport=40301 [ASSURED] mark=0',
      'ipv4 2 sctp 132 COOKIE_WAIT src=192.0.2.14 dst=198.51.100.14 sport=40302 dport=3868 [UNREPLIED] src=198.51.100.14 dst=192.0.2.14 sport=3868 dport=40302 mark=0',
    ],
    save: [
      '-A -u SEEN_REPLY,ASSURED -s 192.0.2.14 -d 198.51.100.14 -r 198.51.100.14 -q 192.0.2.14 -p sctp --sport 40301 --dport 3868 --reply-port-src 3868 --reply-port-dst 40301 --state ESTABLISHED --orig-vtag 305419896 --reply-vtag 2271560481',
      '-A -u UNSET -s 192.0.2.14 -d 198.51.100.14 -r 198.51.100.14 -q 192.0.2.14 -p sctp --sport 40302 --dport 3868 --reply-port-src 3868 --reply-port-dst 40302 --state COOKIE_WAIT --orig-vtag 7 --reply-vtag 0',
    ],
  },
  {
    name: 'gre-keys',
    note: 'GRE (47) with keys, IPv4 and IPv6; the CLI requires both keys',
    inserts: [
      ['-p', 'gre', '-s', '192.0.2.15', '-d', '198.51.100.15', '--srckey', '0x10', '--dstkey', '0x20', '-u', 'SEEN_REPLY', ...T],
      ['-p', 'gre', '-s', '2001:db8:a::15', '-d', '2001:db8:b::15', '--srckey', '1', '--dstkey', '2', ...T],
    ],
    extended: [
      'ipv4 2 gre 47 src=192.0.2.15 dst=198.51.100.15 srckey=0x10 dstkey=0x20 src=198.51.100.15 dst=192.0.2.15 srckey=0x20 dstkey=0x10 mark=0',
      'ipv6 10 gre 47 src=2001:db8:a::15 dst=2001:db8:b::15 srckey=0x1 dstkey=0x2 [UNREPLIED] src=2001:db8:b::15 dst=2001:db8:a::15 srckey=0x2 dstkey=0x1 mark=0',
    ],
    save: [
      '-A -u SEEN_REPLY -s 192.0.2.15 -d 198.51.100.15 -r 198.51.100.15 -q 192.0.2.15 -p gre --srckey 16 --dstkey 32 --reply-key-src 32 --reply-key-dst 16',
      '-A -u UNSET -s 2001:db8:a::15 -d 2001:db8:b::15 -r 2001:db8:b::15 -q 2001:db8:a::15 -p gre --srckey 1 --dstkey 2 --reply-key-src 2 --reply-key-dst 1',
    ],
  },
  {
    name: 'generic-proto',
    note: 'a protocol with no tracker (254): addresses only, "unknown"',
    inserts: [
      ['-p', '254', '-s', '192.0.2.16', '-d', '198.51.100.16', '-u', 'SEEN_REPLY', ...T],
      ['-p', '254', '-s', '2001:db8:a::16', '-d', '2001:db8:b::16', ...T],
    ],
    extended: [
      'ipv4 2 unknown 254 src=192.0.2.16 dst=198.51.100.16 src=198.51.100.16 dst=192.0.2.16 mark=0',
      'ipv6 10 unknown 254 src=2001:db8:a::16 dst=2001:db8:b::16 [UNREPLIED] src=2001:db8:b::16 dst=2001:db8:a::16 mark=0',
    ],
    save: [
      '-A -u SEEN_REPLY -s 192.0.2.16 -d 198.51.100.16 -r 198.51.100.16 -q 192.0.2.16 -p 254',
      '-A -u UNSET -s 2001:db8:a::16 -d 2001:db8:b::16 -r 2001:db8:b::16 -q 2001:db8:a::16 -p 254',
    ],
  },
  {
    name: 'ipv6-tcp-udp',
    note: 'IPv6 TCP established and UDP (family follows the addresses; -f is refused with -I)',
    inserts: [
      ['-p', 'tcp', '-s', '2001:db8:a::17', '-d', '2001:db8:b::17', '--sport', '40401', '--dport', '22', ...EST, ...T],
      ['-p', 'udp', '-s', '2001:db8:a::17', '-d', '2001:db8:b::17', '--sport', '40402', '--dport', '53', ...T],
    ],
    extended: [
      'ipv6 10 tcp 6 ESTABLISHED src=2001:db8:a::17 dst=2001:db8:b::17 sport=40401 dport=22 src=2001:db8:b::17 dst=2001:db8:a::17 sport=22 dport=40401 [ASSURED] mark=0',
      'ipv6 10 udp 17 src=2001:db8:a::17 dst=2001:db8:b::17 sport=40402 dport=53 [UNREPLIED] src=2001:db8:b::17 dst=2001:db8:a::17 sport=53 dport=40402 mark=0',
    ],
    save: [
      '-A -u SEEN_REPLY,ASSURED -s 2001:db8:a::17 -d 2001:db8:b::17 -r 2001:db8:b::17 -q 2001:db8:a::17 -p tcp --sport 40401 --dport 22 --reply-port-src 22 --reply-port-dst 40401 --state ESTABLISHED',
      '-A -u UNSET -s 2001:db8:a::17 -d 2001:db8:b::17 -r 2001:db8:b::17 -q 2001:db8:a::17 -p udp --sport 40402 --dport 53 --reply-port-src 53 --reply-port-dst 40402',
    ],
  },
  {
    name: 'zones',
    note: 'entry zone (-w) and a one-direction tuple zone (--orig-zone or --reply-zone, never both)',
    inserts: [
      [...TCP4(40501), ...EST, '-w', '7', ...T],
      [...TCP4(40502), ...EST, '--orig-zone', '3', ...T],
      [...TCP4(40503), ...EST, '--reply-zone', '4', ...T],
      // The same tuple again in another zone is a different entry.
      [...TCP4(40501), ...EST, '-w', '8', ...T],
    ],
    extended: [
      tcp4Line(40501, 'ESTABLISHED', '<R> [ASSURED] mark=0 zone=7'),
      tcp4Line(40501, 'ESTABLISHED', '<R> [ASSURED] mark=0 zone=8'),
      tcp4Line(40502, 'ESTABLISHED', 'zone-orig=3 <R> [ASSURED] mark=0'),
      tcp4Line(40503, 'ESTABLISHED', '<R> zone-reply=4 [ASSURED] mark=0'),
    ],
    save: [
      tcp4Save(40501, 'SEEN_REPLY,ASSURED', 'ESTABLISHED', ' -w 7'),
      tcp4Save(40501, 'SEEN_REPLY,ASSURED', 'ESTABLISHED', ' -w 8'),
      tcp4Save(40502, 'SEEN_REPLY,ASSURED', 'ESTABLISHED', ' --orig-zone 3'),
      tcp4Save(40503, 'SEEN_REPLY,ASSURED', 'ESTABLISHED', ' --reply-zone 4'),
    ],
  },
  {
    name: 'mark',
    note: 'connmark (32 bits; listed in decimal, and NOT in -o save)',
    saveLoses: 'the mark',
    inserts: [[...TCP4(40601), ...EST, '-m', '0xdeadbeef', ...T]],
    extended: [tcp4Line(40601, 'ESTABLISHED', '<R> [ASSURED] mark=3735928559')],
    save: [tcp4Save(40601, 'SEEN_REPLY,ASSURED', 'ESTABLISHED')],
  },
  {
    name: 'labels',
    note: 'connlabels, bits 0, 5 and 127 (needs a ct label rule in the namespace; NOT in -o save)',
    needsLabels: true,
    saveLoses: 'the labels',
    inserts: [[...TCP4(40701), ...EST, '--label-add', [0, 5, 127].map(labelName).join(','), ...T]],
    extended: [tcp4Line(40701, 'ESTABLISHED', `<R> [ASSURED] mark=0 labels=${[0, 5, 127].map(labelName).join(',')}`)],
    save: [tcp4Save(40701, 'SEEN_REPLY,ASSURED', 'ESTABLISHED')],
  },
  {
    name: 'vm-like',
    note: 'what a VM flow on a host carries at once: zone, mark and labels',
    needsLabels: true,
    saveLoses: 'the mark and the labels',
    inserts: [[...TCP4(40702), ...EST, '-w', '12', '-m', '0x100', '--label-add', labelName(1), ...T]],
    extended: [tcp4Line(40702, 'ESTABLISHED', `<R> [ASSURED] mark=256 zone=12 labels=${labelName(1)}`)],
    save: [tcp4Save(40702, 'SEEN_REPLY,ASSURED', 'ESTABLISHED', ' -w 12')],
  },
  {
    name: 'nat4',
    note: 'SNAT and DNAT, address only and with a port (a kernel NAT binding, made via CTA_NAT_SRC/DST)',
    inserts: [
      ['-p', 'tcp', '-s', '192.0.2.20', '-d', '203.0.113.20', '--sport', '40801', '--dport', '443', ...EST, '--src-nat', '198.51.100.20', ...T],
      ['-p', 'tcp', '-s', '192.0.2.20', '-d', '203.0.113.20', '--sport', '40802', '--dport', '443', ...EST, '--src-nat', '198.51.100.20:5000', ...T],
      ['-p', 'tcp', '-s', '203.0.113.21', '-d', '198.51.100.21', '--sport', '40803', '--dport', '80', ...EST, '--dst-nat', '192.0.2.21', ...T],
      ['-p', 'tcp', '-s', '203.0.113.21', '-d', '198.51.100.21', '--sport', '40804', '--dport', '80', ...EST, '--dst-nat', '192.0.2.21:8080', ...T],
    ],
    extended: [
      'ipv4 2 tcp 6 ESTABLISHED src=192.0.2.20 dst=203.0.113.20 sport=40801 dport=443 src=203.0.113.20 dst=198.51.100.20 sport=443 dport=40801 [ASSURED] mark=0',
      'ipv4 2 tcp 6 ESTABLISHED src=192.0.2.20 dst=203.0.113.20 sport=40802 dport=443 src=203.0.113.20 dst=198.51.100.20 sport=443 dport=5000 [ASSURED] mark=0',
      'ipv4 2 tcp 6 ESTABLISHED src=203.0.113.21 dst=198.51.100.21 sport=40803 dport=80 src=192.0.2.21 dst=203.0.113.21 sport=80 dport=40803 [ASSURED] mark=0',
      'ipv4 2 tcp 6 ESTABLISHED src=203.0.113.21 dst=198.51.100.21 sport=40804 dport=80 src=192.0.2.21 dst=203.0.113.21 sport=8080 dport=40804 [ASSURED] mark=0',
    ],
    save: [
      '-A -u SEEN_REPLY,ASSURED -s 192.0.2.20 -d 203.0.113.20 -r 203.0.113.20 -n 198.51.100.20 -p tcp --sport 40801 --dport 443 --reply-port-src 443 --reply-port-dst 40801 --state ESTABLISHED',
      '-A -u SEEN_REPLY,ASSURED -s 192.0.2.20 -d 203.0.113.20 -r 203.0.113.20 -n 198.51.100.20 -p tcp --sport 40802 --dport 443 --reply-port-src 443 --reply-port-dst 5000 --state ESTABLISHED',
      '-A -u SEEN_REPLY,ASSURED -s 203.0.113.21 -d 198.51.100.21 -g 192.0.2.21 -q 203.0.113.21 -p tcp --sport 40803 --dport 80 --reply-port-src 80 --reply-port-dst 40803 --state ESTABLISHED',
      '-A -u SEEN_REPLY,ASSURED -s 203.0.113.21 -d 198.51.100.21 -g 192.0.2.21 -q 203.0.113.21 -p tcp --sport 40804 --dport 80 --reply-port-src 8080 --reply-port-dst 40804 --state ESTABLISHED',
    ],
  },
  {
    name: 'nat4-both-ways',
    note: 'SNAT and DNAT on one entry, both with ports',
    saveLoses: 'both NAT ports: -R re-creates the NAT addresses with the original ports',
    inserts: [
      ['-p', 'udp', '-s', '192.0.2.22', '-d', '203.0.113.22', '--sport', '40805', '--dport', '53', '-u', 'SEEN_REPLY', '--src-nat', '198.51.100.22:1234', '--dst-nat', '192.0.2.99:5353', ...T],
    ],
    extended: ['ipv4 2 udp 17 src=192.0.2.22 dst=203.0.113.22 sport=40805 dport=53 src=192.0.2.99 dst=198.51.100.22 sport=5353 dport=1234 mark=0'],
    save: ['-A -u SEEN_REPLY -s 192.0.2.22 -d 203.0.113.22 -g 192.0.2.99 -n 198.51.100.22 -p udp --sport 40805 --dport 53 --reply-port-src 5353 --reply-port-dst 1234'],
  },
  {
    name: 'nat6',
    note: 'IPv6 SNAT/DNAT; with a port the address goes in brackets: [2001:db8::1]:7000',
    inserts: [
      ['-p', 'tcp', '-s', '2001:db8:a::20', '-d', '2001:db8:c::20', '--sport', '40901', '--dport', '443', ...EST, '--src-nat', '2001:db8:b::20', ...T],
      ['-p', 'tcp', '-s', '2001:db8:a::20', '-d', '2001:db8:c::20', '--sport', '40902', '--dport', '443', ...EST, '--src-nat', '[2001:db8:b::20]:7000', ...T],
      ['-p', 'tcp', '-s', '2001:db8:c::21', '-d', '2001:db8:b::21', '--sport', '40903', '--dport', '80', ...EST, '--dst-nat', '[2001:db8:a::21]:8080', ...T],
      ['-p', 'udp', '-s', '2001:db8:c::21', '-d', '2001:db8:b::21', '--sport', '40904', '--dport', '53', '--dst-nat', '2001:db8:a::21', ...T],
    ],
    extended: [
      'ipv6 10 tcp 6 ESTABLISHED src=2001:db8:a::20 dst=2001:db8:c::20 sport=40901 dport=443 src=2001:db8:c::20 dst=2001:db8:b::20 sport=443 dport=40901 [ASSURED] mark=0',
      'ipv6 10 tcp 6 ESTABLISHED src=2001:db8:a::20 dst=2001:db8:c::20 sport=40902 dport=443 src=2001:db8:c::20 dst=2001:db8:b::20 sport=443 dport=7000 [ASSURED] mark=0',
      'ipv6 10 tcp 6 ESTABLISHED src=2001:db8:c::21 dst=2001:db8:b::21 sport=40903 dport=80 src=2001:db8:a::21 dst=2001:db8:c::21 sport=8080 dport=40903 [ASSURED] mark=0',
      'ipv6 10 udp 17 src=2001:db8:c::21 dst=2001:db8:b::21 sport=40904 dport=53 [UNREPLIED] src=2001:db8:a::21 dst=2001:db8:c::21 sport=53 dport=40904 mark=0',
    ],
    save: [
      '-A -u SEEN_REPLY,ASSURED -s 2001:db8:a::20 -d 2001:db8:c::20 -r 2001:db8:c::20 -n 2001:db8:b::20 -p tcp --sport 40901 --dport 443 --reply-port-src 443 --reply-port-dst 40901 --state ESTABLISHED',
      '-A -u SEEN_REPLY,ASSURED -s 2001:db8:a::20 -d 2001:db8:c::20 -r 2001:db8:c::20 -n 2001:db8:b::20 -p tcp --sport 40902 --dport 443 --reply-port-src 443 --reply-port-dst 7000 --state ESTABLISHED',
      '-A -u SEEN_REPLY,ASSURED -s 2001:db8:c::21 -d 2001:db8:b::21 -g 2001:db8:a::21 -q 2001:db8:c::21 -p tcp --sport 40903 --dport 80 --reply-port-src 8080 --reply-port-dst 40903 --state ESTABLISHED',
      '-A -u UNSET -s 2001:db8:c::21 -d 2001:db8:b::21 -g 2001:db8:a::21 -q 2001:db8:c::21 -p udp --sport 40904 --dport 53 --reply-port-src 53 --reply-port-dst 40904',
    ],
  },
  {
    name: 'reply-tuple-without-nat',
    note: 'an explicit reply tuple that is not the inverse: taken as given, but no NAT status/binding (save says -q, not -n)',
    inserts: [['-p', 'tcp', '-s', '192.0.2.23', '-d', '203.0.113.23', '--sport', '41001', '--dport', '443', ...EST, '-r', '203.0.113.23', '-q', '198.51.100.23', '--reply-port-src', '443', '--reply-port-dst', '6000', ...T]],
    extended: ['ipv4 2 tcp 6 ESTABLISHED src=192.0.2.23 dst=203.0.113.23 sport=41001 dport=443 src=203.0.113.23 dst=198.51.100.23 sport=443 dport=6000 [ASSURED] mark=0'],
    save: ['-A -u SEEN_REPLY,ASSURED -s 192.0.2.23 -d 203.0.113.23 -r 203.0.113.23 -q 198.51.100.23 -p tcp --sport 41001 --dport 443 --reply-port-src 443 --reply-port-dst 6000 --state ESTABLISHED'],
  },
];

/** What the CLI or kernel refuses or quietly changes. */
export interface CliLimit {
  readonly name: string;
  readonly why: string;
  readonly insert: readonly string[];
  /** The insert fails and stderr matches this. */
  readonly fails?: RegExp;
  /** The insert succeeds, but the entry is listed (normalised) as this instead. */
  readonly lists?: string;
}

export const cliLimits: readonly CliLimit[] = [
  {
    name: 'orig-zone and reply-zone together',
    why: 'the kernel parses both tuple zones into one zone and refuses a second one (EINVAL)',
    insert: [...TCP4(42001), ...EST, '--orig-zone', '3', '--reply-zone', '4', ...T],
    fails: /Operation failed: invalid parameters/,
  },
  {
    name: 'entry zone and tuple zone together',
    why: 'same: a tuple zone is only accepted while the zone is still the default',
    insert: [...TCP4(42002), ...EST, '-w', '9', '--orig-zone', '9', ...T],
    fails: /Operation failed: invalid parameters/,
  },
  {
    name: 'status EXPECTED',
    why: 'ctnetlink refuses to set EXPECTED (EBUSY): RELATED entries cannot be created without their master',
    insert: [...TCP4(42003), ...EST, '-u', 'EXPECTED', ...T],
    fails: /Device or resource busy/,
  },
  {
    name: 'secmark on create',
    why: 'the CLI allows --secmark only as a filter',
    insert: [...TCP4(42004), ...EST, '-c', '5', ...T],
    fails: /Illegal option `--secmark'/,
  },
  {
    name: 'family with create',
    why: 'the family comes from the addresses; -f is for listing only',
    insert: ['-f', 'ipv6', '-p', 'udp', '-s', '2001:db8:a::30', '-d', '2001:db8:b::30', '--sport', '1', '--dport', '2', ...T],
    fails: /Illegal option `--family'/,
  },
  {
    name: 'helper on create',
    why: 'the CLI has no --helper (ctnetlink has CTA_HELP; use real traffic or our own netlink code)',
    insert: [...TCP4(42005, 21), ...EST, '--helper', 'ftp', ...T],
    fails: /unknown option `--helper'/,
  },
  {
    name: 'GRE without keys',
    why: 'the CLI insists on both keys for GRE',
    insert: ['-p', 'gre', '-s', '192.0.2.31', '-d', '198.51.100.31', ...T],
    fails: /you have to specify `--srckey' and `--dstkey'/,
  },
  {
    name: 'ICMP options for ICMPv6',
    why: 'ICMPv6 has its own option names (--icmpv6-type/-code/-id)',
    insert: ['-p', 'icmpv6', '-s', '2001:db8:a::32', '-d', '2001:db8:b::32', '--icmp-type', '128', '--icmp-code', '0', ...T],
    fails: /unknown option `--icmp-type'/,
  },
  {
    name: 'SCTP vtag in hex',
    why: 'the CLI parses vtags as decimal: 0x1234 silently becomes 0',
    insert: ['-p', 'sctp', '-s', '192.0.2.33', '-d', '198.51.100.33', '--sport', '1', '--dport', '2', '--state', 'ESTABLISHED', '--orig-vtag', '0x1234', '--reply-vtag', '0x5678', ...T],
    lists: '-A -u UNSET -s 192.0.2.33 -d 198.51.100.33 -r 198.51.100.33 -q 192.0.2.33 -p sctp --sport 1 --dport 2 --reply-port-src 2 --reply-port-dst 1 --state ESTABLISHED --orig-vtag 0 --reply-vtag 0',
  },
  {
    name: 'DCCP',
    why: 'Linux 6.18 has no DCCP tracker (DCCP was removed): the entry becomes generic and loses its ports',
    insert: ['-p', 'dccp', '-s', '192.0.2.34', '-d', '198.51.100.34', '--sport', '1', '--dport', '2', '--state', 'OPEN', '--role', 'client', ...T],
    lists: 'ipv4 2 dccp 33 src=192.0.2.34 dst=198.51.100.34 sport=0 dport=0 [UNREPLIED] src=198.51.100.34 dst=192.0.2.34 sport=0 dport=0 mark=0',
  },
];

/** What a traffic recipe expects in the router's normalised listings. */
export interface TrafficOutcome {
  readonly extended: readonly RegExp[];
  readonly save: readonly RegExp[];
  /** Lines of `conntrack -L expect` (not normalised: they carry a timeout first). */
  readonly expect?: readonly RegExp[];
}

export interface TrafficRecipe {
  readonly name: string;
  readonly note: string;
  /** Makes the traffic; the flows stay open until the lab is cleaned up. */
  run(topo: NatTopology): Promise<TrafficOutcome>;
}

function esc(s: string | number): string {
  return String(s).replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** An anchored pattern; `%d` stands for a port the kernel picks. */
function line(text: string): RegExp {
  return new RegExp(`^${text.split('%d').map(esc).join('\\d+')}$`);
}

export const trafficRecipes: readonly TrafficRecipe[] = [
  {
    name: 'kernel-snat-udp4',
    note: 'UDP through the router: snat to the wan address with a port from 20000-29999',
    async run(topo) {
      await topo.agent(topo.server, ['udp-echo', ADDR.server4, '7000'], /ready/);
      await topo.agent(topo.client, ['udp-client', ADDR.server4, '7000', '41101'], /replied/);
      return {
        extended: [line(`ipv4 2 udp 17 src=${ADDR.client4} dst=${ADDR.server4} sport=41101 dport=7000 src=${ADDR.server4} dst=${ADDR.routerWan4} sport=7000 dport=%d mark=0`)],
        save: [line(`-A -u SEEN_REPLY -s ${ADDR.client4} -d ${ADDR.server4} -r ${ADDR.server4} -n ${ADDR.routerWan4} -p udp --sport 41101 --dport 7000 --reply-port-src 7000 --reply-port-dst %d`)],
      };
    },
  },
  {
    name: 'kernel-snat-tcp4-established',
    note: 'a TCP flow held open through the router: ESTABLISHED, ASSURED, SNAT with port mapping',
    async run(topo) {
      await topo.agent(topo.server, ['tcp-server', ADDR.server4, '7001'], /ready/);
      await topo.agent(topo.client, ['tcp-client', ADDR.server4, '7001', '41102'], /connected/);
      return {
        extended: [line(`ipv4 2 tcp 6 ESTABLISHED src=${ADDR.client4} dst=${ADDR.server4} sport=41102 dport=7001 src=${ADDR.server4} dst=${ADDR.routerWan4} sport=7001 dport=%d [ASSURED] mark=0`)],
        save: [line(`-A -u SEEN_REPLY,ASSURED -s ${ADDR.client4} -d ${ADDR.server4} -r ${ADDR.server4} -n ${ADDR.routerWan4} -p tcp --sport 41102 --dport 7001 --reply-port-src 7001 --reply-port-dst %d --state ESTABLISHED`)],
      };
    },
  },
  {
    name: 'kernel-masquerade6',
    note: 'IPv6 masquerade of UDP and TCP (the source port is kept when free)',
    async run(topo) {
      await topo.agent(topo.server, ['udp-echo', ADDR.server6, '7000'], /ready/);
      await topo.agent(topo.server, ['tcp-server', ADDR.server6, '7001'], /ready/);
      await topo.agent(topo.client, ['udp-client', ADDR.server6, '7000', '41103'], /replied/);
      await topo.agent(topo.client, ['tcp-client', ADDR.server6, '7001', '41104'], /connected/);
      return {
        extended: [
          line(`ipv6 10 udp 17 src=${ADDR.client6} dst=${ADDR.server6} sport=41103 dport=7000 src=${ADDR.server6} dst=${ADDR.routerWan6} sport=7000 dport=%d mark=0`),
          line(`ipv6 10 tcp 6 ESTABLISHED src=${ADDR.client6} dst=${ADDR.server6} sport=41104 dport=7001 src=${ADDR.server6} dst=${ADDR.routerWan6} sport=7001 dport=%d [ASSURED] mark=0`),
        ],
        save: [
          line(`-A -u SEEN_REPLY -s ${ADDR.client6} -d ${ADDR.server6} -r ${ADDR.server6} -n ${ADDR.routerWan6} -p udp --sport 41103 --dport 7000 --reply-port-src 7000 --reply-port-dst %d`),
          line(`-A -u SEEN_REPLY,ASSURED -s ${ADDR.client6} -d ${ADDR.server6} -r ${ADDR.server6} -n ${ADDR.routerWan6} -p tcp --sport 41104 --dport 7001 --reply-port-src 7001 --reply-port-dst %d --state ESTABLISHED`),
        ],
      };
    },
  },
  {
    name: 'kernel-dnat-port',
    note: 'DNAT with a port change, IPv4 and IPv6: wan:8080 -> client:80',
    async run(topo) {
      await topo.agent(topo.client, ['tcp-server', ADDR.client4, '80'], /ready/);
      await topo.agent(topo.client, ['tcp-server', ADDR.client6, '80'], /ready/);
      await topo.agent(topo.server, ['tcp-client', ADDR.routerWan4, '8080', '41105'], /connected/);
      await topo.agent(topo.server, ['tcp-client', ADDR.routerWan6, '8080', '41106'], /connected/);
      return {
        extended: [
          line(`ipv4 2 tcp 6 ESTABLISHED src=${ADDR.server4} dst=${ADDR.routerWan4} sport=41105 dport=8080 src=${ADDR.client4} dst=${ADDR.server4} sport=80 dport=41105 [ASSURED] mark=0`),
          line(`ipv6 10 tcp 6 ESTABLISHED src=${ADDR.server6} dst=${ADDR.routerWan6} sport=41106 dport=8080 src=${ADDR.client6} dst=${ADDR.server6} sport=80 dport=41106 [ASSURED] mark=0`),
        ],
        save: [
          line(`-A -u SEEN_REPLY,ASSURED -s ${ADDR.server4} -d ${ADDR.routerWan4} -g ${ADDR.client4} -q ${ADDR.server4} -p tcp --sport 41105 --dport 8080 --reply-port-src 80 --reply-port-dst 41105 --state ESTABLISHED`),
          line(`-A -u SEEN_REPLY,ASSURED -s ${ADDR.server6} -d ${ADDR.routerWan6} -g ${ADDR.client6} -q ${ADDR.server6} -p tcp --sport 41106 --dport 8080 --reply-port-src 80 --reply-port-dst 41106 --state ESTABLISHED`),
        ],
      };
    },
  },
  {
    name: 'ftp-helper-related4',
    note: 'FTP PASV through SNAT: control entry gets helper=ftp, the data flow is RELATED (status EXPECTED) with the control entry as master',
    async run(topo) {
      await topo.agent(topo.server, ['ftp-server', ADDR.server4, '21'], /ready/);
      const { match } = await topo.agent(topo.client, ['ftp-client', ADDR.server4, '21', 'PASV', 'data', '41107'], /data (\d+) (\d+)/);
      const [dataSport, dataDport] = [match[1] as string, match[2] as string];
      return {
        extended: [
          line(`ipv4 2 tcp 6 ESTABLISHED src=${ADDR.client4} dst=${ADDR.server4} sport=41107 dport=21 src=${ADDR.server4} dst=${ADDR.routerWan4} sport=21 dport=%d [ASSURED] mark=0 helper=ftp`),
          line(`ipv4 2 tcp 6 ESTABLISHED src=${ADDR.client4} dst=${ADDR.server4} sport=${dataSport} dport=${dataDport} src=${ADDR.server4} dst=${ADDR.routerWan4} sport=${dataDport} dport=%d [ASSURED] mark=0`),
        ],
        save: [
          line(`-A -u SEEN_REPLY,ASSURED -s ${ADDR.client4} -d ${ADDR.server4} -r ${ADDR.server4} -n ${ADDR.routerWan4} -p tcp --sport 41107 --dport 21 --reply-port-src 21 --reply-port-dst %d --state ESTABLISHED`),
          line(`-A -u EXPECTED,SEEN_REPLY,ASSURED -s ${ADDR.client4} -d ${ADDR.server4} -r ${ADDR.server4} -n ${ADDR.routerWan4} -p tcp --sport ${dataSport} --dport ${dataDport} --reply-port-src ${dataDport} --reply-port-dst %d --state ESTABLISHED`),
        ],
      };
    },
  },
  {
    name: 'ftp-helper-related6',
    note: 'FTP EPSV over IPv6 through masquerade: helper=ftp and a RELATED data flow',
    async run(topo) {
      await topo.agent(topo.server, ['ftp-server', ADDR.server6, '21'], /ready/);
      const { match } = await topo.agent(topo.client, ['ftp-client', ADDR.server6, '21', 'EPSV', 'data', '41108'], /data (\d+) (\d+)/);
      const [dataSport, dataDport] = [match[1] as string, match[2] as string];
      return {
        extended: [
          line(`ipv6 10 tcp 6 ESTABLISHED src=${ADDR.client6} dst=${ADDR.server6} sport=41108 dport=21 src=${ADDR.server6} dst=${ADDR.routerWan6} sport=21 dport=%d [ASSURED] mark=0 helper=ftp`),
          line(`ipv6 10 tcp 6 ESTABLISHED src=${ADDR.client6} dst=${ADDR.server6} sport=${dataSport} dport=${dataDport} src=${ADDR.server6} dst=${ADDR.routerWan6} sport=${dataDport} dport=%d [ASSURED] mark=0`),
        ],
        save: [
          line(`-A -u EXPECTED,SEEN_REPLY,ASSURED -s ${ADDR.client6} -d ${ADDR.server6} -r ${ADDR.server6} -n ${ADDR.routerWan6} -p tcp --sport ${dataSport} --dport ${dataDport} --reply-port-src ${dataDport} --reply-port-dst %d --state ESTABLISHED`),
        ],
      };
    },
  },
  {
    name: 'ftp-expectation4',
    note: 'PASV answered but the data port never opened: an expectation stays in the expect table',
    async run(topo) {
      await topo.agent(topo.server, ['ftp-server', ADDR.server4, '2121'], /ready/);
      const { match } = await topo.agent(topo.client, ['ftp-client', ADDR.server4, '2121', 'PASV', 'nodata', '41109'], /expect (\d+)/);
      const port = match[1] as string;
      return {
        extended: [
          line(`ipv4 2 tcp 6 ESTABLISHED src=${ADDR.client4} dst=${ADDR.server4} sport=41109 dport=2121 src=${ADDR.server4} dst=${ADDR.routerWan4} sport=2121 dport=%d [ASSURED] mark=0 helper=ftp`),
        ],
        save: [],
        expect: [
          line(`%d proto=6 src=${ADDR.client4} dst=${ADDR.server4} sport=0 dport=${port} mask-src=255.255.255.255 mask-dst=255.255.255.255 sport=0 dport=65535 master-src=${ADDR.client4} master-dst=${ADDR.server4} sport=41109 dport=2121 class=0 helper=ftp`),
        ],
      };
    },
  },
];

/** Patterns of `outcome` that match no line of the router's current listings. */
export async function missingFromRouter(topo: NatTopology, outcome: TrafficOutcome): Promise<string[]> {
  const extended = normalize(await listExtended(topo.router));
  const save = normalize(await listSave(topo.router));
  const expect = outcome.expect === undefined ? [] : await listExpect(topo.router);
  const missing: string[] = [];
  const check = (patterns: readonly RegExp[], listing: readonly string[], what: string): void => {
    for (const p of patterns) if (!listing.some((l) => p.test(l))) missing.push(`${what}: ${p.source}`);
  };
  check(outcome.extended, extended, 'extended');
  check(outcome.save, save, 'save');
  check(outcome.expect ?? [], expect, 'expect');
  return missing;
}
