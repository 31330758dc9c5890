import { execFile } from 'node:child_process';
import { readFile, stat } from 'node:fs/promises';
import { Address, AddressError, parseAddress } from '../../plugin/address';
import { containerIdFromCgroup } from '../../plugin/container-id';
import { ContainerNetwork, ContainerNetworkPort } from '../../plugin/ports/container-network-port';
import { vmAddressProblem } from '../../plugin/vm-address';

/** One address as `ip -j address` prints it (the fields read here). */
interface IpAddrInfo {
  family?: string;
  local?: string;
  scope?: string;
}

const IP_TIMEOUT_MS = 5_000;

/**
 * A container's network through its init task: `nsenter --net` into the
 * task's network namespace to list its addresses with iproute2 (Node
 * cannot setns), /proc/PID/cgroup for the runtime's id.
 */
export class ProcContainerNetwork implements ContainerNetworkPort {
  async network(pid: number): Promise<ContainerNetwork> {
    const ns = `/proc/${pid}/ns/net`;
    let theirs, ours;
    try {
      [theirs, ours] = await Promise.all([stat(ns), stat('/proc/self/ns/net')]);
    } catch (e) {
      throw new Error(`cannot see the network namespace of process ${pid}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    if (theirs.ino === ours.ino && theirs.dev === ours.dev) return { sharesHostNetwork: true, addresses: [] };
    const out = await new Promise<string>((resolve, reject) => {
      execFile('nsenter', [`--net=${ns}`, '--', 'ip', '-j', 'address', 'show'], { timeout: IP_TIMEOUT_MS, maxBuffer: 4 << 20 }, (err, stdout, stderr) => {
        if (err) reject(new Error(`cannot list the addresses of process ${pid}'s network namespace: ${(stderr || err.message).trim()}`));
        else resolve(stdout);
      });
    });
    return { sharesHostNetwork: false, addresses: globalAddresses(out) };
  }

  async containerId(pid: number): Promise<string | null> {
    try {
      return containerIdFromCgroup(await readFile(`/proc/${pid}/cgroup`, 'utf8'));
    } catch {
      return null;
    }
  }
}

/** The global-scope addresses of an `ip -j address show` listing, each once. */
export function globalAddresses(json: string): Address[] {
  let links: unknown;
  try {
    links = JSON.parse(json);
  } catch {
    throw new Error('ip -j address printed no JSON');
  }
  if (!Array.isArray(links)) throw new Error('ip -j address printed no list of links');
  const seen = new Set<string>();
  const out: Address[] = [];
  for (const link of links as Array<{ addr_info?: IpAddrInfo[] }>) {
    for (const a of link.addr_info ?? []) {
      if (a.scope !== 'global' || typeof a.local !== 'string' || seen.has(a.local)) continue;
      let parsed: Address;
      try {
        parsed = parseAddress(a.local);
      } catch (e) {
        if (e instanceof AddressError) continue;
        throw e;
      }
      if (vmAddressProblem(parsed) !== null) continue;
      seen.add(a.local);
      out.push(parsed);
    }
  }
  return out;
}
