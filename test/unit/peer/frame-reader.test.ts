import { strict as assert } from 'node:assert';
import sinon from 'sinon';
import { FrameReader } from '../../../adapters/peer/frame-reader';
import { decodePayload, encodeFrameBytes, FRAME_HEADER_BYTES, MessageKind, PeerProtocolError } from '../../../plugin/peer-protocol';
import { comparable, sampleMessages } from './sample-messages';

describe('frame reader', () => {
  afterEach(() => sinon.restore());

  const stream = Buffer.concat(sampleMessages().map((m) => encodeFrameBytes(m)));

  function decodeAll(r: FrameReader, chunks: Uint8Array[]): unknown[] {
    const out: unknown[] = [];
    for (const c of chunks) for (const f of r.push(c)) out.push(comparable(decodePayload(f.kind, f.payload)));
    return out;
  }

  it('cuts a stream into the same frames at every split point', () => {
    const want = sampleMessages().map(comparable);
    for (let cut = 0; cut <= stream.length; cut += 7) {
      const r = new FrameReader(1 << 20);
      assert.deepEqual(decodeAll(r, [stream.subarray(0, cut), stream.subarray(cut)]), want, `split at ${cut}`);
      assert.ok(r.atBoundary);
    }
  });

  it('cuts a stream fed one byte at a time', () => {
    const r = new FrameReader(1 << 20);
    const chunks = Array.from(stream, (b) => Uint8Array.of(b));
    assert.deepEqual(decodeAll(r, chunks), sampleMessages().map(comparable));
  });

  it('refuses an oversized frame from its header without allocating its payload', () => {
    const alloc = sinon.spy(Buffer, 'allocUnsafe');
    const head = Buffer.alloc(FRAME_HEADER_BYTES);
    head.writeUInt32BE(9 << 20, 0);
    head[4] = MessageKind.SnapshotChunk;
    const r = new FrameReader(4 << 20);
    assert.deepEqual(r.push(head.subarray(0, 3)), []);
    assert.throws(
      () => r.push(head.subarray(3)),
      (e: unknown) => e instanceof PeerProtocolError && e.problem === 'oversize' && e.message === 'sent a frame of 9 MiB (limit 4 MiB)',
    );
    assert.ok(alloc.getCalls().every((c) => (c.args[0] as number) < 1 << 20), 'no big allocation');
    assert.throws(() => r.push(Buffer.alloc(1)), /after a framing error/);
  });

  it('reports a stream that stopped mid-frame', () => {
    const r = new FrameReader(1 << 20);
    r.push(stream.subarray(0, 9));
    assert.equal(r.atBoundary, false);
    assert.equal(r.buffered, 9);
  });
});
