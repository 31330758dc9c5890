#!/usr/bin/env node
import 'reflect-metadata';
import { CommandIo } from './command';
import { packageVersion } from './package-info';
import { runMain } from './run-main';
import { CommandError } from './usage-error';

const HELP = `Usage: ctmigrated [--config FILE] [--listen ADDR:PORT] [--peer ADDR:PORT]...
                  [--psk-file FILE | --tls-cert F --tls-key F --tls-ca F]
                  [--run-dir DIR] [--ready-when complete|precopy|fraction:F]
                  [--block-timeout SECONDS]

The ctmigrate daemon: tracks registered VMs' conntrack entries and carries
them to the destination host during live migration.

This build ships the kernel layer only (ctmigratectl dump/load); the daemon
itself is not part of this release yet, and starting it fails with a message
saying so.

Options:
  -h, --help     show this help
  -V, --version  print the version
`;

async function main(argv: string[], io: CommandIo): Promise<number> {
  if (argv.includes('-h') || argv.includes('--help')) {
    io.stdout.write(HELP);
    return 0;
  }
  if (argv.includes('-V') || argv.includes('--version')) {
    io.stdout.write(`ctmigrated ${packageVersion()}\n`);
    return 0;
  }
  throw new CommandError('the migration daemon is not part of this build yet; use ctmigratectl dump/load');
}

runMain('ctmigrated', main);
