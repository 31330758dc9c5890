// The one kind of transaction the blocker writes: replace its tables with
// the desired ones. `add table` (a no-op when it exists) then `delete table`
// never fails, whatever someone flushed or deleted before; the new table is
// built in the same transaction, which the kernel commits whole or not at
// all, so a packet sees the old drops or the new ones, never a gap.

import { Blocks, dropTable, TABLE } from './drop-ruleset';
import { NftCommand, NftFamily, NftTransaction } from './nft-json';

/** Replaces the blocker's table in each family by the one these blocks need (none when nothing is blocked). */
export function replaceTables(families: readonly NftFamily[], blocks: Blocks): NftTransaction {
  const commands: NftCommand[] = [];
  for (const family of families) {
    const table = { family, name: TABLE };
    commands.push({ add: { table } }, { delete: { table } });
    const want = dropTable(family, blocks);
    if (want === undefined) continue;
    commands.push({ add: { table } });
    for (const chain of want.chains) commands.push({ add: { chain } });
    for (const set of want.sets) commands.push({ add: { set } });
    for (const rule of want.rules) commands.push({ add: { rule } });
  }
  return { nftables: commands };
}
