import 'reflect-metadata';
import { RegistryStore } from '../../../plugin/ports/registry-store';
import { JournalStore } from '../../../plugin/ports/journal-store';
import { HostAddressesPort } from '../../../plugin/ports/host-addresses-port';
import { HostVmsPort } from '../../../plugin/ports/host-vms-port';
import { FakeHostVms, FakeJournal } from './fakes/fake-journal';
import { FakeRegistry } from './fakes/fake-registry';
import { FakeHypervisor } from './fakes/fake-hypervisor';
import { DomainEventsPort } from '../../../plugin/ports/domain-events-port';
import { VmstateObjectPort } from '../../../plugin/ports/vmstate-object-port';
import { container } from 'tsyringe';
import { parseAddress } from '../../../plugin/address';
import { DaemonConfig, DaemonConfigToken, defaultConfig } from '../../../plugin/daemon-config';
import { L4, R_FLAGS, R_PROTO_STATE, R_REPLY_DPORT, R_REPLY_DST, R_REPLY_SPORT, R_REPLY_SRC, R_STATUS, R_TIMEOUT, RecordFlag, Status } from '../../../plugin/flow';
import { FlowRecord } from '../../../plugin/flow-view';
import { TCP_ESTABLISHED } from '../../../plugin/flow-json';
import { MigrationEngine } from '../../../plugin/migration-engine';
import { ServiceEvent, SessionInfo, SessionState } from '../../../plugin/migration-service';
import { BlockerPort } from '../../../plugin/ports/blocker-port';
import { Clock } from '../../../plugin/ports/clock';
import { ConnectionFeed } from '../../../plugin/ports/connection-feed';
import { ConntrackPort } from '../../../plugin/ports/conntrack-port';
import { Log } from '../../../plugin/ports/log-port';
import { PeerAddress, PeerPort } from '../../../plugin/ports/peer-port';
import { VmStatePort } from '../../../plugin/ports/vmstate-port';
import { VmSpec, vmFilter, vmSpec } from '../../../plugin/vm';
import { makeFlow } from '../table/flow-builder';
import { FakeBlocker } from './fakes/fake-blocker';
import { FakeClock } from './fakes/fake-clock';
import { FakeConntrack, FakeFeed, FakeKernel } from './fakes/fake-kernel';
import { FakeNetwork } from './fakes/fake-peer-network';
import { FakeVmState } from './fakes/fake-vmstate';
import { RecordingLog } from './fakes/recording-log';
import { providePort } from '../../../plugin/ports/port-token';

export const PORT = 7471;
export const CHANGE_INTERVAL_MS = 20;
export const BLOCK_TIMEOUT_MS = 30_000;

/** The migrating VM: one IPv4 and one IPv6 address. */
export const VM_UUID = '6f1c2a3e-9b4d-4c5e-8f70-112233445566';
export const VM_V4 = '192.0.2.50';
export const VM_V6 = '2001:db8:50::1';
export const vm: VmSpec = vmSpec(VM_UUID, [VM_V4, VM_V6]);
export const vmOnly = vmFilter(vm);

/** One hypervisor host: its kernel, drop tables, helper, log and engine. */
export interface Host {
  name: string;
  ip: string;
  address: PeerAddress;
  /** "ADDR:PORT" for --source. */
  peerText: string;
  kernel: FakeKernel;
  conntrack: FakeConntrack;
  feeds: FakeFeed;
  blocker: FakeBlocker;
  vmstate: FakeVmState;
  log: RecordingLog;
  engine: MigrationEngine;
  events: ServiceEvent[];
  /** Kernel writes and drop changes, in order. */
  trace: string[];
  config: DaemonConfig;
  registry: FakeRegistry;
  journal: FakeJournal;
  hostVms: FakeHostVms;
  hypervisor: FakeHypervisor;
}

/** Wraps the fakes of some ports before the engine gets them (the way the composition root wraps real ports). */
export interface PortWrap {
  feed?: (f: ConnectionFeed) => ConnectionFeed;
  peers?: (p: PeerPort) => PeerPort;
  vmstate?: (v: VmStatePort) => VmStatePort;
  /** The journal a previous engine on this host left (a restart after a crash). */
  journal?: FakeJournal;
}

/** A host whose engine is resolved from a child container with a fake at every port. */
export async function startHost(
  net: FakeNetwork,
  clock: FakeClock,
  name: string,
  ip: string,
  settings: Partial<DaemonConfig> = {},
  registry: FakeRegistry = new FakeRegistry(),
  wrap: PortWrap = {},
): Promise<Host> {
  const trace: string[] = [];
  const kernel = new FakeKernel();
  const conntrack = new FakeConntrack(kernel, trace);
  const feeds = new FakeFeed(kernel);
  const blocker = new FakeBlocker(trace);
  const vmstate = new FakeVmState();
  const log = new RecordingLog();
  const config: DaemonConfig = {
    ...defaultConfig(),
    listen: { host: ip, port: PORT },
    blockTimeoutMs: BLOCK_TIMEOUT_MS,
    changeIntervalMs: CHANGE_INTERVAL_MS,
    tableCapacity: 4096,
    ...settings,
  };
  const c = container.createChildContainer();
  providePort(c, DaemonConfigToken, { useValue: config });
  providePort(c, ConntrackPort, { useValue: conntrack });
  providePort(c, ConnectionFeed, { useValue: wrap.feed ? wrap.feed(feeds) : feeds });
  providePort(c, BlockerPort, { useValue: blocker });
  providePort(c, PeerPort, { useValue: wrap.peers ? wrap.peers(net.port(ip)) : net.port(ip) });
  providePort(c, VmStatePort, { useValue: wrap.vmstate ? wrap.vmstate(vmstate) : vmstate });
  providePort(c, Clock, { useValue: clock });
  providePort(c, Log, { useValue: log });
  providePort(c, RegistryStore, { useValue: registry });
  const journal = wrap.journal ?? new FakeJournal();
  const hostVms = new FakeHostVms();
  providePort(c, JournalStore, { useValue: journal });
  providePort(c, HostVmsPort, { useValue: hostVms });
  // The host's own address, plus loopback, as getifaddrs lists them.
  providePort(c, HostAddressesPort, { useValue: { addresses: () => [ip, '127.0.0.1', '::1'] } });
  const hypervisor = new FakeHypervisor();
  providePort(c, VmstateObjectPort, { useValue: hypervisor });
  providePort(c, DomainEventsPort, { useValue: hypervisor });
  const engine = c.resolve(MigrationEngine);
  const events: ServiceEvent[] = [];
  engine.subscribe((e) => events.push(e));
  const address = await engine.start();
  return { name, ip, address, peerText: `${ip}:${PORT}`, kernel, conntrack, feeds, blocker, vmstate, log, engine, events, trace, config, registry, journal, hostVms, hypervisor };
}

/** The states a host's session of `role` went through, from its state-changed events. */
export function statePath(h: Host, role: 'source' | 'destination'): SessionState[] {
  const path: SessionState[] = [];
  for (const e of h.events) {
    if (e.kind !== 'state-changed' || e.session.role !== role) continue;
    if (path.length === 0) path.push(e.from);
    path.push(e.session.state);
  }
  return path;
}

/** The host's session for the VM (the latest). */
export function sessionOf(h: Host): SessionInfo {
  const s = h.engine.sessions().filter((x) => x.vm === VM_UUID);
  if (s.length === 0) throw new Error(`${h.name} has no session for the VM`);
  return s[s.length - 1];
}

export function eventKinds(h: Host): string[] {
  return h.events.map((e) => e.kind);
}


export interface FlowOptions {
  /** TCP state (kernel numbering; 3 = established). */
  state?: number;
  zone?: number;
  timeout?: number;
  status?: number;
  /** Reply tuple "src:sport>dst:dport" when it is not the mirror of the original (NAT). */
  reply?: { src: string; sport: number; dst: string; dport: number };
}

const scratch = new FlowRecord();

/** A TCP entry (established unless told otherwise). */
export function tcp(src: string, sport: number, dst: string, dport: number, o: FlowOptions = {}): FlowRecord {
  const r = makeFlow(scratch, L4.TCP, src, sport, dst, dport, o.zone);
  r.setU8(R_PROTO_STATE, o.state ?? TCP_ESTABLISHED);
  r.setFlag(RecordFlag.HasProtoInfo);
  return finish(r, o);
}

export function udp(src: string, sport: number, dst: string, dport: number, o: FlowOptions = {}): FlowRecord {
  return finish(makeFlow(scratch, L4.UDP, src, sport, dst, dport, o.zone), o);
}

function finish(r: FlowRecord, o: FlowOptions): FlowRecord {
  if (o.timeout !== undefined) r.setU32(R_TIMEOUT, o.timeout);
  if (o.status !== undefined) r.setU32(R_STATUS, o.status);
  if (o.reply) {
    r.u8.fill(0, R_REPLY_SRC, R_REPLY_SRC + 16);
    r.u8.fill(0, R_REPLY_DST, R_REPLY_DST + 16);
    r.u8.set(parseAddress(o.reply.src).bytes, R_REPLY_SRC);
    r.u8.set(parseAddress(o.reply.dst).bytes, R_REPLY_DST);
    r.setU16(R_REPLY_SPORT, o.reply.sport);
    r.setU16(R_REPLY_DPORT, o.reply.dport);
  }
  // The kernel never holds table flags.
  r.setU8(R_FLAGS, r.flags & ~(RecordFlag.Live | RecordFlag.Tombstone));
  return new FlowRecord().copyFrom(r);
}

/** The VM's entries on its source host: v4 and v6, established TCP, UDP, SNAT and DNAT. */
export function vmFlows(): FlowRecord[] {
  return [
    tcp('198.51.100.9', 40001, VM_V4, 22),
    tcp('2001:db8:99::9', 40002, VM_V6, 443),
    tcp('198.51.100.9', 40005, VM_V4, 80, { state: 5 /* FIN_WAIT */, timeout: 120 }),
    udp(VM_V4, 5353, '198.51.100.53', 53, { timeout: 30 }),
    udp(VM_V6, 123, '2001:db8:99::123', 123),
    // SNAT: the VM talks out through the host's public address.
    tcp(VM_V4, 41000, '203.0.113.5', 80, { status: Status.Confirmed | Status.SeenReply | Status.Assured | Status.SrcNat | Status.SrcNatDone, reply: { src: '203.0.113.5', sport: 80, dst: '198.51.100.200', dport: 61000 } }),
    // DNAT: a client reaches the VM through a forwarded port; only the reply tuple names the VM.
    tcp('198.51.100.9', 50000, '198.51.100.200', 8080, { status: Status.Confirmed | Status.SeenReply | Status.Assured | Status.DstNat | Status.DstNatDone, reply: { src: VM_V4, sport: 80, dst: '198.51.100.9', dport: 50000 } }),
    // A zoned entry still belongs to a VM registered without a zone.
    udp(VM_V4, 4789, '198.51.100.77', 4789, { zone: 5 }),
  ];
}

/** Entries of other guests and of the host itself. */
export function foreignFlows(): FlowRecord[] {
  return [tcp('198.51.100.9', 40003, '192.0.2.77', 22), udp('2001:db8:77::1', 53, '2001:db8:99::53', 53), tcp('192.0.2.10', 7471, '192.0.2.20', 40999)];
}

export function put(h: Host, flows: FlowRecord[]): void {
  for (const f of flows) h.kernel.put(f);
}

/** Two hosts on one fake network: A runs the VM (its entries, registered), B is where it goes. */
export interface Pair {
  clock: FakeClock;
  net: FakeNetwork;
  a: Host;
  b: Host;
}

/** A with the VM's entries and the VM registered; B registered too when `registerOnB`; `settingsA` for A's daemon. */
export async function hostPair(o: { registerOnB?: boolean; settingsA?: Partial<DaemonConfig> } = {}): Promise<Pair> {
  const clock = new FakeClock();
  const net = new FakeNetwork(clock);
  const a = await startHost(net, clock, 'A', '192.0.2.10', o.settingsA);
  const b = await startHost(net, clock, 'B', '192.0.2.20');
  put(a, vmFlows());
  await a.engine.register(vm);
  if (o.registerOnB) await b.engine.register(vm);
  return { clock, net, a, b };
}

export async function stopPair(p: Pair | undefined): Promise<void> {
  await p?.a.engine.stop();
  await p?.b.engine.stop();
}
