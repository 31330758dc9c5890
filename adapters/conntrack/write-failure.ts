/**
 * Write failure: turns the errno the kernel answered for one request into a
 * WriteFailure an operator can act on.
 *
 * The reasons come from what ctnetlink_new_conntrack / ctnetlink_del_conntrack
 * return for each case on Linux 6.x:
 * - ENOENT on create: the master tuple (CTA_TUPLE_MASTER) is not in the table.
 * - EOPNOTSUPP on create: the helper named in CTA_HELP is not registered
 *   (built in or loadable), or NAT is not available.
 * - ENOSPC on the labels update: the namespace has no label storage because
 *   no rule uses ct labels yet (on create the kernel drops labels silently).
 * - ENOMEM on create: nf_conntrack_max reached, or the kernel is out of memory.
 * - EEXIST: the tuple is taken (after our delete-and-retry, by someone else).
 */
import { ExtFlag, X_HELPER } from '../../plugin/flow';
import { describeFlow } from '../../plugin/flow-text';
import { FlowView } from '../../plugin/flow-view';
import { WriteFailure } from '../../plugin/ports/conntrack-port';
import { Errno, errnoName } from './netlink-message';

/** Which request failed. */
export const enum WriteStep {
  Create = 0,
  Labels = 1,
  Delete = 2,
}

function helperName(v: FlowView): string {
  if ((v.extPresent & ExtFlag.Helper) === 0) return '';
  let s = '';
  for (let i = 0; i < 16; i++) {
    const c = v.u8[v.ext + X_HELPER + i];
    if (c === 0) break;
    s += String.fromCharCode(c);
  }
  return s;
}

/** Words for an errno answered to `step` of the entry `v`. */
export function failureReason(step: WriteStep, errno: number, v: FlowView): string {
  switch (errno) {
    case Errno.EEXIST:
      return 'an entry with the same tuple already exists and could not be replaced';
    case Errno.ENOENT:
      if (step === WriteStep.Delete) return 'no such entry in the kernel';
      if (v.extPresent & ExtFlag.Master) return 'master entry missing (the related entry needs its master first)';
      return 'the kernel did not find the entry';
    case Errno.EOPNOTSUPP: {
      const helper = helperName(v);
      if (helper) return `helper "${helper}" is not available in this kernel (or NAT is not); entry not created`;
      return 'the kernel does not support an attribute of this entry (NAT or zones not available); entry not created';
    }
    case Errno.ENOSPC:
      if (step === WriteStep.Labels)
        return 'labels cannot be set: this namespace has no connection label storage (no rule uses ct labels); the entry was not kept';
      return 'hash chain too long in the kernel table; entry not created';
    case Errno.ENOMEM:
      return 'conntrack table full (net.netfilter.nf_conntrack_max) or kernel out of memory; entry not created';
    case Errno.EINVAL:
      return 'the kernel refused the entry as invalid (tuple, protocol state, zone or status); entry not created';
    case Errno.EBUSY:
      return 'the kernel refused the status bits; entry not created';
    case Errno.EPERM:
      return 'not permitted: needs CAP_NET_ADMIN in this network namespace';
    case Errno.ENOBUFS:
      return "the kernel's answers overran the socket buffer; outcome unknown, check with conntrack -L";
    case Errno.EAGAIN:
      return 'the kernel asked to try again (module loading) and the retry failed too';
    default:
      return `the kernel answered ${errnoName(errno)}`;
  }
}

/** A complete WriteFailure for table slot `slot` (viewed by `v`). */
export function writeFailure(step: WriteStep, errno: number, slot: number, v: FlowView): WriteFailure {
  return { slot, code: errnoName(errno), reason: failureReason(step, errno, v), flow: describeFlow(v) };
}
