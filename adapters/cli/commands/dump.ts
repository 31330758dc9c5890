import { createWriteStream } from 'node:fs';
import { once } from 'node:events';
import { DependencyContainer } from 'tsyringe';
import { ConnectionTable, Scan } from '../../../plugin/connection-table';
import { encodeJsonLines } from '../../../plugin/flow-json';
import { ConnectionFeed } from '../../../plugin/ports/connection-feed';
import { encodeTable, writableSink } from '../../../plugin/snapshot-encoder';
import { Command, CommandIo } from '../command';
import { parseFilter } from '../flow-options';
import { parseOptions } from '../parse-options';
import { kernelTableCapacity } from '../table-sizing';
import { CommandError, UsageError } from '../usage-error';
import { resolvePort } from '../../../plugin/ports/port-token';

const HELP = `Usage: ctmigratectl dump [--address IP]... [--zone N] [--mark VALUE[/MASK]]
                         [--output FILE] [--format binary|json]

Write the conntrack entries of this network namespace that match the filter.
An entry matches an address when any address of its original or reply tuple
equals it (IPv4 and IPv6). Without --address every entry matches.

Options:
  -a, --address IP        keep entries involving IP (repeatable)
  -z, --zone N            keep entries in conntrack zone N (0-65535)
  -m, --mark V[/M]        keep entries whose mark & M equals V (decimal or 0x hex)
  -o, --output FILE       write to FILE instead of stdout (replaced atomically
                          only on success: a failed dump leaves no partial FILE)
  -f, --format FORMAT     binary (default): ctmigrate's versioned, checksummed
                          snapshot format, the same as on the wire;
                          json: one object per line, for people
  -h, --help              show this help

The kernel filters by family, mark and zone where it can; the address filter
is applied exactly in ctmigrate. A summary goes to stderr.
Binary output is refused on a terminal: use --output or --format json.

Example:
  ip netns exec vm1 ctmigratectl dump --address 192.0.2.10 --output vm1.ctm
`;

async function run(args: string[], container: DependencyContainer, io: CommandIo): Promise<number> {
  const { values, positionals } = parseOptions(
    args,
    {
      address: { type: 'string', short: 'a', multiple: true },
      zone: { type: 'string', short: 'z' },
      mark: { type: 'string', short: 'm' },
      output: { type: 'string', short: 'o' },
      format: { type: 'string', short: 'f', default: 'binary' },
    },
    true,
  );
  if (positionals.length) throw new UsageError(`dump takes no arguments, got ${JSON.stringify(positionals[0])}`);
  const format = values.format;
  if (format !== 'binary' && format !== 'json') throw new UsageError(`--format must be binary or json, not ${JSON.stringify(format)}`);
  const filter = parseFilter(values.address, values.zone, values.mark);
  if (format === 'binary' && !values.output && io.stdout.isTTY) {
    throw new UsageError('refusing to write a binary snapshot to a terminal; use --output FILE or --format json');
  }

  const started = Date.now();
  const table = ConnectionTable.create({ capacity: kernelTableCapacity() });
  const feed = resolvePort(container, ConnectionFeed).start(table, { filter, follow: false });
  try {
    await feed.ready;
  } finally {
    await feed.stop().catch(() => undefined);
  }
  const to = table.version;
  const sel = { scan: Scan.Snapshot, from: 0, to };

  const tmp = values.output ? `${values.output}.tmp-${process.pid}` : null;
  const out = tmp ? createWriteStream(tmp, { mode: 0o600 }) : io.stdout;
  let entries: number;
  let bytes = 0;
  try {
    if (tmp) await once(out, 'open');
    if (format === 'json') {
      entries = await encodeJsonLines(table, sel, (text) => {
        bytes += Buffer.byteLength(text);
        return writableSink(out)(Buffer.from(text));
      });
    } else {
      const summary = await encodeTable(table, sel, writableSink(out));
      entries = summary.entries;
      bytes = summary.bytes;
    }
    if (tmp) {
      await new Promise<void>((resolve, reject) => (out as NodeJS.WritableStream).end((e?: Error | null) => (e ? reject(e) : resolve())));
      const { rename } = await import('node:fs/promises');
      await rename(tmp, values.output as string);
    }
  } catch (e) {
    if (tmp) {
      const { rm } = await import('node:fs/promises');
      await rm(tmp, { force: true });
      throw new CommandError(`cannot write ${values.output}: ${(e as Error).message}; nothing written`);
    }
    throw e;
  }
  const ms = Date.now() - started;
  io.stderr.write(`dumped ${entries} entries (${bytes} bytes, ${format}) in ${ms} ms${values.output ? ` to ${values.output}` : ''}\n`);
  return 0;
}

export const dumpCommand: Command = {
  name: 'dump',
  summary: 'write matching conntrack entries (binary snapshot or JSON lines)',
  help: HELP,
  run,
};
