import { DependencyContainer } from 'tsyringe';
import { ConntrackPort } from '../../../plugin/ports/conntrack-port';
import { ManagerClient } from '../../../plugin/ports/manager-client';
import { Command, CommandIo } from '../command';
import { DEFAULT_HOOK_PATH } from '../hook-path';
import type { CheckResult } from '../host-checks';
import { UsageError } from '../usage-error';
import { resolvePort } from '../../../plugin/ports/port-token';

/** Pull `--hook FILE` out; the rest are the daemon's own flags. */
function splitHookOption(args: string[]): { hook: string; rest: string[] } {
  const rest: string[] = [];
  let hook = DEFAULT_HOOK_PATH;
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === '--hook') {
      if (args[i + 1] === undefined) throw new UsageError('--hook needs a FILE');
      hook = args[++i];
    } else if (a.startsWith('--hook=')) hook = a.slice(7);
    else rest.push(a);
  }
  return { hook, rest };
}

export function formatCheck(r: CheckResult): string {
  return `${r.ok ? 'OK  ' : 'FAIL'} ${r.item}: ${r.detail}${!r.ok && r.fix ? ` — fix: ${r.fix}` : ''}`;
}

export const checkCommand: Command = {
  name: 'check',
  summary: 'diagnose this host: kernel, nft, bus and daemon, keys, peers, libvirt hook',
  help: `Usage: ctmigratectl check [--hook FILE] [--config FILE] [ctmigrated's other flags]

Look at everything ctmigrate needs on this host and print one line per
item, OK or FAIL, with what to do about each failure:
  conntrack          the kernel's conntrack table answers a ctnetlink dump
  conntrack events   net.netfilter.nf_conntrack_events is 1
  nftables           nft runs and reads the ruleset
  ctmigrated         the system bus answers and ctmigrated owns org.ctmigrate1
  peer credentials   the key or certificates of the daemon's configuration
  peers              each configured peer accepts a connection
  libvirt hook       ${DEFAULT_HOOK_PATH} is installed, executable, runs
  libvirt            libvirtd/virtqemud runs and started after the hook
  VM NAME            each running domain with ctmigrate metadata: registered with
                     ctmigrated, and the path its next migration takes (vmstate,
                     vmstate-hot, event; see ctmigrated --hot-attach)
The configuration is read as ctmigrated reads it (/etc/ctmigrate/ctmigrate.conf,
or --config, and flags). --hook checks another hook path. Run as root.
Exit status: 0 everything OK, 1 something failed, 2 bad arguments.
`,
  async run(args: string[], c: DependencyContainer, io: CommandIo): Promise<number> {
    const { hook, rest } = splitHookOption(args);
    // Loaded here, not at start: every other command would pay for the checks' modules.
    const [{ daemonConfig }, { systemBusAddress }, checks] = await Promise.all([import('../daemon-options'), import('../../dbus/bus-connection'), import('../host-checks')]);
    const { checkConntrack, checkCredentials, checkDaemon, checkEvents, checkHook, checkLibvirt, checkNft, checkPeers, checkVmPaths } = checks;
    const config = daemonConfig(rest);
    const client = resolvePort(c, ManagerClient);
    const results: CheckResult[] = [];
    const show = (r: CheckResult): void => {
      results.push(r);
      io.stdout.write(`${formatCheck(r)}\n`);
    };
    try {
      show(await checkConntrack(resolvePort(c, ConntrackPort)));
      show(checkEvents());
      show(await checkNft());
      show(await checkDaemon(client, systemBusAddress()));
      show(checkCredentials(config));
      for (const r of await checkPeers(config)) show(r);
      show(await checkHook(hook));
      show(checkLibvirt(hook));
      for (const r of await checkVmPaths(config, client)) show(r);
    } finally {
      await client.close().catch(() => undefined);
    }
    return results.every((r) => r.ok) ? 0 : 1;
  },
};
