import { strict as assert } from 'node:assert';
import { CodecError, FlowJsonError } from '../../../plugin/codec-error';
import { Scan } from '../../../plugin/connection-table';
import { FlowRecord } from '../../../plugin/flow-view';
import { decodeJsonLines, encodeJsonLines, flowToJson, JsonLinesDecoder, parseFlowJson } from '../../../plugin/flow-json';
import { readSnapshot } from '../../../plugin/snapshot-reader';
import { entryBytes, sampleFlows, sampleTable, tableEntries } from './sample-flows';

const LIMITS = { maxEntries: 1000 };

function jsonError(text: string): FlowJsonError {
  try {
    parseFlowJson(text, 17, new FlowRecord());
  } catch (err) {
    if (err instanceof FlowJsonError) return err;
    throw new Error(`expected FlowJsonError, got ${String(err)}`);
  }
  throw new Error('parsing succeeded but should have failed');
}

const GOOD = {
  family: 'ipv4',
  proto: 'tcp',
  protonum: 6,
  state: 'ESTABLISHED',
  timeout: 431999,
  orig: { src: '192.0.2.1', dst: '198.51.100.2', sport: 40000, dport: 22 },
  reply: { src: '198.51.100.2', dst: '192.0.2.1', sport: 22, dport: 40000 },
  status: ['SEEN_REPLY', 'ASSURED', 'CONFIRMED'],
  mark: 0,
  zone: 0,
  tcp: { wscale_orig: 7, wscale_reply: 7, flags_orig: 35, flags_reply: 35 },
  id: 123,
};

function withField(path: string, value: unknown): string {
  const o = JSON.parse(JSON.stringify(GOOD)) as Record<string, Record<string, unknown>>;
  const [a, b] = path.split('.');
  if (b === undefined) (o as Record<string, unknown>)[a] = value;
  else o[a][b] = value;
  return JSON.stringify(o);
}

describe('JSON lines codec', () => {
  describe('round trip', () => {
    for (const [name, rec] of sampleFlows()) {
      it(`${name}: record -> JSON -> record -> JSON is exact`, () => {
        const line = flowToJson(rec);
        assert.doesNotMatch(line, /\n/);
        const back = new FlowRecord();
        assert.equal(parseFlowJson(line, 1, back), 'live');
        assert.deepEqual(entryBytes(back), entryBytes(rec));
        assert.equal(flowToJson(back), line);
      });
    }

    it('prints fields with conntrack names', () => {
      const line = flowToJson(sampleFlows()[0][1]);
      assert.deepEqual(JSON.parse(line), GOOD);
    });

    it('prints icmp tuples as type, code and id', () => {
      const o = JSON.parse(flowToJson(sampleFlows()[4][1]));
      assert.deepEqual(o.orig, { src: '192.0.2.1', dst: '198.51.100.7', type: 8, code: 0, id: 1234 });
      assert.equal(o.proto, 'icmp');
    });

    it('prints 64-bit values beyond 2^53 as decimal strings', () => {
      const o = JSON.parse(flowToJson(sampleFlows()[17][1]));
      assert.equal(typeof o.counters.orig.packets, 'number');
      assert.equal(typeof o.counters.reply.bytes, 'string');
      assert.equal(typeof o.timestamp.start, 'string');
    });

    it('dumps a table and loads it back (string and chunked input)', async () => {
      const t = sampleTable();
      let text = '';
      const n = await encodeJsonLines(t, { scan: Scan.Snapshot, from: 0, to: t.version }, (s) => {
        text += s;
      });
      assert.equal(n, sampleFlows().length);
      assert.equal(text.split('\n').length, n + 1);
      const a = await decodeJsonLines(text, LIMITS);
      assert.deepEqual(tableEntries(a.table), tableEntries(t));
      const bytes = Buffer.from(text);
      const chunks = [];
      for (let i = 0; i < bytes.length; i += 13) chunks.push(bytes.subarray(i, i + 13));
      const b = await readSnapshot(chunks, LIMITS);
      assert.equal(b.format, 'json');
      assert.deepEqual(tableEntries(b.table), tableEntries(t));
    });

    it('accepts LISTEN for SYN_SENT2, blank lines and CRLF', async () => {
      const line = withField('state', 'LISTEN');
      const d = await decodeJsonLines(`\n${line}\r\n\n`, LIMITS);
      assert.equal(d.entries, 1);
    });

    it('an empty input is JSON lines with no entries', async () => {
      const d = await readSnapshot([], LIMITS);
      assert.equal(d.entries, 0);
    });
  });

  describe('validation', () => {
    const cases: Array<[string, string, RegExp]> = [
      ['bad address', withField('orig.src', '300.1.1.1'), /^line 17: orig\.src is not an IP address: "300\.1\.1\.1"$/],
      ['wrong family address', withField('reply.dst', '2001:db8::1'), /^line 17: reply\.dst is an IPv6 address but family is ipv4/],
      ['not JSON', '{"family": ', /^line 17: is not valid JSON/],
      ['not an object', '[1,2]', /^line 17: must be an object/],
      ['unknown field', withField('makr', 1), /^line 17: makr is not a known field here$/],
      ['missing tuple', JSON.stringify({ ...GOOD, orig: undefined }), /^line 17: orig is missing$/],
      ['missing port', withField('orig.sport', undefined), /^line 17: orig\.sport is missing$/],
      ['port out of range', withField('orig.dport', 70000), /^line 17: orig\.dport must be an integer from 0 to 65535, not 70000$/],
      ['bad state', withField('state', 'SLEEPING'), /^line 17: state is not a tcp state: "SLEEPING"/],
      ['bad status', withField('status', ['ASSURED', 'HAPPY']), /^line 17: status\[1\] is not a status name: "HAPPY"$/],
      ['proto mismatch', withField('protonum', 17), /^line 17: protonum is 17 but proto "tcp" is 6$/],
      ['unknown proto name', withField('proto', 'ospf'), /^line 17: proto is not a known protocol/],
      ['family', withField('family', 'ipx'), /^line 17: family must be "ipv4" or "ipv6"/],
      ['helper too long', withField('helper', 'a-very-long-helper-name'), /^line 17: helper must be a helper name of 1 to 15/],
      ['sctp on tcp', withField('sctp', { vtag_orig: 1 }), /^line 17: sctp is only for sctp entries/],
      ['label range', withField('labels', [1, 128]), /^line 17: labels\[1\] must be an integer from 0 to 127/],
      ['zone disagreement', JSON.stringify({ ...GOOD, orig: { ...GOOD.orig, zone: 3 } }), /^line 17: zone is 0 but the tuples' zone is 3/],
      ['negative timeout', withField('timeout', -1), /^line 17: timeout must be an integer/],
      ['bad u64', withField('counters', { orig: { packets: 1, bytes: 'lots' }, reply: { packets: 0, bytes: 0 } }), /^line 17: counters\.orig\.bytes must be an unsigned 64-bit integer/],
    ];
    for (const [name, text, msg] of cases) {
      it(`rejects ${name} with the line and field`, () => {
        const err = jsonError(text);
        assert.match(err.message, msg);
        assert.ok(err instanceof CodecError);
        assert.equal(err.line, 17);
      });
    }

    it('a bad line anywhere fails the whole input; nothing is kept', async () => {
      const good = flowToJson(sampleFlows()[0][1]);
      const text = [good, good, withField('orig.src', 'nope'), good].join('\n');
      await assert.rejects(decodeJsonLines(text, LIMITS), (e: unknown) => e instanceof FlowJsonError && e.line === 3 && e.field === 'orig.src');
    });

    it('more lines than the limit', async () => {
      const lines = sampleFlows().map(([, r]) => flowToJson(r)).join('\n');
      await assert.rejects(decodeJsonLines(lines, { maxEntries: 3 }), /^FlowJsonError: line 4: is past the limit of 3 entries/);
    });

    it('invalid UTF-8 and overlong lines', () => {
      const d = new JsonLinesDecoder(LIMITS);
      assert.throws(() => d.write(Buffer.from([0x7b, 0xff, 0xfe, 0x0a])), /line 1: is not valid UTF-8/);
      const e = new JsonLinesDecoder(LIMITS);
      assert.throws(() => e.write('x'.repeat(70000)), /line 1: is longer than 65536 characters/);
    });
  });
});
