// A stand-in for the CRIU process, as far as its action scripts can tell
// (`node criu-driver.js SCRIPT IMAGE_DIR [NAME=VALUE...]`, inside a host's
// namespace; the NAME=VALUE pairs are the environment CRIU inherited from
// whoever ran it, such as CTMIGRATE_DESTINATION). CRIU
// itself cannot run on this kernel (ENVIRONMENT.md), so the lab plays its
// part: this process opens the image directory and keeps it open, runs the
// script as its own child once per step, with CRIU's environment
// (CRTOOLS_SCRIPT_ACTION; CRTOOLS_IMAGE_DIR as /proc/<this pid>/fd/<N>;
// CRTOOLS_INIT_PID for the steps CRIU gives it) and with CRIU's working
// directory, and stops at the first step that fails, as CRIU aborts.
//
// Commands on stdin, one per line:
//   run ACTION [INIT_PID]   run the script for ACTION; prints "ran ACTION CODE"
//                           (and the script's stderr lines as "log ...")
//   exit                    end as CRIU does after its last step
// EOF on stdin, or SIGKILL, is CRIU dying mid-way.

import { spawn } from 'node:child_process';
import { openSync } from 'node:fs';
import { createInterface } from 'node:readline';

const [script, imageDir, ...inherited] = process.argv.slice(2);
if (!script || !imageDir) {
  process.stderr.write('usage: criu-driver SCRIPT IMAGE_DIR\n');
  process.exit(2);
}
const dirFd = openSync(imageDir, 'r');
const env = (action: string, initPid: string | undefined): NodeJS.ProcessEnv => {
  const e: NodeJS.ProcessEnv = { PATH: process.env.PATH };
  for (const pair of inherited) {
    const at = pair.indexOf('=');
    if (at > 0) e[pair.slice(0, at)] = pair.slice(at + 1);
  }
  e.CRTOOLS_SCRIPT_ACTION = action;
  e.CRTOOLS_IMAGE_DIR = `/proc/${process.pid}/fd/${dirFd}`;
  if (initPid) e.CRTOOLS_INIT_PID = initPid;
  return e;
};

const lines = createInterface({ input: process.stdin });
let queue = Promise.resolve();
lines.on('line', (line) => {
  queue = queue.then(async () => {
    const [cmd, action, initPid] = line.trim().split(/\s+/);
    if (cmd === 'exit') process.exit(0);
    if (cmd !== 'run' || !action) return;
    const code = await new Promise<number>((resolve) => {
      const child = spawn(script, [], { env: env(action, initPid), cwd: imageDir, stdio: ['ignore', 'pipe', 'pipe'] });
      let err = '';
      child.stdout.on('data', (b: Buffer) => (err += b.toString()));
      child.stderr.on('data', (b: Buffer) => (err += b.toString()));
      child.on('close', (c) => {
        for (const l of err.split('\n')) if (l.trim()) process.stdout.write(`log ${l}\n`);
        resolve(c ?? 1);
      });
    });
    process.stdout.write(`ran ${action} ${code}\n`);
  });
});
lines.on('close', () => process.exit(3));
process.stdout.write('ready\n');
