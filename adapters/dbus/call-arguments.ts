import { PrepareOptions } from '../../plugin/migration-service';
import { parseVmUuid, VmSpec, vmSpec } from '../../plugin/vm';

/** A D-Bus call's arguments cannot be used; becomes org.ctmigrate1.Error.InvalidArgs. */
export class InvalidArgsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InvalidArgsError';
  }
}

function u32(text: string, what: string): number {
  if (!/^(0x[0-9a-f]{1,8}|[0-9]{1,10})$/i.test(text)) throw new InvalidArgsError(`${what} ${JSON.stringify(text)} is not a 32-bit number`);
  const n = Number(text);
  if (n > 0xffffffff) throw new InvalidArgsError(`${what} ${text} is larger than 32 bits`);
  return n;
}

/** "VALUE[/MASK]" (decimal or 0x hex); "" = no mark filter. */
export function parseMarkArgument(text: string): { value: number; mask: number } | undefined {
  if (text === '') return undefined;
  const parts = text.split('/');
  if (parts.length > 2) throw new InvalidArgsError(`mark ${JSON.stringify(text)} is not VALUE[/MASK]`);
  const value = u32(parts[0], 'mark value');
  const mask = parts.length === 2 ? u32(parts[1], 'mark mask') : 0xffffffff;
  if ((value & mask) >>> 0 !== value) throw new InvalidArgsError(`mark value 0x${value.toString(16)} has bits outside its mask 0x${mask.toString(16)}`);
  return { value, mask };
}

/** "V/M" as the Manager's Mark arguments and Status show it: hex, mask always given. */
export function formatMark(mark: { value: number; mask: number } | undefined): string {
  return mark === undefined ? '' : `0x${mark.value.toString(16)}/0x${mark.mask.toString(16)}`;
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
    if (e instanceof Error && e.name === 'VmSpecError') throw new InvalidArgsError(e.message);
    throw e;
  }
}

export function vmUuidArgument(uuid: string): string {
  return checked(() => parseVmUuid(uuid));
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
