import { CtMark, CtMarkError, formatCtMark, parseCtMark } from '../../plugin/ct-mark';
import { PrepareOptions } from '../../plugin/migration-service';
import { CONTAINER_ID } from '../../plugin/checkpoint-manifest';
import { parseVmUuid, VmSpec, vmSpec, VmSpecError } from '../../plugin/vm';

/** A D-Bus call's arguments cannot be used; becomes org.ctmigrate1.Error.InvalidArgs. */
export class InvalidArgsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InvalidArgsError';
  }
}

/** "VALUE[/MASK]" (decimal or 0x hex); "" = no mark filter. */
export function parseMarkArgument(text: string): CtMark | undefined {
  if (text === '') return undefined;
  try {
    return parseCtMark(text);
  } catch (e) {
    if (e instanceof CtMarkError) throw new InvalidArgsError(e.message);
    throw e;
  }
}

/** "V/M" as the Manager's Mark arguments and Status show it: hex, mask always given. */
export function formatMark(mark: CtMark | undefined): string {
  return mark === undefined ? '' : formatCtMark(mark);
}

/** Zone as a D-Bus int32: -1 = no zone (any). */
export function parseZoneArgument(zone: number): number | undefined {
  if (zone === -1) return undefined;
  if (!Number.isInteger(zone) || zone < 0 || zone > 65535) throw new InvalidArgsError(`zone ${zone} is not 0-65535 (or -1 for none)`);
  return zone;
}

/** Wrap the domain's own checks (VmSpecError) as InvalidArgs. */
function checked<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof InvalidArgsError) throw e;
    if (e instanceof VmSpecError) throw new InvalidArgsError(e.message);
    throw e;
  }
}

export function vmUuidArgument(uuid: string): string {
  return checked(() => parseVmUuid(uuid));
}

/** A container id (criu-action's): letters, digits, . _ -, at most 64. */
export function containerArgument(id: string): string {
  if (!CONTAINER_ID.test(id)) throw new InvalidArgsError(`not a container id: ${JSON.stringify(id.slice(0, 80))} (letters, digits, . _ -; at most 64)`);
  return id;
}

/** Register/PrepareIncoming's (uuid, addresses, zone, mark) as a VmSpec. */
export function vmSpecArguments(uuid: string, addresses: string[], zone: number, mark: string): VmSpec {
  return checked(() => vmSpec(uuid, addresses, parseZoneArgument(zone), parseMarkArgument(mark)));
}

/** PrepareIncoming's (source, ready_when): "" = let the daemon decide. */
export function prepareArguments(source: string, readyWhen: string): PrepareOptions {
  const options: PrepareOptions = {};
  if (source !== '') options.source = source;
  if (readyWhen !== '') options.readyWhen = readyWhen;
  return options;
}

export function finishResultArgument(result: string): 'migrated' | 'failed' {
  if (result === 'migrated' || result === 'failed') return result;
  throw new InvalidArgsError(`result ${JSON.stringify(result)} is not "migrated" or "failed"`);
}
