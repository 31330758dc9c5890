// The blocker's only boundary with the outside: one nft process per call.
// Unit tests replace the whole function with a fake that answers argv+stdin.

import { spawn, StdioOptions } from 'node:child_process';
import { FileHandle, mkdtemp, open, rmdir, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** What one nft process left behind. */
export interface NftResult {
  readonly stdout: string;
  readonly stderr: string;
  /** Exit status; null when the process could not run or was killed. */
  readonly code: number | null;
  /** Why it did not finish on its own: it timed out, or could not be started. */
  readonly failure?: 'timeout' | 'spawn';
}

/** Runs nft with these arguments (e.g. ['-j', '-f', '-']) and this stdin. */
export type NftRunner = (args: readonly string[], stdin: string) => Promise<NftResult>;

export interface NftProcessOptions {
  /** The nft binary; default "nft" from PATH. */
  readonly nftPath?: string;
  /**
   * argv put before nft, e.g. ['ip', 'netns', 'exec', 'NS'] to act on a
   * network namespace's ruleset (each namespace has its own).
   */
  readonly execPrefix?: readonly string[];
  /**
   * The process is killed after this long. A commit is atomic in the kernel,
   * so a killed nft leaves the whole transaction applied or none of it.
   */
  readonly timeoutMs?: number;
}

const DEFAULT_TIMEOUT_MS = 5_000;

/**
 * stdin for nft as an unlinked temporary file. nft's JSON reader does not
 * read fd 0 for `-f -`: it opens /dev/stdin, and opening that fails with
 * ENXIO when fd 0 is a socket — which is what Node's 'pipe' stdio is. A
 * regular file opens fine through /proc/self/fd/0, and once unlinked it
 * leaves nothing behind whatever happens to the daemon.
 */
async function stdinFile(text: string): Promise<FileHandle> {
  const dir = await mkdtemp(join(tmpdir(), 'ctmigrate-nft-'));
  const path = join(dir, 'stdin.json');
  const file = await open(path, 'w+', 0o600);
  try {
    await unlink(path);
    await rmdir(dir);
    // A positional write leaves the offset at 0, where nft starts reading.
    await file.write(text, 0, 'utf8');
    return file;
  } catch (e) {
    await file.close();
    throw e;
  }
}

/** An NftRunner that spawns the real nft (no shell, so nothing is interpreted). */
export function nftProcess(options: NftProcessOptions = {}): NftRunner {
  const argv0 = [...(options.execPrefix ?? []), options.nftPath ?? 'nft'];
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  return async (args, stdin) => {
    const input = stdin === '' ? undefined : await stdinFile(stdin);
    try {
      return await spawnNft([...argv0, ...args], input, timeoutMs);
    } finally {
      await input?.close();
    }
  };
}

function spawnNft(argv: readonly string[], input: FileHandle | undefined, timeoutMs: number): Promise<NftResult> {
  return new Promise((resolve) => {
    const [file, ...rest] = argv;
    const stdio: StdioOptions = [input === undefined ? 'ignore' : input.fd, 'pipe', 'pipe'];
    const child = spawn(file as string, rest, { stdio });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let failure: NftResult['failure'];
    let done = false;
    // A spawn failure emits 'error' and may still emit 'close': answer once.
    const finish = (code: number | null): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve({
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
        code: failure === undefined ? code : null,
        ...(failure === undefined ? {} : { failure }),
      });
    };
    const timer = setTimeout(() => {
      failure = 'timeout';
      child.kill('SIGKILL');
    }, timeoutMs);
    child.stdout?.on('data', (b: Buffer) => out.push(b));
    child.stderr?.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e) => {
      failure ??= 'spawn';
      err.push(Buffer.from(e.message));
      finish(null);
    });
    child.on('close', (code) => finish(code));
  });
}
