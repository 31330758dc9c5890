#!/usr/bin/env node
import 'reflect-metadata';
import { Command, CommandIo } from './command';
import {
  abortCommand,
  cutoverCommand,
  finishCommand,
  prepareIncomingCommand,
  registerCommand,
  sessionsCommand,
  statusCommand,
  vmstateArgsCommand,
  watchCommand,
} from './commands/daemon-commands';
import { checkCommand } from './commands/check';
import { criuActionCommand } from './commands/criu-action';
import { dumpCommand } from './commands/dump';
import { enableVmCommand } from './commands/enable-vm';
import { loadCommand } from './commands/load';
import { buildContainer } from './composition-root';
import { packageVersion } from './package-info';
import { runMain } from './run-main';

const KERNEL_COMMANDS: Command[] = [dumpCommand, loadCommand];
const DAEMON_COMMANDS: Command[] = [
  registerCommand,
  prepareIncomingCommand,
  cutoverCommand,
  finishCommand,
  abortCommand,
  statusCommand,
  sessionsCommand,
  watchCommand,
  vmstateArgsCommand,
];
const HOST_COMMANDS: Command[] = [enableVmCommand, checkCommand];
const CONTAINER_COMMANDS: Command[] = [criuActionCommand];
const COMMANDS: Command[] = [...KERNEL_COMMANDS, ...DAEMON_COMMANDS, ...HOST_COMMANDS, ...CONTAINER_COMMANDS];
const list = (cs: Command[]): string => cs.map((c) => `  ${c.name.padEnd(17)} ${c.summary}`).join('\n');

const HELP = `Usage: ctmigratectl COMMAND [OPTIONS]

Control ctmigrate and move conntrack entries between hosts.

Kernel-direct commands (act on the conntrack table of the network namespace
they run in; no daemon needed; run as root):
${list(KERNEL_COMMANDS)}

Daemon commands (talk to the local ctmigrated over the system bus):
${list(DAEMON_COMMANDS)}

Host set-up (libvirt domains through virsh; diagnosis):
${list(HOST_COMMANDS)}

Containers (run by CRIU, never by hand):
${list(CONTAINER_COMMANDS)}

Options:
  -h, --help     show this help (or COMMAND --help for a command's)
  -V, --version  print the version

Exit status: 0 success, 1 the work failed (input, kernel), 2 bad arguments.
`;

async function main(argv: string[], io: CommandIo): Promise<number> {
  const [first, ...rest] = argv;
  if (first === undefined || first === '-h' || first === '--help' || first === 'help') {
    io.stdout.write(HELP);
    return first === undefined ? 2 : 0;
  }
  if (first === '-V' || first === '--version') {
    io.stdout.write(`ctmigratectl ${packageVersion()}\n`);
    return 0;
  }
  const command = COMMANDS.find((c) => c.name === first);
  if (!command) {
    io.stderr.write(`ctmigratectl: unknown command ${JSON.stringify(first)} (try ctmigratectl --help)\n`);
    return 2;
  }
  if (rest.includes('-h') || rest.includes('--help')) {
    io.stdout.write(command.help);
    return 0;
  }
  return command.run(rest, buildContainer(), io);
}

runMain('ctmigratectl', main);
