import { HostVmsPort } from '../../plugin/ports/host-vms-port';
import { Virsh, VirshError } from './virsh';

/** How long the question may take: recovery after a crash must finish within a second. */
const ASK_TIMEOUT_MS = 700;

/**
 * HostVmsPort through `virsh domstate`: a domain in state running, paused
 * or in shutdown runs here (QEMU has it). No libvirt reachable: cannot tell.
 */
export class LibvirtHostVms implements HostVmsPort {
  constructor(private readonly virsh: Virsh = new Virsh('qemu:///system')) {}

  async running(uuid: string): Promise<boolean | undefined> {
    let state: string;
    try {
      state = (await this.virsh.domainState(uuid, ASK_TIMEOUT_MS)).trim();
    } catch (e) {
      if (e instanceof VirshError && /failed to get domain|Domain not found/i.test(e.message)) return false;
      return undefined;
    }
    return /^(running|paused|in shutdown|pmsuspended)$/.test(state);
  }
}
