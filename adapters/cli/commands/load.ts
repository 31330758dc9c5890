import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { DependencyContainer } from 'tsyringe';
import { CodecError } from '../../../plugin/codec-error';
import { ConntrackPort, WriteReport } from '../../../plugin/ports/conntrack-port';
import { readSnapshot } from '../../../plugin/snapshot-reader';
import { Command, CommandIo } from '../command';
import { parseOptions } from '../parse-options';
import { kernelTableCapacity } from '../table-sizing';
import { CommandError, UsageError } from '../usage-error';
import { resolvePort } from '../../../plugin/ports/port-token';

const HELP = `Usage: ctmigratectl load [--input FILE]

Create the entries of a snapshot (binary or JSON lines, detected) in this
network namespace's conntrack table. The whole input is validated first: a
malformed, truncated or corrupt input changes nothing and exits 1. Then every
entry is created; an existing entry with the same original tuple and zone is
replaced. Masters are created before the entries related to them. TCP
entries are created with the "be liberal" flag, because window positions
cannot be carried between hosts.

Options:
  -i, --input FILE   read FILE (default: standard input; "-" also means stdin)
  -h, --help         show this help

Output: one summary line on stdout,
  created N, replaced N, failed N
and, before it, one line on stderr for each entry the kernel refused, with
the reason. Exit status: 0 all entries in place, 1 any entry failed or the
input was refused, 2 bad arguments.

Example:
  ip netns exec dest ctmigratectl load --input vm1.ctm
`;

async function run(args: string[], container: DependencyContainer, io: CommandIo): Promise<number> {
  const { values, positionals } = parseOptions(args, { input: { type: 'string', short: 'i' } }, true);
  if (positionals.length) throw new UsageError(`load takes no arguments, got ${JSON.stringify(positionals[0])} (use --input FILE)`);
  const path = values.input && values.input !== '-' ? values.input : null;
  const name = path ?? 'standard input';
  if (path) {
    try {
      const st = await stat(path);
      if (!st.isFile()) throw new CommandError(`${path} is not a regular file`);
    } catch (e) {
      if (e instanceof CommandError) throw e;
      throw new CommandError(`cannot read ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
  } else if (io.stdin.isTTY) {
    throw new UsageError('refusing to read a snapshot from a terminal; use --input FILE or a pipe');
  }

  const started = Date.now();
  const source = path ? createReadStream(path, { highWaterMark: 1 << 20 }) : io.stdin;
  let decoded;
  try {
    decoded = await readSnapshot(source as AsyncIterable<Uint8Array>, { maxEntries: kernelTableCapacity() });
  } catch (e) {
    if (e instanceof CodecError) throw new CommandError(`${name}: ${e.message}; nothing loaded`);
    throw new CommandError(`cannot read ${name}: ${(e as Error).message}; nothing loaded`);
  }
  if (decoded.tombstones > 0 && decoded.live === 0 && decoded.entries > 0) {
    io.stderr.write(`${name}: holds only deletions (a delta); nothing to create\n`);
  }

  const port = resolvePort(container, ConntrackPort);
  const progress = io.stderr.isTTY
    ? (done: number, total: number): void => {
        io.stderr.write(`\rloading ${done}/${total}`);
      }
    : undefined;
  let report: WriteReport;
  try {
    report = await port.create({ table: decoded.table }, progress);
  } finally {
    if (progress) io.stderr.write('\r\x1b[K');
  }
  for (const f of report.failures) io.stderr.write(`failed: ${f.flow}: ${f.reason} (${f.code})\n`);
  const ms = Date.now() - started;
  io.stdout.write(`created ${report.created}, replaced ${report.replaced}, failed ${report.failures.length}\n`);
  if (process.env.CTMIGRATE_VERBOSE) io.stderr.write(`loaded ${decoded.live} entries from ${name} in ${ms} ms\n`);
  return report.failures.length === 0 ? 0 : 1;
}

export const loadCommand: Command = {
  name: 'load',
  summary: 'create the entries of a snapshot file (validated first; replaces same-tuple entries)',
  help: HELP,
  run,
};
