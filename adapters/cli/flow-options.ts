import { AddressError, parseAddress } from '../../plugin/address';
import { CtMark, CtMarkError, parseCtMark } from '../../plugin/ct-mark';
import { FlowFilter } from '../../plugin/flow-filter';
import { UsageError } from './usage-error';

/** `--mark VALUE[/MASK]`: mask defaults to all ones. */
export function parseMark(text: string): CtMark {
  try {
    return parseCtMark(text);
  } catch (e) {
    // Every CtMarkError message starts with "mark": it reads as the flag's name.
    if (e instanceof CtMarkError) throw new UsageError(`--${e.message}`);
    throw e;
  }
}

/** `--zone N`: a conntrack zone, 0..65535. */
export function parseZone(text: string): number {
  if (!/^[0-9]{1,5}$/.test(text) || Number(text) > 65535) throw new UsageError(`--zone must be a number from 0 to 65535, not ${JSON.stringify(text)}`);
  return Number(text);
}

/** Build a FlowFilter from repeated --address, --zone, --mark. */
export function parseFilter(addresses: string[] | undefined, zone: string | undefined, mark: string | undefined): FlowFilter {
  const filter: FlowFilter = { addresses: [] };
  for (const a of addresses ?? []) {
    try {
      filter.addresses.push(parseAddress(a));
    } catch (e) {
      if (e instanceof AddressError) throw new UsageError(`--address: ${e.message}`);
      throw e;
    }
  }
  if (zone !== undefined) filter.zone = parseZone(zone);
  if (mark !== undefined) filter.mark = parseMark(mark);
  return filter;
}
