import { CONTAINER_ID } from './checkpoint-manifest';

/**
 * The container a process runs in, from its /proc/PID/cgroup: the runtimes
 * name the cgroup after the container (Podman `libpod-ID.scope`, Docker
 * `docker-ID.scope`, CRI-O `crio-ID.scope`, containerd `cri-containerd-ID.scope`,
 * runc's cgroupfs driver a bare 64-digit ID, LXC `lxc.payload.NAME`). The
 * deepest such component wins (a runtime may nest a cgroup under it).
 * null when no line names one.
 */
export function containerIdFromCgroup(text: string): string | null {
  let found: string | null = null;
  for (const line of text.split('\n')) {
    // hierarchy-ID:controllers:path; the path may itself hold colons.
    const parts = line.split(':');
    if (parts.length < 3) continue;
    for (const c of parts.slice(2).join(':').split('/')) {
      const id = componentId(c);
      if (id !== null) found = id;
    }
  }
  return found;
}

function componentId(c: string): string | null {
  const scoped = /^(?:libpod|docker|crio|cri-containerd|containerd)-([0-9a-f]{12,64})\.scope$/.exec(c);
  if (scoped) return scoped[1] as string;
  if (/^[0-9a-f]{64}$/.test(c)) return c;
  const lxc = /^lxc\.payload\.(.+)$/.exec(c);
  if (lxc && CONTAINER_ID.test(lxc[1] as string)) return lxc[1] as string;
  return null;
}
