import 'reflect-metadata';
import { hostname } from 'node:os';
import { container, DependencyContainer } from 'tsyringe';
import { ConntrackNetlink } from '../conntrack/conntrack-netlink';
import { NetlinkFeed } from '../conntrack/netlink-feed';
import { DomainEventsPort } from '../../plugin/ports/domain-events-port';
import { VmstateObjectPort } from '../../plugin/ports/vmstate-object-port';
import { HostAddressesPort } from '../../plugin/ports/host-addresses-port';
import { HostVmsPort } from '../../plugin/ports/host-vms-port';
import { JournalStore } from '../../plugin/ports/journal-store';
import { DaemonConfig, DaemonConfigToken } from '../../plugin/daemon-config';
import type { DaemonMetrics } from '../metrics/daemon-metrics';
import { MigrationDaemon, MigrationService } from '../../plugin/migration-service';
import { BlockerPort } from '../../plugin/ports/blocker-port';
import { Clock, systemClock } from '../../plugin/ports/clock';
import { ConnectionFeed } from '../../plugin/ports/connection-feed';
import { ConntrackPort } from '../../plugin/ports/conntrack-port';
import { Log } from '../../plugin/ports/log-port';
import { ManagerClient } from '../../plugin/ports/manager-client';
import { PeerPort } from '../../plugin/ports/peer-port';
import { RegistryStore } from '../../plugin/ports/registry-store';
import { VmStatePort } from '../../plugin/ports/vmstate-port';
import { StderrLog } from './stderr-log';
import { CheckpointStore } from '../../plugin/ports/checkpoint-store';
import { ContainerDropsPort } from '../../plugin/ports/container-drops-port';
import { ContainerNetworkPort } from '../../plugin/ports/container-network-port';
import { RestoreWatchPort } from '../../plugin/ports/restore-watch-port';
import { ImageDirStore } from '../criu/image-dir-store';
import { DetachedRestoreWatch } from '../criu/restore-watch';
import { ProcContainerNetwork } from '../host/container-network';
import { InterfaceAddresses } from '../host/interface-addresses';
import { NftContainerDrops } from '../nftables/container-drops';
import { providePort, resolvePort } from '../../plugin/ports/port-token';

/*
 * Each entry point loads only the adapters it uses: a ctmigratectl command
 * starts in about 100 ms, and half of that was loading the daemon's
 * adapters (dbus-next, prom-client, the nft and TLS stacks) that a dump, a
 * load or a CRIU step (run with the container frozen) never touches. So the
 * factories below load their module when first resolved, and
 * buildDaemonContainer loads the daemon's set when it runs.
 */
/* eslint-disable @typescript-eslint/no-require-imports -- deferred loading, see above; each require is typed by its module */
const adapters = {
  managerClient: () => require('../dbus/dbus-manager-client') as typeof import('../dbus/dbus-manager-client'),
  virsh: () => require('../libvirt/virsh') as typeof import('../libvirt/virsh'),
  daemon: () => ({
    ...(require('../nftables/nftables-blocker') as typeof import('../nftables/nftables-blocker')),
    ...(require('../peer/tls-credentials') as typeof import('../peer/tls-credentials')),
    ...(require('../peer/tls-peer-port') as typeof import('../peer/tls-peer-port')),
    ...(require('../peer/unconfigured-peer-port') as typeof import('../peer/unconfigured-peer-port')),
    ...(require('../registry/file-registry-store') as typeof import('../registry/file-registry-store')),
    ...(require('../registry/file-journal-store') as typeof import('../registry/file-journal-store')),
    ...(require('../libvirt/libvirt-host-vms') as typeof import('../libvirt/libvirt-host-vms')),
    ...(require('../libvirt/domain-events') as typeof import('../libvirt/domain-events')),
    ...(require('../libvirt/qemu-vmstate-objects') as typeof import('../libvirt/qemu-vmstate-objects')),
    ...(require('../metrics/daemon-metrics') as typeof import('../metrics/daemon-metrics')),
    ...(require('../dbus/dbus-service') as typeof import('../dbus/dbus-service')),
    ...(require('../dbus/dbus-vmstate-port') as typeof import('../dbus/dbus-vmstate-port')),
    ...(require('../../plugin/migration-engine') as typeof import('../../plugin/migration-engine')),
  }),
};
/* eslint-enable @typescript-eslint/no-require-imports */

/** Where the restore watcher (criu-action --watch) writes its few lines. */
const CRIU_WATCH_LOG = '/run/ctmigrate/criu-watch.log';

/**
 * The composition root: the one place that knows every adapter and binds
 * each to its port. Tests build a child container and override ports.
 */
export function buildContainer(parent: DependencyContainer = container): DependencyContainer {
  const c = parent.createChildContainer();
  providePort(c, ConntrackPort, { useFactory: () => new ConntrackNetlink() });
  providePort(c, ConnectionFeed, { useFactory: () => new NetlinkFeed() });
  providePort(c, ManagerClient, { useFactory: () => new (adapters.managerClient().DbusManagerClient)() });
  // criu-action (containers): each step is a process of its own.
  providePort(c, Log, { useFactory: () => new StderrLog() });
  providePort(c, Clock, { useValue: systemClock });
  providePort(c, CheckpointStore, { useFactory: () => new ImageDirStore() });
  providePort(c, ContainerNetworkPort, { useFactory: () => new ProcContainerNetwork() });
  providePort(c, ContainerDropsPort, { useFactory: () => new NftContainerDrops() });
  providePort(c, HostAddressesPort, { useFactory: () => new InterfaceAddresses() });
  providePort(c, RestoreWatchPort, { useFactory: () => new DetachedRestoreWatch(process.execPath, process.argv[1] ?? '', CRIU_WATCH_LOG) });
  return c;
}

/** The libvirt client the host-side commands (enable-vm, check) use, for this connection URI. */
export function virshFor(uri?: string): import('../libvirt/virsh').Virsh {
  return new (adapters.virsh().Virsh)(uri);
}

/** Whether the daemon can talk to peers, and if not, why. */
export interface PeerSetup {
  enabled: boolean;
  why: string;
}

/** Everything the daemon runs on, for this configuration (metrics: when `config.metrics` asks for them). */
export function buildDaemonContainer(
  config: DaemonConfig,
  parent: DependencyContainer = container,
): { c: DependencyContainer; peers: PeerSetup; metrics?: DaemonMetrics } {
  const c = buildContainer(parent);
  const {
    DbusVmStatePort,
    DaemonMetrics,
    NftablesBlocker,
    FileRegistryStore,
    FileJournalStore,
    LibvirtHostVms,
    QemuVmstateObjects,
    LibvirtDomainEvents,
    loadCredentials,
    CredentialError,
    TlsPeerPort,
    UnconfiguredPeerPort,
    MigrationEngine,
  } = adapters.daemon();
  const log = new StderrLog();
  const vmstate = new DbusVmStatePort(config.runDir, log);
  const metrics = config.metrics ? new DaemonMetrics() : undefined;
  // The daemon decodes snapshot parts while the previous part goes into the kernel on a thread of its own.
  providePort(c, ConntrackPort, { useFactory: () => new ConntrackNetlink({ writerThread: true }) });
  providePort(c, Log, { useValue: log });
  providePort(c, Clock, { useValue: systemClock });
  providePort(c, DaemonConfigToken, { useValue: config });
  providePort(c, BlockerPort, { useValue: new NftablesBlocker() });
  providePort(c, VmStatePort, { useValue: metrics ? metrics.timeVmState(vmstate) : vmstate });
  if (metrics) providePort(c, ConnectionFeed, { useValue: metrics.meterFeed(new NetlinkFeed()) });
  providePort(c, RegistryStore, { useValue: new FileRegistryStore(config.runDir) });
  providePort(c, JournalStore, { useValue: new FileJournalStore(config.runDir) });
  const virsh = virshFor(config.libvirtUri);
  providePort(c, HostVmsPort, { useValue: new LibvirtHostVms(virsh) });
  providePort(c, VmstateObjectPort, { useValue: new QemuVmstateObjects(virsh) });
  providePort(c, DomainEventsPort, { useValue: new LibvirtDomainEvents(config.libvirtUri, virsh, log) });
  let peers: PeerSetup;
  const files = { pskFile: config.pskFile, tlsCert: config.tlsCert, tlsKey: config.tlsKey, tlsCa: config.tlsCa };
  const given = Object.values(files).some((f) => f !== undefined);
  try {
    const credentials = loadCredentials(files);
    const allowedIdentities = [...config.tlsAllow, ...config.peers.map((p) => p.host)];
    if (credentials.kind === 'certificate' && allowedIdentities.length === 0)
      throw new CredentialError(
        'mutual TLS needs to know which peers to let in, not any certificate the CA signed: give --peer ADDR:PORT for each host this one migrates with, or --tls-allow NAME for their certificate names',
      );
    const port = new TlsPeerPort({ credentials, hostId: hostname(), allowedIdentities });
    providePort(c, PeerPort, { useValue: metrics ? metrics.meterPeers(port) : port });
    peers = { enabled: true, why: '' };
  } catch (e) {
    // Credentials that were asked for and cannot be used stop the daemon;
    // none at all (and no libvirt PKI) is the single-host default.
    if (given) throw e;
    const why = `peer channel disabled: ${(e as Error).message}`;
    providePort(c, PeerPort, { useValue: new UnconfiguredPeerPort(why) });
    peers = { enabled: false, why };
  }
  c.registerSingleton<MigrationDaemon>(MigrationDaemon, MigrationEngine);
  providePort(c, MigrationService, { useToken: MigrationDaemon });
  return { c, peers, metrics };
}

/** The daemon's face on the system bus (org.ctmigrate1), over the container's service. */
export function buildControlService(
  c: DependencyContainer,
  options: { version: string; onDisconnect: (e: Error) => void },
): { start(): Promise<void>; stop(): Promise<void> } {
  const vmstate = resolvePort(c, VmStatePort);
  const { DbusService } = adapters.daemon();
  return new DbusService(resolvePort(c, MigrationService), {
    version: options.version,
    objectArgs: (uuid) => vmstate.objectArgs(uuid),
    log: resolvePort(c, Log),
    onDisconnect: options.onDisconnect,
  });
}
