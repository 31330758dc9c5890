import { ParseArgsConfig } from 'node:util';
import { VmSpec, vmSpec, VmSpecError } from '../../plugin/vm';
import { parseMark, parseZone } from './flow-options';
import { UsageError } from './usage-error';

type Options = NonNullable<ParseArgsConfig['options']>;

/** The flags that describe a VM: --vm UUID --address IP... [--zone N] [--mark V[/M]]. */
export const VM_OPTIONS = {
  vm: { type: 'string' },
  address: { type: 'string', short: 'a', multiple: true },
  zone: { type: 'string', short: 'z' },
  mark: { type: 'string', short: 'm' },
} as const satisfies Options;

export function vmFromOptions(values: { vm?: string; address?: string[]; zone?: string; mark?: string }): VmSpec {
  if (!values.vm) throw new UsageError('--vm UUID is required');
  if (!values.address || values.address.length === 0) throw new UsageError('at least one --address IP is required');
  try {
    return vmSpec(values.vm, values.address, values.zone === undefined ? undefined : parseZone(values.zone), values.mark === undefined ? undefined : parseMark(values.mark));
  } catch (e) {
    if (e instanceof VmSpecError) throw new UsageError(e.message);
    throw e;
  }
}

/** Just --vm UUID. */
export function uuidFromOptions(values: { vm?: string }): string {
  if (!values.vm) throw new UsageError('--vm UUID is required');
  return values.vm;
}
