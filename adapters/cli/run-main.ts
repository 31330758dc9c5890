import { CommandIo } from './command';
import { CommandError, UsageError } from './usage-error';

/**
 * Run an entry point: one clear line on stderr and a non-zero status for
 * every failure, a stack trace only for our own bugs.
 */
export function runMain(program: string, main: (argv: string[], io: CommandIo) => Promise<number>): void {
  const io: CommandIo = { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr };
  // A closed pipe on stdout (| head) is the reader's choice, not our failure.
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(0);
  });
  main(process.argv.slice(2), io).then(
    (code) => {
      process.exitCode = code;
    },
    (e: unknown) => {
      if (e instanceof UsageError) {
        process.stderr.write(`${program}: ${e.message} (try ${program} --help)\n`);
        process.exitCode = 2;
      } else if (e instanceof CommandError) {
        process.stderr.write(`${program}: ${e.message}\n`);
        process.exitCode = e.exitCode;
      } else {
        const err = e as Error;
        process.stderr.write(`${program}: ${err && err.message ? err.message : String(e)}\n`);
        if (process.env.CTMIGRATE_DEBUG) process.stderr.write(`${err?.stack ?? ''}\n`);
        process.exitCode = 1;
      }
    },
  );
}
