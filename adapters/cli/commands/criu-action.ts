import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { DependencyContainer } from 'tsyringe';
import { Address, AddressError, parseAddress } from '../../../plugin/address';
import { CONTAINER_ID } from '../../../plugin/checkpoint-manifest';
import type { CriuAction, CriuStep } from '../../../plugin/criu-action';
import { ContainerDropsPort, DEFAULT_DROP_EXPIRY_S } from '../../../plugin/ports/container-drops-port';
import { ManagerClient } from '../../../plugin/ports/manager-client';
import { processStart } from '../../criu/restore-watch';
import { Command, CommandIo } from '../command';
import { parseOptions } from '../parse-options';
import { kernelTableCapacity } from '../table-sizing';
import { CommandError, UsageError } from '../usage-error';
import { providePort, resolvePort } from '../../../plugin/ports/port-token';

const HELP = `Usage: ctmigratectl criu-action

CRIU's action script: carries a container's host conntrack entries (its
published ports' DNAT, its masqueraded egress, every flow the host's
stateful firewall tracks for it) inside the checkpoint. CRIU runs it once
per step, with the step in CRTOOLS_SCRIPT_ACTION; it takes no arguments.

Hook it in with one line in /etc/criu/default.conf (criu run directly, LXC),
or /etc/criu/runc.conf (runc, and Podman or Docker through runc or crun):
  action-script /usr/lib/ctmigrate/criu-action

What each step does (host network namespace, as root):
  network-lock    source: the container is frozen; the host's entries of its
                  addresses (read from its network namespace through
                  CRTOOLS_INIT_PID) are written to ctmigrate.json and
                  ctmigrate.ctm in the image directory (CRTOOLS_IMAGE_DIR)
  post-dump       source: those entries are removed from this host; the
                  checkpoint holds them
  pre-restore     destination: the container's addresses (from
                  ctmigrate.json) are dropped by nftables (table inet
                  ctmigrate_containers) until network-unlock
  network-unlock  destination: the entries are imported, confined to the
                  addresses the restored container has, then the drop is
                  lifted; after a dump that left the container running
                  (--leave-running, or a failed dump) the entries come back
  other steps     nothing

A restore that dies before network-unlock: a watcher process started at
pre-restore lifts the drop as soon as CRIU exits; the kernel also expires
each dropped address after CTMIGRATE_CRIU_DROP_EXPIRY seconds (default
${DEFAULT_DROP_EXPIRY_S}). A checkpoint without ctmigrate.json restores as if
ctmigrate were not there. A damaged ctmigrate.json or ctmigrate.ctm stops
the restore at pre-restore with nothing changed; delete both files to
restore without connection state.

Environment:
  CRTOOLS_SCRIPT_ACTION, CRTOOLS_IMAGE_DIR, CRTOOLS_INIT_PID   set by CRIU
  CTMIGRATE_CONTAINER          the container's id, when its cgroup does not
                               name it (Podman, Docker, CRI-O, containerd,
                               runc and LXC cgroups do); at a restore whose
                               image directory has no ctmigrate files
                               (images streamed), the container whose state
                               a peer sent this host's daemon
  CTMIGRATE_CRIU_DROP_EXPIRY   seconds a destination's drop may last (1-86400)
  CTMIGRATE_DESTINATION        at the dump: ADDR:PORT of the destination's
                               ctmigrated; network-lock also sends the state
                               there, through this host's daemon (peer
                               channel, its key and relays); the checkpoint
                               carries it regardless

Exit status: 0 done (or nothing to do), 1 the step failed (CRIU then aborts
the dump or restore where it can), 2 not run by CRIU.
`;

/** How often the watcher started at pre-restore looks at the process it follows. */
const WATCH_INTERVAL_MS = 200;
/** Every how many looks it also reads the drop (once a second). */
const DROP_CHECK_TICKS = 5;
/** Reads of the drop in a row that failed before the watcher gives up (5 s). */
const MAX_WATCH_FAILURES = 5;

async function run(args: string[], container: DependencyContainer, io: CommandIo): Promise<number> {
  const { values, positionals } = parseOptions(
    args,
    {
      watch: { type: 'string' },
      address: { type: 'string', multiple: true },
      'criu-pid': { type: 'string' },
      deadline: { type: 'string' },
    },
    true,
  );
  if (positionals.length) throw new UsageError(`criu-action takes no arguments, got ${JSON.stringify(positionals[0])}`);
  // One bus client for the whole step, closed at its end (an open bus connection would keep the process up).
  const daemon = resolvePort(container, ManagerClient);
  providePort(container, ManagerClient, { useValue: daemon });
  try {
    // The domain's module, loaded for the step: the container is frozen while this runs.
    const { CriuAction } = await import('../../../plugin/criu-action');
    const action = container.resolve(CriuAction);
    if (values.watch !== undefined) return await watch(action, container, values, io);
    return await step(action, io);
  } finally {
    await daemon.close().catch(() => undefined);
  }
}

async function step(action: CriuAction, io: CommandIo): Promise<number> {
  const name = process.env.CRTOOLS_SCRIPT_ACTION;
  if (!name) throw new UsageError('CRTOOLS_SCRIPT_ACTION is not set: criu-action is the program CRIU runs as its action script');
  const step: CriuStep = {
    action: name,
    imageDir: process.env.CRTOOLS_IMAGE_DIR || null,
    initPid: pidFrom(process.env.CRTOOLS_INIT_PID, 'CRTOOLS_INIT_PID'),
    criuPid: process.ppid,
    container: process.env.CTMIGRATE_CONTAINER || null,
    destination: process.env.CTMIGRATE_DESTINATION || null,
  };
  const expiry = process.env.CTMIGRATE_CRIU_DROP_EXPIRY;
  let dropExpiryS = DEFAULT_DROP_EXPIRY_S;
  if (expiry !== undefined && expiry !== '') {
    if (!/^[0-9]{1,5}$/.test(expiry) || Number(expiry) < 1 || Number(expiry) > 86400)
      throw new UsageError(`CTMIGRATE_CRIU_DROP_EXPIRY must be 1 to 86400 seconds, not ${JSON.stringify(expiry)}`);
    dropExpiryS = Number(expiry);
  }
  try {
    const done = await action.run(step, { tableCapacity: kernelTableCapacity(), dropExpiryS, host: hostname() });
    io.stderr.write(`ctmigrate criu-action: ${done.action}${done.container ? `: container ${done.container}` : ''}: ${done.summary}\n`);
    return 0;
  } catch (e) {
    // A CriuStepError's message and any other failure's alike: one line naming the step.
    throw new CommandError(`${name}: ${(e as Error).message}`);
  }
}

/** The watcher (started by pre-restore): CRIU exits, or the deadline passes, with the drop still in: lift it. */
async function watch(
  action: CriuAction,
  container: DependencyContainer,
  values: { watch?: string; address?: string[]; 'criu-pid'?: string; deadline?: string },
  io: CommandIo,
): Promise<number> {
  const id = values.watch as string;
  if (!CONTAINER_ID.test(id)) throw new UsageError(`--watch: ${JSON.stringify(id)} is not a container id`);
  const criuPid = pidFrom(values['criu-pid'], '--criu-pid');
  if (criuPid === null) throw new UsageError('--watch needs --criu-pid');
  const deadline = Number(values.deadline);
  if (!Number.isSafeInteger(deadline)) throw new UsageError('--watch needs --deadline MS');
  const addresses: Address[] = [];
  for (const a of values.address ?? []) {
    try {
      addresses.push(parseAddress(a));
    } catch (e) {
      if (e instanceof AddressError) throw new UsageError(`--address: ${e.message}`);
      throw e;
    }
  }
  if (addresses.length === 0) throw new UsageError('--watch needs --address');
  const drops = resolvePort(container, ContainerDropsPort);
  const read = (p: string): string => readFileSync(p, 'utf8');
  const started = processStart(criuPid, read);
  let failures = 0;
  for (let tick = 0; ; tick++) {
    const gone = started === null || processStart(criuPid, read) !== started;
    const late = Date.now() >= deadline;
    if (gone || late) {
      const why = gone ? `process ${criuPid} (CRIU, or the restored init) exited` : 'the drop reached its deadline';
      const lifted = await action.abandon(id, addresses, why);
      if (lifted) io.stderr.write(`ctmigrate criu-action: container ${id}: ${why} before network-unlock; the drop is lifted, nothing was imported\n`);
      return 0;
    }
    // The process is read every tick (a file read); the drop only every few (an nft run), to see network-unlock lift it.
    if (tick % DROP_CHECK_TICKS === 0) {
      try {
        if (!(await drops.blocked(id, addresses))) return 0;
        failures = 0;
      } catch (e) {
        // nft keeps failing (the namespace is gone, nft removed): nothing this watcher could lift; the kernel's expiry stays.
        if (++failures >= MAX_WATCH_FAILURES) {
          io.stderr.write(`ctmigrate criu-action: container ${id}: cannot read the drop (${(e as Error).message}); the watcher ends, the drop expires by itself\n`);
          return 1;
        }
      }
    }
    await sleep(WATCH_INTERVAL_MS);
  }
}

function pidFrom(text: string | undefined, what: string): number | null {
  if (text === undefined || text === '') return null;
  if (!/^[0-9]{1,10}$/.test(text) || Number(text) < 1) throw new UsageError(`${what} must be a process id, not ${JSON.stringify(text)}`);
  return Number(text);
}

export const criuActionCommand: Command = {
  name: 'criu-action',
  summary: 'CRIU action script: carry a container\'s host conntrack entries in its checkpoint',
  help: HELP,
  run,
};
