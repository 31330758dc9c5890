#!/usr/bin/env node
import 'reflect-metadata';
import { mkdirSync } from 'node:fs';
import { ensureConntrackEvents } from '../conntrack/event-sysctl';
import { MetricsServer, serveMetrics } from '../metrics/metrics-server';
import { MigrationDaemon } from '../../plugin/migration-service';
import { formatPeerAddress } from '../../plugin/ports/peer-port';
import { Log } from '../../plugin/ports/log-port';
import { warmUpCodec } from '../../plugin/warm-up';
import { CommandIo } from './command';
import { buildControlService, buildDaemonContainer } from './composition-root';
import { DAEMON_HELP, daemonConfig } from './daemon-options';
import { relayConfig } from './relay-options';
import { PeerRelay } from '../peer/relay';
import { packageVersion } from './package-info';
import { runMain } from './run-main';
import { StderrLog } from './stderr-log';
import { CommandError } from './usage-error';
import { resolvePort } from '../../plugin/ports/port-token';

/** A stop (SIGTERM, SIGINT) ends the process within 5 s whatever hangs; this leaves room to exit. */
const STOP_DEADLINE_MS = 4500;

async function main(argv: string[], io: CommandIo): Promise<number> {
  if (argv.includes('-h') || argv.includes('--help')) {
    io.stdout.write(DAEMON_HELP);
    return 0;
  }
  if (argv.includes('-V') || argv.includes('--version')) {
    io.stdout.write(`ctmigrated ${packageVersion()}\n`);
    return 0;
  }
  if (argv.includes('--relay')) return runRelay(argv);
  const config = daemonConfig(argv);
  try {
    mkdirSync(config.runDir, { recursive: true, mode: 0o700 });
  } catch (e) {
    throw new CommandError(`cannot create run dir ${config.runDir}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  let built;
  try {
    built = buildDaemonContainer(config);
  } catch (e) {
    throw new CommandError((e as Error).message);
  }
  const { c, peers, metrics } = built;
  const log = resolvePort(c, Log);
  try {
    const ev = ensureConntrackEvents();
    if (ev.changed) log.info('conntrack events enabled for every new entry', { sysctl: 'net.netfilter.nf_conntrack_events', was: ev.before });
  } catch (e) {
    log.warn(`${(e as Error).message}; entries created while no migration listens may not report changes`);
  }
  const engine = resolvePort(c, MigrationDaemon);
  // First of all: a previous run that crashed may have left a VM blocked.
  const t0 = Date.now();
  const recovered = await engine.recover();
  if (recovered.lifted.length + recovered.removed + recovered.kept.length > 0) {
    log.warn('recovered after an unclean stop', {
      drops: recovered.lifted.length,
      liftedMs: recovered.liftedMs,
      entries: recovered.removed,
      kept: recovered.kept.length,
      ms: Date.now() - t0,
    });
  }
  // Before any session: the first migration should not run the codec in V8's slow tiers.
  warmUpCodec();

  let metricsServer: MetricsServer | undefined;
  if (metrics && config.metrics) {
    metrics.watch(engine);
    try {
      metricsServer = await serveMetrics(config.metrics, metrics);
    } catch (e) {
      throw new CommandError((e as Error).message);
    }
    log.info('serving metrics', { url: `http://${formatPeerAddress(metricsServer.address)}/metrics` });
  }

  const restored = await engine.restore();
  if (restored > 0) log.info('VMs registered again from the run dir', { vms: restored });
  if (peers.enabled) {
    try {
      await engine.start();
    } catch (e) {
      throw new CommandError(`cannot listen for peers: ${(e as Error).message}`);
    }
  } else {
    log.warn(peers.why);
  }

  let stopping = false;
  const stop = async (why: string, code: number): Promise<void> => {
    if (stopping) return;
    stopping = true;
    log.info(`stopping: ${why}`);
    // systemd waits 90 s by default and libvirt's hooks wait for us: a stop
    // that hangs (a kernel or nft call that never returns) must not. What
    // is left undone then, the next start finishes from the journal.
    const late = setTimeout(() => {
      log.error(`stop took longer than ${STOP_DEADLINE_MS / 1000} s; exiting now, the next start rolls back what is left`);
      process.exit(code);
    }, STOP_DEADLINE_MS);
    await service.stop().catch(() => undefined);
    await engine.stop().catch((e: Error) => log.error(`stop: ${e.message}`));
    await metricsServer?.close();
    clearTimeout(late);
    log.info('stopped: every session rolled back', { exit: code });
    process.exit(code);
  };
  const service = buildControlService(c, {
    version: packageVersion(),
    onDisconnect: (e) => void stop(`lost the system bus: ${e.message}`, 1),
  });
  try {
    await service.start();
  } catch (e) {
    await engine.stop().catch(() => undefined);
    throw new CommandError((e as Error).message);
  }
  log.info('ctmigrated ready', { version: packageVersion(), peers: config.peers.length, runDir: config.runDir });
  process.on('SIGTERM', () => void stop('SIGTERM', 0));
  process.on('SIGINT', () => void stop('SIGINT', 0));
  // Runs until a signal; the bus connection and the listener keep the loop alive.
  return new Promise<number>(() => undefined);
}

/**
 * `ctmigrated --relay`: forward peer connections to the allowed targets and
 * nothing else. It needs no bus, no kernel access and no key: the peers'
 * TLS runs end to end through it.
 */
async function runRelay(argv: string[]): Promise<number> {
  const config = relayConfig(argv);
  const log = new StderrLog();
  const relay = new PeerRelay({ listen: config.listen, allow: config.allow, onRefuse: (reason, from) => log.warn(`refused ${from}: ${reason}`) });
  try {
    await relay.start();
  } catch (e) {
    throw new CommandError(`cannot listen on ${formatPeerAddress(config.listen)}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  log.info('ctmigrated relay ready', { version: packageVersion(), listen: formatPeerAddress(relay.address), allow: config.allow.map(formatPeerAddress).join(' ') });
  const stop = (why: string): void => {
    log.info(`stopping: ${why}`, { connections: relay.stats.connections, relayed: relay.stats.relayed, refused: relay.stats.refused });
    void relay.close().finally(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  return new Promise<number>(() => undefined);
}

runMain('ctmigrated', main);
