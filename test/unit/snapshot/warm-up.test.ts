import { strict as assert } from 'node:assert';
import { flowMatches } from '../../../plugin/flow-filter';
import { warmUpCodec, warmUpTable } from '../../../plugin/warm-up';
import { parseAddress } from '../../../plugin/address';

describe('codec warm-up', () => {
  it('makes distinct entries of the documentation range only, and runs them through the codec', () => {
    const t = warmUpTable(70_000);
    assert.equal(t.size, 70_000, 'every made-up entry has its own key');
    const cur = t.cursor().reset(0, 0, t.version);
    let inRange = 0;
    while (cur.next()) if (flowMatches({ addresses: [parseAddress('192.0.2.1'), parseAddress('192.0.2.2')] }, cur.view)) inRange++;
    assert.equal(inRange, 70_000);
    assert.doesNotThrow(() => warmUpCodec(5_000));
  });
});
