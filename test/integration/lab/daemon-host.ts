// A lab host that runs ctmigrated: its own private system bus (a
// dbus-daemon that lets everyone in, in place of the real policy) and the
// daemon on it, both inside the host's namespace. Every lab with daemons
// (migration-lab.ts, container-lab.ts) starts them through here.

import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { Lab, LabProcess, NetNs } from './netns';

/** dist/adapters/cli/ctmigrated.js, seen from dist/test/integration/lab/. */
export const CTMIGRATED = join(__dirname, '..', '..', '..', 'adapters', 'cli', 'ctmigrated.js');

const BUS_CONFIG = (socket: string): string => `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <listen>unix:path=${socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
`;

/** Start a private system bus in `ns`, its socket in `dir`; resolves to its DBUS_SYSTEM_BUS_ADDRESS. */
export async function startSystemBus(lab: Lab, ns: NetNs, dir: string): Promise<string> {
  const socket = join(dir, 'system_bus_socket');
  const conf = join(dir, 'bus.conf');
  await writeFile(conf, BUS_CONFIG(socket));
  const p = lab.spawn(ns, 'dbus-daemon', [`--config-file=${conf}`, '--nofork', '--nopidfile', '--print-address=1']);
  await p.waitFor(/unix:path=/, 5_000);
  return `unix:path=${socket}`;
}

/** A cluster key file (32 random bytes, hex) for the lab's daemons. */
export async function writePskFile(dir: string): Promise<string> {
  const file = join(dir, 'psk');
  await writeFile(file, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
  return file;
}

export interface DaemonOptions {
  bus: string;
  /** ADDR:PORT it listens on for peers. */
  listen: string;
  pskFile: string;
  runDir: string;
  /** ADDR:PORT of the hosts it migrates with. */
  peers?: readonly string[];
  extra?: readonly string[];
}

/** Start ctmigrated in `ns` on the given bus; resolves once it says it is ready. */
export async function startCtmigrated(lab: Lab, ns: NetNs, o: DaemonOptions): Promise<LabProcess> {
  const args = [
    `DBUS_SYSTEM_BUS_ADDRESS=${o.bus}`,
    process.execPath,
    CTMIGRATED,
    '--listen',
    o.listen,
    '--psk-file',
    o.pskFile,
    '--run-dir',
    o.runDir,
    ...(o.peers ?? []).flatMap((p) => ['--peer', p]),
    ...(o.extra ?? []),
  ];
  const p = lab.spawn(ns, 'env', args);
  await p.waitFor(/ctmigrated ready/, 15_000);
  return p;
}
