import { strict as assert } from 'node:assert';
import {
  decodeFrame,
  decodePayload,
  encodeFrame,
  encodeFrameBytes,
  FRAME_HEADER_BYTES,
  MessageKind,
  PeerProtocolError,
  PeerRole,
  resumeProblem,
} from '../../../plugin/peer-protocol';
import { comparable, sampleMessages } from './sample-messages';

function protocolError(bytes: Uint8Array, max?: number): PeerProtocolError {
  try {
    decodeFrame(bytes, max);
  } catch (err) {
    if (err instanceof PeerProtocolError) return err;
    throw new Error(`expected PeerProtocolError, got ${String(err)}`);
  }
  throw new Error('decoding succeeded but should have failed');
}

function frame(kind: number, payload: number[]): Buffer {
  const b = Buffer.alloc(FRAME_HEADER_BYTES + payload.length);
  b.writeUInt32BE(payload.length, 0);
  b[4] = kind;
  Buffer.from(payload).copy(b, FRAME_HEADER_BYTES);
  return b;
}

/** Deterministic PRNG so a fuzz failure can be replayed. */
function xorshift(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 0x1_0000_0000;
  };
}

describe('peer protocol codec', () => {
  describe('round trip', () => {
    sampleMessages().forEach((m, i) => {
      it(`carries ${MessageKind[m.kind]} (sample ${i}) field for field`, () => {
        const got = decodeFrame(encodeFrameBytes(m));
        assert.deepEqual(comparable(got), comparable(m));
      });
    });

    it('hands opaque bytes to the socket without copying them', () => {
      const m = sampleMessages().find((x) => x.kind === MessageKind.Changes)!;
      const parts = encodeFrame(m);
      assert.equal(parts.length, 2);
      assert.equal(parts[1], (m as { bytes: Uint8Array }).bytes);
    });

    it('decodes opaque bytes as a view of the received payload', () => {
      const bytes = encodeFrameBytes({ kind: MessageKind.Changes, from: 1, to: 2, bytes: Uint8Array.of(1, 2, 3) });
      const m = decodeFrame(bytes);
      assert.equal(m.kind, MessageKind.Changes);
      if (m.kind === MessageKind.Changes) assert.equal(m.bytes.buffer, bytes.buffer);
    });

    it('writes canonical address text (what the domain compares)', () => {
      const m = decodeFrame(
        encodeFrameBytes({ kind: MessageKind.Start, sessionId: 'x', vm: '6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b', addresses: ['2001:DB8:0:0::1'] }),
      );
      assert.deepEqual(m.kind === MessageKind.Start && m.addresses, ['2001:db8::1']);
    });
  });

  describe('refuses to encode what it cannot carry', () => {
    it('a payload over the receiver limit', () => {
      assert.throws(
        () => encodeFrame({ kind: MessageKind.SnapshotChunk, seq: 0, last: false, bytes: new Uint8Array(5000) }, 4096),
        /exceeds the peer's limit of 4 KiB/,
      );
    });
    it('a VM id that is not a UUID', () => {
      assert.throws(() => encodeFrame({ kind: MessageKind.WhoHas, queryId: 1, vm: 'web-1' }), /not a UUID/);
    });
    it('a version beyond 2^53 and a backwards range', () => {
      assert.throws(() => encodeFrame({ kind: MessageKind.Ack, bytes: 2 ** 60, received: 0, committed: 0 }), /not a version/);
      assert.throws(() => encodeFrame({ kind: MessageKind.Changes, from: 5, to: 4, bytes: new Uint8Array(0) }), /backwards/);
    });
  });

  describe('malformed input', () => {
    it('says how big an oversized frame was and what the limit is', () => {
      const head = Buffer.alloc(FRAME_HEADER_BYTES);
      head.writeUInt32BE(9 << 20, 0);
      head[4] = MessageKind.SnapshotChunk;
      const err = protocolError(head, 4 << 20);
      assert.equal(err.problem, 'oversize');
      assert.equal(err.message, 'sent a frame of 9 MiB (limit 4 MiB)');
    });

    it('refuses an unknown frame kind', () => {
      const err = protocolError(frame(200, [1, 2, 3]));
      assert.equal(err.problem, 'kind');
      assert.match(err.message, /unknown kind 200/);
    });

    it('refuses every truncation of every message kind', () => {
      for (const m of sampleMessages()) {
        const full = encodeFrameBytes(m);
        const payload = full.subarray(FRAME_HEADER_BYTES);
        // Messages ending in opaque bytes accept any length of them; cut only into the fixed fields.
        const fixed = payload.length - ((m as { bytes?: Uint8Array }).bytes?.length ?? 0);
        for (let n = 0; n < fixed; n++) {
          let err: unknown = null;
          try {
            decodePayload(m.kind, payload.subarray(0, n));
          } catch (e) {
            err = e;
          }
          assert.ok(err instanceof PeerProtocolError, `${MessageKind[m.kind]} cut at ${n} bytes: ${String(err)}`);
          assert.ok(['truncated', 'malformed'].includes(err.problem), `${MessageKind[m.kind]} cut at ${n}: ${err.problem}`);
        }
      }
    });

    it('refuses a frame whose bytes end before its announced length', () => {
      const full = encodeFrameBytes(sampleMessages()[0]);
      assert.equal(protocolError(full.subarray(0, full.length - 1)).problem, 'truncated');
      assert.equal(protocolError(full.subarray(0, 3)).problem, 'truncated');
    });

    it('refuses trailing bytes after a fixed-size message', () => {
      const err = protocolError(frame(MessageKind.HasVm, [0, 0, 0, 1, ...new Array<number>(16).fill(0xab), 1, 9]));
      assert.equal(err.problem, 'trailing');
    });

    it('refuses out-of-range fields with the field named', () => {
      assert.match(protocolError(frame(MessageKind.HasVm, [0, 0, 0, 1, ...new Array<number>(16).fill(0), 2])).message, /answer 2/);
      assert.match(protocolError(frame(MessageKind.Hello, [0, 1, 9, 0, 0, 0x10, 0, 0, 0])).message, /unknown role 9/);
      assert.match(protocolError(frame(MessageKind.Hello, [0, 1, PeerRole.Query, 0, 0, 0, 16, 0, 0])).message, /frame limit of 16 bytes/);
      assert.match(protocolError(frame(MessageKind.Error, [0, 99, 0, 0])).message, /unknown error code 99/);
      assert.match(protocolError(frame(MessageKind.Close, [0, 0, 2, 0xc3, 0x28])).message, /not UTF-8/);
      const v = [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];
      assert.match(protocolError(frame(MessageKind.Ack, [...v, ...v, ...v])).message, /beyond 2\^53/);
      assert.match(protocolError(frame(MessageKind.Changes, [0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 1])).message, /backwards range/);
      const offer = Buffer.from(encodeFrameBytes({ kind: MessageKind.Offer, sessionId: 's', vm: '6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b', addresses: [], snapshotVersion: 1, announcedEntries: null, resumeFrom: null, cutoverPath: 'hook' }));
      offer[offer.length - 1] = 9;
      assert.match(protocolError(offer).message, /cut-over path 9/);
    });

    it('throws nothing but PeerProtocolError for random bytes (fuzz)', () => {
      const rnd = xorshift(0x5eed);
      const seeds = sampleMessages().map((m) => encodeFrameBytes(m));
      for (let i = 0; i < 20_000; i++) {
        let input: Uint8Array;
        if (i % 2 === 0) {
          // Pure noise, with a plausible header half the time.
          const n = Math.floor(rnd() * 80);
          input = Uint8Array.from({ length: n }, () => Math.floor(rnd() * 256));
          if (n >= 5 && rnd() < 0.5) {
            Buffer.from(input.buffer).writeUInt32BE(n - 5, 0);
            input[4] = 1 + Math.floor(rnd() * 12);
          }
        } else {
          // A valid frame with a few bytes flipped.
          const s = Buffer.from(seeds[Math.floor(rnd() * seeds.length)]);
          for (let k = 0; k < 1 + Math.floor(rnd() * 3); k++) s[Math.floor(rnd() * s.length)] = Math.floor(rnd() * 256);
          input = s;
        }
        try {
          decodeFrame(input, 1 << 16);
        } catch (err) {
          if (!(err instanceof PeerProtocolError)) throw new Error(`input ${Buffer.from(input).toString('hex')} threw ${String(err)}`);
        }
      }
    });
  });

  describe('resume', () => {
    it('allows a resume while the source still holds every later change', () => {
      assert.equal(resumeProblem(50, 40, 90), null);
      assert.equal(resumeProblem(50, 50, 90), null);
    });
    it('explains why a resume is impossible', () => {
      assert.match(resumeProblem(30, 40, 90)!, /^cannot resume: the source no longer has tombstones up to version 40/);
      assert.match(resumeProblem(95, 0, 90)!, /^cannot resume: the destination claims version 95/);
    });
  });
});
